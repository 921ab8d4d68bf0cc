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

Results are written to the JSON after every (scale, method), so an interrupted run keeps what it
finished and ``--resume`` skips what is there. Files this script did not write are never replaced
(``--force`` overrides).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/tless_settings.py                    # docs/tless_settings.{json,md}
    python benchmarks/tless_settings.py --quick --out-dir /tmp/ts             # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfginv_lite import load_model
from cfginv_lite.evidence import CASES, digit_sets, evaluate_samplers, paired_ratio, spread
from cfginv_lite.schedule import timestep_grid

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


def _check_output(path: Path, force: bool, ours: bool) -> None:
    """Refuse to replace a file this script did not write, unless ``force``."""
    if path.is_dir():
        raise SystemExit(f"error: output {path} is a directory")
    if not path.parent.is_dir():
        raise SystemExit(f"error: output folder {path.parent} does not exist")
    if path.exists() and not (force or ours):
        raise SystemExit(f"error: {path} exists and was not written by this script; pass --force to replace it")


def _is_ours_md(path: Path) -> bool:
    if not path.exists():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\n") == HEADER


def _is_ours_json(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("written_by") == "benchmarks/tless_settings.py"
    except (ValueError, AttributeError):
        return False


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
    rows = state["rows"]
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", type=float, default=[4.0, 4.5, 5.5], help="guidance scales (default 4 4.5 5.5)")
    p.add_argument("--steps", type=int, default=50, help="steps (default 50, the author's)")
    p.add_argument("--per-digit", type=int, default=10, help="images per digit per set (default 10: 100 per set)")
    p.add_argument("--out-dir", default="docs", help="folder for tless_settings.{md,json} (default docs)")
    p.add_argument("--resume", action="store_true", help="keep the results already in the JSON and run the rest")
    p.add_argument("--force", action="store_true", help="replace output files this script did not write")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, CFG 5.5, 6 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.cfg, args.steps, args.per_digit = [5.5], 6, 1
    if args.per_digit < 1 or args.steps < 2 or any(not 1 <= w < 100 for w in args.cfg):
        raise SystemExit("error: --per-digit must be >= 1, --steps >= 2 and --cfg in [1, 100)")
    out = Path(args.out_dir)
    md, js = out / "tless_settings.md", out / "tless_settings.json"
    _check_output(md, args.force, _is_ours_md(md))
    _check_output(js, args.force, _is_ours_json(js))
    if js.exists() and not args.resume and not args.force:
        raise SystemExit(f"error: {js} holds earlier results; pass --resume to continue them or --force to start over")

    command = shlex.join(["python", *(sys.argv if argv is None else ["benchmarks/tless_settings.py", *argv])])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    env = (f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()} CPU, "
           f"nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    state: dict[str, Any] = {"written_by": "benchmarks/tless_settings.py", "rows": [], "per_image": {}, "runs": []}
    if args.resume and js.exists():
        state = json.loads(js.read_text())
    done = {(r["cfg"], r["label"]) for r in state["rows"]}

    model = load_model("digits")
    grid = timestep_grid(args.steps)
    start = time.perf_counter()
    for cfg in args.cfg:
        sets = None
        for label, (method, options) in VARIANTS.items():
            if (cfg, label) in done:
                continue
            sets = sets or digit_sets(model, cfg, grid, per_digit=args.per_digit, seed=0)
            results = evaluate_samplers(model, sets, cfg, grid, method, samplers=SAMPLERS, **options)
            for sampler, by_case in results.items():
                for case, r in by_case.items():
                    state["per_image"][f"{cfg}|{label}|{sampler}|{case}"] = r.image_rmse.tolist()
            for sampler, by_case in results.items():
                for case, r in by_case.items():
                    base = np.asarray(state["per_image"].get(f"{cfg}|{BASELINE}|{sampler}|{case}", r.image_rmse))
                    s, ratio = spread(r.image_rmse), paired_ratio(r.image_rmse, base)
                    state["rows"].append({
                        "cfg": cfg, "steps": args.steps, "case": case, "label": label, "sampler": sampler,
                        "nfe": r.nfe, "n": s.n, "median": s.median, "q25": s.q25, "q75": s.q75,
                        "ci_low": s.ci_low, "ci_high": s.ci_high, "ratio": ratio.median,
                        "ratio_ci_low": ratio.ci_low, "ratio_ci_high": ratio.ci_high,
                        "diverged": int(r.diverged.sum())})
            js.write_text(json.dumps(state))          # after every method: an interrupted run keeps it
            print(f"cfg {cfg:g} {label:>42}: NFE {results['ddim']['real'].nfe:>4}  " + "  ".join(
                f"{smp}/{case} {spread(r.image_rmse).median:.4f}" for smp, by_case in results.items()
                for case, r in by_case.items()), flush=True)
    wall = time.perf_counter() - start
    if len(state["rows"]) > len(done) * len(SAMPLERS) * len(CASES):     # something new was measured
        state["runs"].append({"command": command, "env": env, "minutes": round(wall / 60, 1)})
    js.write_text(json.dumps(state))
    order = {lab: k for k, lab in enumerate(VARIANTS)}
    state["rows"].sort(key=lambda r: (r["cfg"], CASES.index(r["case"]), order[r["label"]], SAMPLERS.index(r["sampler"])))
    md.write_text(markdown(state))
    print(f"wrote {md} and {js} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
