"""Command line: ``python -m cfginv_lite compare ...``.

Generates a fixed, seeded set of images per prompt at each guidance scale, inverts them
with each requested method at the same scale, regenerates them, and prints a table of
reconstruction errors and costs. Progress bars go to stderr, the table to stdout.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .schedule import SPACINGS, timestep_grid

COLUMNS = ("set", "cfg", "steps", "method", "nfe", "nfe_bwd", "latent_rmse", "image_rmse", "psnr_db", "seconds")


def _methods() -> dict[str, Any]:
    from .methods import METHODS

    return METHODS


def compare(model_name: str = "digits", cfgs: Sequence[float] = (1, 3, 5, 7.5), steps_list: Sequence[int] = (20, 50),
            methods: Sequence[str] = ("naive",), images_per_digit: int = 2, seed: int = 0,
            spacing: str = "linspace", sampler: str = "ddim", real: bool = False,
            progress: bool = True, device: str | None = None) -> list[dict[str, Any]]:
    """Run the comparison and return one row (dict) per (set, cfg, steps, method)."""
    from . import load_model
    from .data import real_digits
    from .experiment import digit_prompts, generate, reconstruct

    if model_name != "digits":
        raise ValueError("compare generates prompts for the digits model; use the Python API for Stable Diffusion")
    unknown = [m for m in methods if m not in _methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(_methods())}")
    model = load_model(model_name, **({"device": device} if device else {}))
    prompts, labels = digit_prompts(images_per_digit)
    rows: list[dict[str, Any]] = []
    jobs = [(s, w, m) for s in steps_list for w in cfgs for m in methods]
    bar = tqdm(total=len(jobs) * (2 if real else 1), desc="compare", disable=not progress, file=sys.stderr)
    for steps in steps_list:
        grid = timestep_grid(steps, spacing, model.scheduler_config)
        real_images = real_digits(labels, size=model.latent_shape[-1], seed=seed).to(model.device) if real else None
        for scale in cfgs:
            gen = generate(model, prompts, scale, grid, seed=seed)
            for method in methods:
                sets = [("generated", gen.images, gen.noise)] + ([("real", real_images, None)] if real else [])
                for name, images, noise in sets:
                    rec = reconstruct(model, images, prompts, scale, grid, method=method, true_noise=noise,
                                      sampler=sampler)
                    s = rec.summary()
                    rows.append({"set": name, "cfg": scale, "steps": steps, "method": method, "nfe": s["nfe"],
                                 "nfe_bwd": s["nfe_backward"], "latent_rmse": s["latent_rmse"],
                                 "image_rmse": s["image_rmse"], "psnr_db": s["psnr"], "seconds": s["seconds"]})
                    bar.update()
    bar.close()
    return rows


def format_table(rows: list[dict[str, Any]], markdown: bool = False, columns: Sequence[str] = COLUMNS) -> str:
    """Fixed-width (or Markdown) table of :func:`compare` rows (or any rows with ``columns``), numbers rounded."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
        if isinstance(v, tuple):  # (cfg,) marker: print guidance compactly
            return f"{v[0]:g}"
        return str(v)

    body = [[cell((r[c],) if c == "cfg" else r[c]) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*columns)] + [fmt.format(*b) for b in body])


def plot_rows(rows: list[dict[str, Any]], path: str) -> None:
    """Reconstruction error (image RMSE) vs guidance scale, one line per (set, method, steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    keys = sorted({(r["set"], r["method"], r["steps"]) for r in rows})
    for key in keys:
        pts = sorted((r["cfg"], r["image_rmse"]) for r in rows if (r["set"], r["method"], r["steps"]) == key)
        ax.plot(*zip(*pts), marker="o", label=f"{key[0]}, {key[1]}, {key[2]} steps")
    ax.set_xlabel("classifier-free guidance scale w")
    ax.set_ylabel("image RMSE after regeneration ([0, 1] pixel units)")
    ax.set_yscale("log")
    ax.set_title("Reconstruction error vs guidance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="invert and regenerate a seeded set; print a table")
    p.add_argument("--model", default="digits", help="model name (digits)")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.5], help="guidance scales")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="numbers of DDIM steps")
    p.add_argument("--methods", nargs="+", default=["naive"], help=f"inversion methods: {', '.join(sorted(_methods()))}")
    p.add_argument("--images-per-digit", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="timestep grid")
    p.add_argument("--sampler", choices=("ddim", "lms"), default="ddim", help="regeneration sampler")
    p.add_argument("--real", action="store_true", help="also invert real dataset digits")
    p.add_argument("--plot", metavar="FILE.png", help="save the error-vs-CFG figure")
    p.add_argument("--markdown", metavar="FILE.md", help="also write the table as Markdown")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = compare(args.model, args.cfg, args.steps, args.methods, args.images_per_digit, args.seed,
                       args.spacing, args.sampler, args.real, progress=not args.no_progress, device=args.device)
    except ValueError as exc:
        parser.error(str(exc))
    print(format_table(rows))
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(format_table(rows, markdown=True) + "\n")
    if args.plot:
        plot_rows(rows, args.plot)
        print(f"saved {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
