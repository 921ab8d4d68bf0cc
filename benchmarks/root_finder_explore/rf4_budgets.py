import time, torch, numpy as np
from functools import partial
from cfginv_lite import load_model, timestep_grid
from cfginv_lite.evidence import digit_sets, evaluate, spread, median_ratio
from cfginv_lite.methods import run_solver
from _solvers import invert_focused
from _solvers import invert_anderson
m = load_model("digits"); grid = timestep_grid(20)
sets = digit_sets(m, 7.5, grid, cases=("real",))
base = evaluate(m, sets, 7.5, grid, "naive-destination")["real"].image_rmse
configs = {
 "and2-all": partial(run_solver, invert_anderson, iterations=2),
 "e5(0,149)+2": partial(run_solver, invert_focused, iterations=5, levels=(0, 149), other_iterations=2, warm_start=False),
 "e6(0,249)+2": partial(run_solver, invert_focused, iterations=6, levels=(0, 249), other_iterations=2, warm_start=False),
 "e6(0,249)+2ws": partial(run_solver, invert_focused, iterations=6, levels=(0, 249), other_iterations=2, warm_start=True),
 "e4(0,349)+2": partial(run_solver, invert_focused, iterations=4, levels=(0, 349), other_iterations=2, warm_start=False),
}
for name, fn in configs.items():
    t = time.time()
    r = evaluate(m, sets, 7.5, grid, (name, fn))["real"]
    s = spread(r.image_rmse); q = median_ratio(base, r.image_rmse)
    print(f"{name:>18} NFE {r.nfe:4d} median {s.median:.4f} IQR {s.q25:.4f}-{s.q75:.4f} ratio {q.median:.2f} ({q.ci_low:.2f}-{q.ci_high:.2f}) {time.time()-t:.0f}s", flush=True)
