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
logs = []
r = evaluate(m, sets, 7.5, grid, ("and8-all", partial(run_solver, invert_anderson, iterations=8)),
             callback=logs.append)["real"]
for d in logs:
    res = d["residuals"]; first = res[0]; best = torch.where(torch.isnan(res), torch.inf, res).min(0).values
    print(f"step {d['t_from']:>3}->{d['t_to']:>3}: residual it1 {first.median():.2e} best {best.median():.2e} (90% {best.quantile(0.9):.2e}) diverged {(d['stopped']==2).sum().item()}", flush=True)
configs = {
 "foc4-(0,699)-ws": partial(run_solver, invert_focused, iterations=4, levels=(0, 699), other_iterations=0, warm_start=True),
 "foc4-(0,699)-nows": partial(run_solver, invert_focused, iterations=4, levels=(0, 699), other_iterations=0, warm_start=False),
 "foc5-(0,599)-nows": partial(run_solver, invert_focused, iterations=5, levels=(0, 599), other_iterations=0, warm_start=False),
 "foc4-(0,699)+1": partial(run_solver, invert_focused, iterations=4, levels=(0, 699), other_iterations=1, warm_start=False),
 "and3-tol": partial(run_solver, invert_anderson, iterations=3, tol=1e-3),
 "and3-m2": partial(run_solver, invert_anderson, iterations=3, window=2),
 "foc8-(0,49)+3": partial(run_solver, invert_focused, iterations=8, levels=(0, 49), other_iterations=3, warm_start=False),
}
for name, fn in configs.items():
    t = time.time()
    r = evaluate(m, sets, 7.5, grid, (name, fn))["real"]
    s = spread(r.image_rmse); q = median_ratio(base, r.image_rmse)
    print(f"{name:>18} NFE {r.nfe:4d} median {s.median:.4f} IQR {s.q25:.4f}-{s.q75:.4f} ratio {q.median:.2f} ({q.ci_low:.2f}-{q.ci_high:.2f}) {time.time()-t:.0f}s", flush=True)
