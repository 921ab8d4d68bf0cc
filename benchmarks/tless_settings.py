"""The original method at its author's own settings: 50 steps, 5 refinement iterations, CFG 4-5.5.

Notebook 04 studies ``tless`` at 20 steps and 3 iterations (the defaults of the seed's code),
which fits a notebook's time budget. The author reported his method at 50 steps with
5 iterations and stated limits: it works "up to CFG 5.5" on generated images and "4.5" on
real ones. This script measures exactly that setting, which takes minutes rather than seconds:

* inputs: the three sets of :mod:`cfginv_lite.evidence` (``real`` dataset digits, generated
  digits ``decoded`` through the clamp, the generated ``latent`` round trip), 100 images each;
* methods: naive inversion with the source label (the original's first step) and with the
  destination label; the original with ``tless`` 0.25, the same with ``tless`` rounded to a
  whole level (the network never saw fractional labels), and the same refinement with the
  destination label (no ``tless``); all with ``refine_iterations=5``;
* regeneration: DDIM on the inversion grid and K-LMS on its own grid (the author's sampler);
* statistics: median image RMSE, interquartile range, bootstrap 95% interval of the median,
  and per-image paired ratios against naive inversion with the source label.

Results are written to the JSON (atomically, by the shared harness :mod:`cfginv_lite.benchmark`)
after every (scale, method), so an interrupted run keeps what it finished and ``--resume`` skips
what is there. Files this script did not write are never replaced (``--force`` overrides).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/tless_settings.py                    # docs/tless_settings.{json,md}
    python benchmarks/tless_settings.py --quick --out-dir /tmp/ts             # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfginv_lite import load_model
from cfginv_lite.benchmark import (
    Results, add_output_arguments, command_line, environment, exit_on_output_error, text_render,
)
from cfginv_lite.evidence import CASES, digit_sets, evaluate_samplers, paired_ratio, spread
from cfginv_lite.ownership import first_line_is
from cfginv_lite.schedule import timestep_grid

WRITTEN_BY = "benchmarks/tless_settings.py"
HEADER = "# The original method at its author's settings (digits model)"
#: label -> (registry method, options); the original's variants all refine 5 times.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "naive, source label": ("naive", {}),
    "naive, destination label": ("naive-destination", {}),
    "original, tless 0.25": ("original", {"refine_iterations": 5}),
    "original, tless rounded to a whole level": ("original", {"refine_iterations": 5, "integer_labels": True}),
    "original, destination label (no tless)": ("original", {"refine_iterations": 5, "tless_factor": None}),
}
BASELINE = "naive, source label"
SAMPLERS = ("ddim", "lms")


def markdown(state: dict[str, Any]) -> str:
    """The table: one block per (scale, case), one row per method and sampler."""
    steps = state["rows"][0]["steps"]
    refined = sum(1 for i in range(steps) if i > steps * 0.7)    # the original's refine_skip = 0.7
    lines = [HEADER, "",
             "Written by `benchmarks/tless_settings.py`; the commands and environment are at the end. "
             "Image RMSE in [0, 1] pixels after regeneration, **median (interquartile range) [bootstrap "
             "95% interval of the median]** over the images of each set; *ratio* is the median per-image "
             "ratio to naive inversion with the source label under the same sampler, with its 95% interval "
             "(below 1: better). NFE: network evaluations per image for the inversion, the most any image "
             f"used (5 iterations on all {refined} refined steps would be {2 * steps + 10 * refined}: the original's "
             "`min_err < 5` threshold "
             "stops most refinements early).", ""]
    if steps == 50:
        lines += ["At 50 steps `t1 - t = 20`, so `tless = t - 5` is already a whole level and the rounded variant "
                  "repeats the original exactly; notebook 04 makes that control at 20 steps, where `tless` is "
                  "fractional.", ""]
    order = {lab: k for k, lab in enumerate(VARIANTS)}
    rows = sorted(state["rows"], key=lambda r: (r["cfg"], CASES.index(r["case"]), order[r["label"]],
                                                SAMPLERS.index(r["sampler"])))
    for cfg in sorted({r["cfg"] for r in rows}):
        for case in CASES:
            block = [r for r in rows if r["cfg"] == cfg and r["case"] == case]
            if not block:
                continue
            lines += [f"## CFG {cfg:g}, {case} ({block[0]['n']} images, {block[0]['steps']} steps)", "",
                      "| method | NFE | sampler | image RMSE median (IQR) [95% CI] | ratio to naive (source) [95% CI] |",
                      "|---|---|---|---|---|"]
            for r in block:
                lines.append(f"| {r['label']} | {r['nfe']} | {r['sampler']} | {r['median']:.4f} "
                             f"({r['q25']:.4f}-{r['q75']:.4f}) [{r['ci_low']:.4f}-{r['ci_high']:.4f}] | "
                             f"{r['ratio']:.3f} [{r['ratio_ci_low']:.3f}-{r['ratio_ci_high']:.3f}] |")
            lines.append("")
    lines += ["## Runs", ""] + [f"- `{run['command']}` ({run['env']}; {run['minutes']} min)" for run in state["runs"]]
    return "\n".join(lines) + "\n"


def measure(results: Results, model: Any, grid: list[int], cfg: float, label: str, sets: dict[str, Any]) -> None:
    """One method at one scale under both samplers: per-image errors, rows with ratios to naive; saved at once."""
    method, options = VARIANTS[label]
    state = results.state
    found = evaluate_samplers(model, sets, cfg, grid, method, samplers=SAMPLERS, **options)
    for sampler, by_case in found.items():
        for case, r in by_case.items():
            state["per_image"][f"{cfg}|{label}|{sampler}|{case}"] = r.image_rmse.tolist()
    rows, steps = [], len(grid) - 1                      # the grid has steps + 1 levels
    for sampler, by_case in found.items():
        for case, r in by_case.items():
            base = np.asarray(state["per_image"].get(f"{cfg}|{BASELINE}|{sampler}|{case}", r.image_rmse))
            s, ratio = spread(r.image_rmse), paired_ratio(r.image_rmse, base)
            rows.append({
                "cfg": cfg, "steps": steps, "case": case, "label": label, "sampler": sampler,
                "nfe": r.nfe, "n": s.n, "median": s.median, "q25": s.q25, "q75": s.q75,
                "ci_low": s.ci_low, "ci_high": s.ci_high, "ratio": ratio.median,
                "ratio_ci_low": ratio.ci_low, "ratio_ci_high": ratio.ci_high,
                "diverged": int(r.diverged.sum())})
    results.add(*rows)                                   # after every method: an interrupted run keeps it
    print(f"cfg {cfg:g} {label:>42}: NFE {found['ddim']['real'].nfe:>4}  " + "  ".join(
        f"{smp}/{case} {spread(r.image_rmse).median:.4f}" for smp, by_case in found.items()
        for case, r in by_case.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", type=float, default=[4.0, 4.5, 5.5], help="guidance scales (default 4 4.5 5.5)")
    p.add_argument("--steps", type=int, default=50, help="steps (default 50, the author's)")
    p.add_argument("--per-digit", type=int, default=10, help="images per digit per set (default 10: 100 per set)")
    add_output_arguments(p, "tless_settings.{md,json}")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, CFG 5.5, 6 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.cfg, args.steps, args.per_digit = [5.5], 6, 1
    if args.per_digit < 1 or args.steps < 2 or any(not 1 <= w < 100 for w in args.cfg):
        raise SystemExit("error: --per-digit must be >= 1, --steps >= 2 and --cfg in [1, 100)")
    out = Path(args.out_dir)
    with exit_on_output_error():
        results = Results(out / "tless_settings.json", script=WRITTEN_BY, fresh={"rows": [], "per_image": {}, "runs": []},
                          force=args.force, resume=args.resume, indent=None,
                          keys=lambda s: ((r["cfg"], r["label"]) for r in s["rows"]),
                          renders={out / "tless_settings.md": (first_line_is(HEADER), text_render(markdown))})
        run = {"command": command_line(WRITTEN_BY, argv), "env": environment()}
        model = load_model("digits")
        grid = timestep_grid(args.steps)
        start = time.perf_counter()
        for cfg in args.cfg:
            sets = None
            for label in VARIANTS:
                if not results.done((cfg, label)):
                    sets = sets or digit_sets(model, cfg, grid, per_digit=args.per_digit, seed=0)
                    measure(results, model, grid, cfg, label, sets)
        wall = time.perf_counter() - start
        results.finish({**run, "minutes": round(wall / 60, 1)})
    print(f"wrote {out / 'tless_settings.md'} and {results.path} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
