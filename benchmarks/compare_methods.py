"""Compare every inversion method on the digits model over guidance scales and step counts.

For each (steps, CFG) one seeded set of generated digits (one per digit, seed 0) is generated
once and reused by every method; each method then inverts the 10 generated and 10 real
dataset digits (``real_digits(labels, seed=0)``) in ONE batched ``reconstruct`` call (the
cost of a call barely depends on the batch), and the metrics are split per set afterwards.

Also: a sweep of the ``tless`` factor of method ``original`` at CFG 5 and 7.5 (20 steps),
regenerated with DDIM and with K-LMS, and an error-vs-NFE Pareto front at CFG 7.5, 20 steps.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/compare_methods.py                  # full, writes docs/compare_methods.*
    python benchmarks/compare_methods.py --quick --out-md /tmp/q.md --out-png /tmp/q.png   # smoke test
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cfginv_lite import load_model
from cfginv_lite.compensate import Stop
from cfginv_lite.data import load_digit_images, real_digits
from cfginv_lite.experiment import digit_prompts, generate, reconstruct
from cfginv_lite.metrics import is_collapsed, rmse
from cfginv_lite.presentation import format_table
from cfginv_lite.schedule import timestep_grid

# label -> (registry name, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "naive": ("naive", {}),
    "naive-destination": ("naive-destination", {}),
    "original": ("original", {}),
    "original-showcase": ("original-showcase", {}),
    "original-no-tless": ("original-no-tless", {}),
    "fixed-point": ("fixed-point", {}),
    "fixed-point-damped": ("fixed-point-damped", {}),
    "anderson": ("anderson", {}),
    "negative-prompt": ("negative-prompt", {}),
    "null-text": ("null-text", {}),
    "null-text (lr 0.05)": ("null-text", {"lr": 0.05}),
}
QUICK_METHODS = ("naive", "original", "fixed-point", "anderson", "negative-prompt")
CFGS, STEPS, QUICK_CFGS, QUICK_STEPS = (1.0, 3.0, 5.0, 7.5, 10.0), (20, 50), (1.0, 7.5), (20,)
TLESS = (-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, None)
MAIN_COLUMNS = ("set", "cfg", "steps", "method", "nfe", "nfe_bwd", "image_rmse", "psnr_db", "latent_rmse",
                "step_residual", "diverged", "grey", "seconds")
SWEEP_COLUMNS = ("set", "cfg", "tless", "latent_rmse", "rmse_ddim", "psnr_ddim", "grey_ddim", "rmse_lms",
                 "psnr_lms", "grey_lms")


class StepLog(list):
    """Callback that keeps every per-step info dict of a solver."""

    def __call__(self, info: dict[str, Any]) -> None:
        self.append(info)


def solver_stats(log: StepLog, sl: slice) -> tuple[float | None, int | None, int | None]:
    """(mean final per-step residual, diverged image-steps, max per-image NFE) of images ``sl``.

    Only for the iterative solvers (their infos carry a ``stopped`` tensor); skipped steps
    are left out; where the returned iterate was never evaluated (NaN) the last evaluated
    residual of that image at that step stands in for it.
    """
    infos = [i for i in log if isinstance(i.get("stopped"), torch.Tensor)]
    if not infos:
        return None, None, None
    values, diverged = [], 0
    for info in infos:
        res = info["residual"][sl].clone()
        hist = info["residuals"][:, sl]
        stopped = info["stopped"][sl]
        diverged += int((stopped == Stop.DIVERGED).sum())
        for b in range(res.numel()):
            if stopped[b] == Stop.SKIPPED:
                continue
            if math.isnan(res[b]):
                col = hist[:, b][~torch.isnan(hist[:, b])] if hist.numel() else hist[:, b]
                if col.numel() == 0:
                    continue
                res[b] = col[-1]
            values.append(float(res[b]))
    mean = sum(values) / len(values) if values else None
    return mean, diverged, int(infos[-1]["nfe"][sl].max())


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not dominated in (nfe + nfe_bwd, image_rmse), cheapest first."""
    cost = lambda r: r["nfe"] + r["nfe_bwd"]  # noqa: E731
    front = [r for r in rows if not any(cost(o) <= cost(r) and o["image_rmse"] <= r["image_rmse"]
                                        and (cost(o), o["image_rmse"]) != (cost(r), r["image_rmse"]) for o in rows)]
    return sorted(front, key=cost)


def run_main(model, cfgs, steps_list, methods, real, ref_std, skip50, bar) -> list[dict[str, Any]]:
    prompts, labels = digit_prompts(1)
    n = len(prompts)
    reals = real_digits(labels, size=model.latent_shape[-1], seed=0).to(model.device) if real else None
    rows = []
    for steps in steps_list:
        grid = timestep_grid(steps, "linspace", model.scheduler_config)
        for scale in cfgs:
            gen = generate(model, prompts, scale, grid, seed=0)
            images = torch.cat([gen.images, reals]) if real else gen.images
            for label in methods:
                if steps == 50 and label in skip50:
                    continue
                name, options = VARIANTS[label]
                log = StepLog()
                rec = reconstruct(model, images, prompts * (2 if real else 1), scale, grid, method=name,
                                  callback=log, **options)
                grey = is_collapsed(rec.regenerated, ref_std)
                for set_name, sl in [("generated", slice(0, n))] + ([("real", slice(n, 2 * n))] if real else []):
                    res, div, nfe = solver_stats(log, sl)
                    rows.append({
                        "set": set_name, "cfg": scale, "steps": steps, "method": label,
                        "nfe": rec.nfe if nfe is None else nfe, "nfe_bwd": rec.nfe_backward,
                        "image_rmse": float(rec.image_rmse[sl].mean()), "psnr_db": float(rec.psnr[sl].mean()),
                        "latent_rmse": float(rmse(rec.inverted[sl], gen.noise).mean()) if set_name == "generated"
                        else None,
                        "step_residual": res, "diverged": div, "grey": int(grey[sl].sum()), "seconds": rec.seconds,
                    })
                bar.update()
    return rows


def run_sweep(model, cfgs, factors, real, ref_std, bar) -> list[dict[str, Any]]:
    prompts, labels = digit_prompts(1)
    n = len(prompts)
    grid = timestep_grid(20, "linspace", model.scheduler_config)
    reals = real_digits(labels, size=model.latent_shape[-1], seed=0).to(model.device) if real else None
    rows = []
    for scale in cfgs:
        gen = generate(model, prompts, scale, grid, seed=0)
        images = torch.cat([gen.images, reals]) if real else gen.images
        for f in factors:
            recs = {s: reconstruct(model, images, prompts * (2 if real else 1), scale, grid, method="original",
                                   sampler=s, tless_factor=f) for s in ("ddim", "lms")}
            for set_name, sl in [("generated", slice(0, n))] + ([("real", slice(n, 2 * n))] if real else []):
                row = {"set": set_name, "cfg": scale, "tless": "destination" if f is None else f,
                       "latent_rmse": float(rmse(recs["ddim"].inverted[sl], gen.noise).mean())
                       if set_name == "generated" else None}
                for s, rec in recs.items():
                    row.update({f"rmse_{s}": float(rec.image_rmse[sl].mean()), f"psnr_{s}": float(rec.psnr[sl].mean()),
                                f"grey_{s}": int(is_collapsed(rec.regenerated, ref_std)[sl].sum())})
                rows.append(row)
            bar.update()
    return rows


def plot(rows: list[dict[str, Any]], path: str, front_cfg: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    gen = [r for r in rows if r["set"] == "generated" and r["steps"] == 20]
    methods = list(dict.fromkeys(r["method"] for r in gen))
    style = {m: dict(color=plt.get_cmap("tab10")(k % 10), marker="os^vDPX*h<>"[k % 11], ls="-" if k < 10 else "--")
             for k, m in enumerate(methods)}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110)
    for m in methods:
        pts = sorted((r["cfg"], r["image_rmse"]) for r in gen if r["method"] == m)
        a1.plot(*zip(*pts), ms=5, label=m, **style[m])
    a1.set(xlabel="classifier-free guidance scale w", ylabel="image RMSE after regeneration ([0, 1] px)",
           yscale="log", title="Generated digits, 20 steps: error vs guidance")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=7, ncol=2)
    pts = [r for r in gen if r["cfg"] == front_cfg]
    front = pareto(pts)
    for k, r in enumerate(sorted(pts, key=lambda r: r["image_rmse"])):
        x, st = r["nfe"] + r["nfe_bwd"], style[r["method"]]
        a2.scatter(x, r["image_rmse"], color=st["color"], marker=st["marker"], s=45, zorder=3,
                   edgecolor="black" if r in front else "none")
        a2.annotate(r["method"], (x, r["image_rmse"]), fontsize=7, xytext=(5, 3 if k % 2 else -9),
                    textcoords="offset points")
    if front:
        a2.plot([r["nfe"] + r["nfe_bwd"] for r in front], [r["image_rmse"] for r in front], "k--", lw=0.8,
                label="Pareto front (black edge)")
        a2.legend(fontsize=7)
    a2.set(xscale="log", yscale="log", xlabel="network evaluations per image (forward + backward)",
           ylabel="image RMSE ([0, 1] px)", title=f"Generated digits, CFG {front_cfg:g}, 20 steps: error vs cost")
    a2.set_xticks([t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                   if 0.8 * min(r["nfe"] for r in pts) <= t <= 1.25 * max(r["nfe"] + r["nfe_bwd"] for r in pts)])
    a2.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    a2.xaxis.set_minor_formatter(NullFormatter())
    for ax in (a1, a2):
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        lo, hi = ax.get_ylim()  # label minor ticks only when the axis spans less than ~1.5 decades
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if hi / lo < 30 else NullFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
    a2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CFG {1, 7.5}, 20 steps, 5 methods, small sweep")
    p.add_argument("--methods", nargs="+", choices=list(VARIANTS), help="method labels (default: all)")
    p.add_argument("--out-md", default="docs/compare_methods.md")
    p.add_argument("--out-png", default="docs/compare_methods.png")
    p.add_argument("--out-json", help="also dump the raw rows (main and sweep) as JSON")
    p.add_argument("--no-real", action="store_true", help="skip the real dataset digits")
    p.add_argument("--no-sweep", action="store_true", help="skip the tless sweep")
    p.add_argument("--skip-50", nargs="*", default=[], metavar="METHOD",
                   help="methods run at 20 steps only (to fit the time budget)")
    args = p.parse_args(argv)
    command = shlex.join(["python", *(sys.argv if argv is None else ["benchmarks/compare_methods.py", *argv])])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    cfgs, steps_list = (QUICK_CFGS, QUICK_STEPS) if args.quick else (CFGS, STEPS)
    methods = args.methods or (QUICK_METHODS if args.quick else tuple(VARIANTS))
    sweep_cfgs, factors = ((7.5,), (0.25, None)) if args.quick else ((5.0, 7.5), TLESS)
    front_cfg = 7.5

    start = time.perf_counter()
    model = load_model("digits")
    ref_std = float(load_digit_images(model.latent_shape[-1])[0].flatten(1).std(dim=1, unbiased=False).median())
    n_main = sum(1 for s in steps_list for _ in cfgs for m in methods if not (s == 50 and m in args.skip_50))
    n_sweep = 0 if args.no_sweep else len(sweep_cfgs) * len(factors)
    bar = tqdm(total=n_main + n_sweep, desc="compare_methods", file=sys.stderr)
    rows = run_main(model, cfgs, steps_list, methods, not args.no_real, ref_std, set(args.skip_50), bar)
    sweep = [] if args.no_sweep else run_sweep(model, sweep_cfgs, factors, not args.no_real, ref_std, bar)
    bar.close()
    wall = time.perf_counter() - start

    if args.out_json:
        import json

        Path(args.out_json).write_text(json.dumps({"rows": rows, "sweep": sweep, "wall_s": wall}, indent=1))
    import diffusers

    out = [
        "# Inversion methods compared (digits model)",
        "",
        f"Generated by `benchmarks/compare_methods.py` on {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}:",
        "",
        f"```bash\n{command}\n```",
        "",
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} CPU, nproc {os.cpu_count()}; wall time {wall / 60:.1f} min (shared, loaded machine).",
        "",
        "Sets: `generated` = 10 digits (one per digit, seed 0) generated by DDIM at the row's CFG and steps "
        "(the same set for every method); `real` = 10 dataset digits, `real_digits(labels, seed=0)`. "
        "Both sets are inverted in one batched `reconstruct` call per (cfg, steps, method) and regenerated "
        "with DDIM on the inversion grid; metrics are split per set afterwards.",
        "",
        "Columns: `nfe`/`nfe_bwd` forward/backward network evaluations per image (a guided call = 2 NFE; "
        "max over the set's images for the iterative solvers, max over the 20-image batch otherwise); "
        "`image_rmse` ([0, 1] pixel units) and `psnr_db` of the regeneration vs the input; `latent_rmse` of the "
        "inverted noise vs the true starting noise (generated only); `step_residual`: iterative solvers only, "
        "mean over refined steps and images of the final per-step residual (mean |z - F(z1)| per element; where "
        "the returned iterate was never evaluated, the last evaluated one); `diverged`: image-steps stopped as "
        "`diverged`; `grey`: regenerations flagged by `is_collapsed(regenerated, ref_std)` with "
        f"ref_std = {ref_std:.4f}, the median per-image std of the dataset; `seconds`: inversion time of the "
        "whole 20-image batch (shared by both rows).",
        "",
    ]
    if args.skip_50:
        out += [f"**Not run at 50 steps** (time budget): {', '.join(args.skip_50)}.", ""]
    out += ["## Main table", "", format_table(rows, markdown=True, columns=MAIN_COLUMNS), ""]
    out += [f"## Error vs NFE front (CFG {front_cfg:g}, 20 steps)", "",
            "Pareto-optimal methods in (cost = nfe + nfe_bwd, image RMSE): no other method is both cheaper "
            "and more accurate.", ""]
    for set_name in ("generated", "real"):
        pts = [r for r in rows if r["set"] == set_name and r["cfg"] == front_cfg and r["steps"] == 20]
        if not pts:
            continue
        naive = next((r for r in pts if r["method"] == "naive"), None)
        out += [f"**{set_name}**:", ""]
        for r in pareto(pts):
            ratio = f"; {naive['image_rmse'] / r['image_rmse']:.1f}x lower error than naive at " \
                    f"{(r['nfe'] + r['nfe_bwd']) / (naive['nfe'] + naive['nfe_bwd']):.1f}x its cost" if naive else ""
            out.append(f"- {r['method']}: cost {r['nfe'] + r['nfe_bwd']}, image RMSE {r['image_rmse']:.4f}{ratio}")
        out.append("")
    if sweep:
        out += ["## tless sweep (method `original`, 20 steps)", "",
                "`tless_factor` of `invert_original` (`tless = t - (t1 - t) * factor` labels the unconditional "
                "branch of the refinement); `destination` = `tless_factor=None` (both branches at `t1`). Each "
                "inversion regenerated with DDIM (`_ddim`) and with K-LMS (`sampler=\"lms\"`, `_lms`).", "",
                format_table(sweep, markdown=True, columns=SWEEP_COLUMNS), ""]
    if args.out_png:
        plot(rows, args.out_png, front_cfg)
        out += [f"![error vs CFG and vs NFE]({os.path.relpath(args.out_png, Path(args.out_md).parent)})", ""]
    Path(args.out_md).write_text("\n".join(out))
    print(format_table(rows, columns=MAIN_COLUMNS))
    if sweep:
        print(format_table(sweep, columns=SWEEP_COLUMNS))
    print(f"wrote {args.out_md}, {args.out_png} in {wall / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
