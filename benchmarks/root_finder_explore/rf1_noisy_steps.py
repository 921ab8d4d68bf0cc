import sys, time, torch, numpy as np
from cfginv_lite import load_model, timestep_grid
from cfginv_lite.evidence import digit_sets, evaluate, spread, median_ratio
from cfginv_lite.methods import run_solver
from _solvers import invert_focused
from _solvers import invert_anderson
from functools import partial
m = load_model("digits"); grid = timestep_grid(20)
sets = digit_sets(m, 7.5, grid, cases=("real",))
base = evaluate(m, sets, 7.5, grid, "naive-destination")["real"].image_rmse
print("naive-dest", np.median(base), flush=True)
configs = {
 "and8-all": partial(run_solver, invert_anderson, iterations=8),
 "and3-all": partial(run_solver, invert_anderson, iterations=3),
}
for its in (4, 6, 8, 10):
    for ws in (True, False):
        configs[f"foc{its}-ws{int(ws)}"] = partial(run_solver, invert_focused, iterations=its, warm_start=ws)
for lo in (500, 600):
    configs[f"foc6-lo{lo}"] = partial(run_solver, invert_focused, iterations=6, levels=(lo, 950))
configs["foc8-o1"] = partial(run_solver, invert_focused, iterations=8, other_iterations=1)
configs["foc3-all-ws"] = partial(run_solver, invert_focused, iterations=3, levels=(0, 1000))
configs["foc10-first"] = partial(run_solver, invert_focused, iterations=10, levels=(0, 49), other_iterations=0)
configs["foc8-upper+first"] = partial(run_solver, invert_focused, iterations=8, levels=(700,950), other_iterations=0)
for name, fn in configs.items():
    t = time.time()
    r = evaluate(m, sets, 7.5, grid, (name, fn))["real"]
    s = spread(r.image_rmse); q = median_ratio(base, r.image_rmse)
    print(f"{name:>18} NFE {r.nfe:4d} median {s.median:.4f} IQR {s.q25:.4f}-{s.q75:.4f} ratio {q.median:.2f} ({q.ci_low:.2f}-{q.ci_high:.2f}) {time.time()-t:.0f}s", flush=True)
