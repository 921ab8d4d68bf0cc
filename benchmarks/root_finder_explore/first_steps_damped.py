import time, torch, numpy as np
from cfginv_lite import load_model, timestep_grid, make_guidance, sample_ddim, move, guided_noise
from cfginv_lite.evidence import digit_sets, evaluate, spread, median_ratio
from _solvers import invert_anderson
from cfginv_lite.fixed_point import invert_fixed_point
from cfginv_lite.metrics import image_rmse
m = load_model("digits"); grid = timestep_grid(20); W = 7.5
real = digit_sets(m, W, grid, cases=("real",))["real"]
g = make_guidance(m, real.prompts, W); z0 = real.latents; ab = m.alphas_cumprod
base = evaluate(m, {"real": real}, W, grid, "naive-destination")["real"].image_rmse
def res(x, t, t1, z):
    e = guided_noise(m, x, t1, t1, g).guided
    return (move(x, e, float(ab[t1]), float(ab[t]))-z).abs().flatten(1).mean(1)
def run(name, first, k, rest_its):
    t0 = time.time(); z = z0; nfe = 0
    for i in range(k):
        solver, kw = first
        zn = solver(m, z, grid[i:i+2], g, progress=False, **kw)
        r = res(zn, grid[i], grid[i+1], z)
        nfe += 2 + 2 * kw["iterations"]
        print(f"   step {grid[i]}->{grid[i+1]} residual median {r.median():.2e} 90% {r.quantile(0.9):.2e}", flush=True)
        z = zn
    zT = invert_anderson(m, z, grid[k:], g, iterations=rest_its, progress=False)
    nfe += (len(grid) - 1 - k) * (2 + 2 * rest_its)
    e = image_rmse(m.decode(sample_ddim(m, zT, grid, g, progress=False)), real.images).numpy()
    s = spread(e); q = median_ratio(base, e)
    print(f"{name:>28} NFE {nfe} median {s.median:.4f} IQR {s.q25:.4f}-{s.q75:.4f} ratio {q.median:.2f} ({q.ci_low:.2f}-{q.ci_high:.2f}) {time.time()-t0:.0f}s", flush=True)
run("and d0.5 x12 first2 + and2", (invert_anderson, dict(iterations=12, damping=0.5)), 2, 2)
run("and d0.3 x12 first2 + and2", (invert_anderson, dict(iterations=12, damping=0.3)), 2, 2)
run("fp d0.5 x12 first2 + and2", (invert_fixed_point, dict(budget=12, damping=0.5)), 2, 2)
run("and d1 x12 first2 + and2", (invert_anderson, dict(iterations=12, damping=1.0)), 2, 2)
run("and d0.5 x12 first2 nodiv + and2", (invert_anderson, dict(iterations=12, damping=0.5, divergence_factor=None)), 2, 2)
