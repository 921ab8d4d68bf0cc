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

from .presentation import COLUMNS, format_table, plot_rows  # noqa: F401  (format_table: old import path)
from .schedule import SPACINGS, timestep_grid


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
