import time, torch, numpy as np
from cfginv_lite import load_model, timestep_grid, make_guidance, sample_ddim, move, guided_noise
from cfginv_lite.evidence import digit_sets, evaluate, spread, median_ratio
from _solvers import invert_anderson
from cfginv_lite.metrics import image_rmse
m = load_model("digits"); grid = timestep_grid(20); W = 7.5
real = digit_sets(m, W, grid, cases=("real",))["real"]
g = make_guidance(m, real.prompts, W); z0 = real.latents; ab = m.alphas_cumprod
base = evaluate(m, {"real": real}, W, grid, "naive-destination")["real"].image_rmse
def resid(x, t, t1, z):
    e = guided_noise(m, x, t1, t1, g).guided
    return move(x, e, float(ab[t1]), float(ab[t]))-z
def polish(z, t, t1, x, iters, lr):
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr); sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    for _ in range(iters):
        opt.zero_grad(); l = (resid(x, t, t1, z)**2).sum(); l.backward(); opt.step(); sch.step()
    return x.detach()
def run(name, k, init_its, iters, lr, rest):
    t0 = time.time(); z = z0; nfe = bwd = 0
    for i in range(k):
        t, t1 = grid[i], grid[i+1]
        x = invert_anderson(m, z, [t, t1], g, iterations=init_its, progress=False)
        xp = polish(z, t, t1, x, iters, lr)
        ra = resid(x, t, t1, z).abs().flatten(1).mean(1); rp = resid(xp, t, t1, z).abs().flatten(1).mean(1)
        x = torch.where((rp < ra).view(-1,1,1,1), xp, x)
        nfe += 2 + 2*init_its + 2*iters + 2; bwd += 2*iters
        print(f"   step {t}->{t1}: residual {torch.minimum(ra, rp).median():.2e}", flush=True)
        z = x
    zT = invert_anderson(m, z, grid[k:], g, iterations=rest, progress=False)
    nfe += (len(grid)-1-k)*(2+2*rest)
    e = image_rmse(m.decode(sample_ddim(m, zT, grid, g, progress=False)), real.images).numpy()
    s = spread(e); q = median_ratio(base, e)
    print(f"{name:>30} NFE {nfe} bwd {bwd} median {s.median:.4f} IQR {s.q25:.4f}-{s.q75:.4f} ratio {q.median:.2f} ({q.ci_low:.2f}-{q.ci_high:.2f}) {time.time()-t0:.0f}s", flush=True)
run("adam30 first1 + and3", 1, 4, 30, 1e-2, 3)
run("adam30 first2 + and2", 2, 4, 30, 1e-2, 2)
run("adam60 first1 + and8", 1, 4, 60, 1e-2, 8)
