"""Calibrate guidance by failure: at which CFG does naive inversion's error double, quadruple, x8?

A guidance scale means different things in different models, so "CFG 7.5" on the digits
model is not "CFG 7.5" on another. This script puts the models on one scale defined by the
failure the course is about: for each model, naive DDIM inversion (source label) + DDIM
regeneration of 100 real digits (10 per class), 20 steps, at a sweep of guidance scales; the
median image RMSE at each scale relative to its CFG-1 value, and the scale at which that
ratio first reaches 2, 4 and 8 (linear interpolation between the sweep's points).

Spread: the images are resampled with replacement (2,000 bootstrap draws, the same draw for
every scale, since the errors are paired by image); for each draw the median ratio curve and
its crossings are recomputed; the 2.5-97.5 percentiles are reported. A crossing that a draw
never reaches within the sweep is counted as "not reached" in that draw.

Real images: mini-sd's are the **held-out** MNIST images it never saw; the digits model's
(:func:`cfginv_lite.data.real_digit_set`) are its own **training** images (it has no others).
``--digits-split DIR`` measures how much that matters: DIR holds a digits model trained with
``python -m cfginv_lite.models.train_digits --holdout-per-digit 50 --out DIR`` (the same recipe,
50 images of each digit kept out), and it is calibrated twice, on 100 of its held-out digits
and on 100 of its training digits (:func:`cfginv_lite.data.split_digit_set`). Models already in
the JSON from an earlier run of this script are kept, so the split can be added later.

``--steps N`` calibrates at N DDIM steps instead of 20 (the failure at a given CFG depends on
the step count: the author's settings use 50) and writes ``calibration_{N}steps.{json,md}``.
``--models digits-split`` calibrates the shipped split model (``load_model("digits-split")``)
on its held-out digits, under the same name as ``--digits-split``'s held-out entry.

Results go to ``docs/calibration.{json,md}`` after each model, atomically (the shared harness
:mod:`cfginv_lite.benchmark`); files this script did not write are never replaced (``--force``
overrides), and a ``--quick`` run does not replace an earlier calibration without ``--force``.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_cfg.py
    OMP_NUM_THREADS=1 python benchmarks/calibrate_cfg.py --models --digits-split DIR   # add the split model
    OMP_NUM_THREADS=1 python benchmarks/calibrate_cfg.py --steps 50 --models digits digits-split mini-sd
    python benchmarks/calibrate_cfg.py --quick --out-dir /tmp/cal     # smoke test
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfginv_lite import load_model
from cfginv_lite.benchmark import (
    Results, add_output_arguments, command_line, environment, exit_on_output_error, text_render,
)
from cfginv_lite.data import digit_prompt, split_digit_set
from cfginv_lite.evidence import InputSet, digit_sets, evaluate
from cfginv_lite.ownership import first_line_is
from cfginv_lite.schedule import timestep_grid

WRITTEN_BY = "benchmarks/calibrate_cfg.py"
HEADER = "# Guidance calibrated by failure (naive inversion of real digits)"
CFGS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0)
FACTORS = (2.0, 4.0, 8.0)
MODELS = ("digits", "mini-sd", "digits-split")
SPLIT_HELD_OUT = "digits, split model: held-out"
REAL_SET = {"digits": "the digits model's training images (data.real_digit_set; it has no held-out images)",
            "mini-sd": "held-out MNIST images never seen in training (mnist.heldout_digit_set)",
            "digits, split model: held-out": "digits the split model never saw (data.split_digit_set('heldout'); "
                                             "the model: train_digits --holdout-per-digit 50)",
            "digits, split model: training": "the split model's own training digits (data.split_digit_set('train'))"}


def crossing(cfgs: np.ndarray, ratios: np.ndarray, factor: float) -> float | None:
    """First CFG at which ``ratios`` reaches ``factor``, linearly interpolated; None if never."""
    for i in range(1, len(cfgs)):
        if ratios[i] >= factor:
            lo, hi = ratios[i - 1], ratios[i]
            if lo >= factor:
                return float(cfgs[i - 1])
            return float(cfgs[i - 1] + (factor - lo) / (hi - lo) * (cfgs[i] - cfgs[i - 1]))
    return None


def calibrate(errors: np.ndarray, cfgs: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``errors``: (n_cfg, n_images) per-image RMSE, row 0 at CFG 1. Medians, ratios, crossings, bootstrap."""
    med = np.median(errors, axis=1)
    ratios = med / med[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, errors.shape[1], size=(int(n_boot), errors.shape[1]))
    boot_ratio = np.stack([np.median(errors[:, k], axis=1) for k in idx])        # (n_boot, n_cfg)
    boot_ratio = boot_ratio / boot_ratio[:, :1]
    out: dict[str, Any] = {
        "cfg": cfgs.tolist(), "median_rmse": med.tolist(), "ratio_to_cfg1": ratios.tolist(),
        "ratio_ci_low": np.percentile(boot_ratio, 2.5, axis=0).tolist(),
        "ratio_ci_high": np.percentile(boot_ratio, 97.5, axis=0).tolist(), "crossings": {},
    }
    for f in FACTORS:
        boots = [crossing(cfgs, r, f) for r in boot_ratio]
        reached = np.array([b for b in boots if b is not None])
        out["crossings"][f"{f:g}x"] = {
            "cfg": crossing(cfgs, ratios, f),
            "ci_low": float(np.percentile(reached, 2.5)) if reached.size else None,
            "ci_high": float(np.percentile(reached, 97.5)) if reached.size else None,
            "draws_not_reached": int(len(boots) - reached.size), "draws": len(boots),
        }
    return out


def _fmt(c: dict[str, Any]) -> str:
    if c["cfg"] is None:
        return "not reached"
    ci = "" if c["ci_low"] is None else f" [{c['ci_low']:.2f}-{c['ci_high']:.2f}]"
    miss = f", not reached in {c['draws_not_reached']}/{c['draws']} draws" if c["draws_not_reached"] else ""
    return f"{c['cfg']:.2f}{ci}{miss}"


def markdown(state: dict[str, Any]) -> str:
    lines = [HEADER, "",
             "Written by `benchmarks/calibrate_cfg.py` (command and environment at the end). Naive DDIM inversion "
             f"(source label) + DDIM regeneration, {state['steps']} steps, 100 real digits (10 per class) per model; image RMSE "
             "in [0, 1] pixels. *ratio*: median RMSE at that CFG / median at CFG 1, with a bootstrap 95% interval "
             "(images resampled, paired across scales). *CFG at 2x/4x/8x*: where the ratio first reaches the factor "
             "(linear interpolation), [bootstrap 95% interval].", ""]
    for name, r in state["models"].items():
        lines += [f"## {name}", "", f"Real images: {r['real_set']}.", "",
                  "| CFG | median RMSE | ratio to CFG 1 [95% CI] |", "|---|---|---|"]
        for w, m, q, lo, hi in zip(r["cfg"], r["median_rmse"], r["ratio_to_cfg1"], r["ratio_ci_low"], r["ratio_ci_high"]):
            lines.append(f"| {w:g} | {m:.4f} | {q:.2f} [{lo:.2f}-{hi:.2f}] |")
        lines += ["", "| factor | CFG at which the median reaches it |", "|---|---|"]
        lines += [f"| {k} | {_fmt(c)} |" for k, c in r["crossings"].items()] + [""]
    lines += ["## Runs", ""] + [f"- `{r['command']}` ({r['env']}): {', '.join(r['models'])}" for r in state["runs"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    p.add_argument("--digits-split", metavar="DIR", help="also calibrate a digits model trained with "
                   "--holdout-per-digit 50 (weights in DIR), on its held-out and on its training digits")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20: docs/calibration.*; "
                   "otherwise docs/calibration_{N}steps.*)")
    add_output_arguments(p, "calibration.{json,md}", resume=False)   # earlier models are always kept
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, 4 steps, CFG 1 3 7.5")
    args = p.parse_args(argv)
    if not 1 <= args.steps <= 999:
        raise SystemExit("error: --steps must be in 1..999")
    per_digit, steps, cfgs = (1, 4, (1.0, 3.0, 7.5)) if args.quick else (10, args.steps, CFGS)
    with exit_on_output_error():
        results = open_results(Path(args.out_dir), args, steps)
        split_model = None
        if args.digits_split:
            split_model = load_model("digits", weights_dir=args.digits_split)   # before any work: a bad folder fails now
            info = json.loads((Path(args.digits_split) / "digits.json").read_text())
            if info.get("holdout_per_digit") != 50:
                raise SystemExit(f"error: {args.digits_split} was not trained with --holdout-per-digit 50 "
                                 f"(its digits.json says {info.get('holdout_per_digit')!r})")
        jobs = [(SPLIT_HELD_OUT, "digits-split", "held-out") if name == "digits-split" else (name, name, None)
                for name in args.models]
        if split_model is not None:
            jobs += [(f"digits, split model: {side}", "digits-split", side) for side in ("held-out", "training")]
        results.log_run({"command": command_line(WRITTEN_BY, argv), "env": environment(), "models": [j[0] for j in jobs]})
        for name, model_name, side in jobs:
            model = (split_model or load_model("digits-split")) if model_name == "digits-split" else load_model(model_name)
            results.state["models"][name] = result = measure(model, name, side, per_digit, steps, cfgs)
            results.commit()                                          # after each model
            print(f"{name}: " + ", ".join(f"{k} at CFG {_fmt(c)}" for k, c in result["crossings"].items())
                  + f" ({result['seconds']} s)", flush=True)
        results.save()
    print(f"saved {results.path} and {results.rendered[0]}")
    return 0


def open_results(out: Path, args: argparse.Namespace, steps: int) -> Results:
    """calibration[_{N}steps].{json,md} in ``out``: an earlier calibration of this script is continued
    (its models kept) unless ``--quick``; it must be at the same step count."""
    stem = "calibration" if args.steps == 20 else f"calibration_{args.steps}steps"
    results = Results(out / f"{stem}.json", script=WRITTEN_BY, fresh={"quick": args.quick, "models": {}, "runs": []},
                      force=args.force, always_resume=not args.quick, resumable=False,
                      renders={out / f"{stem}.md": (first_line_is(HEADER), text_render(markdown))})
    state = results.state
    if results.resumed and state.get("steps", 20) != steps:
        raise SystemExit(f"error: {results.path} holds a calibration at {state.get('steps')} steps, not {steps}")
    if "command" in state and not state["runs"]:      # files from before the runs log: one run
        state["runs"] = [{"command": state.pop("command"), "env": state.pop("env"), "models": list(state["models"])}]
    state.update(quick=args.quick, steps=steps)
    return results


def measure(model: Any, name: str, side: str | None, per_digit: int, steps: int, cfgs: tuple[float, ...]) -> dict[str, Any]:
    """Naive inversion of ``model``'s real digits (``side`` of the split model, if given) at every CFG: the calibration."""
    start = time.perf_counter()
    grid = timestep_grid(steps, config=model.scheduler_config)
    if side is None:
        real = digit_sets(model, cfgs[-1], grid, per_digit=per_digit, seed=0, cases=["real"])
    else:
        images, labels = split_digit_set("heldout" if side == "held-out" else "train", per_digit, seed=0)
        images = images.to(model.device)
        real = {"real": InputSet("real", model.encode(images), images, [digit_prompt(d) for d in labels], labels)}
    errors = np.stack([evaluate(model, real, w, grid, method="naive")["real"].image_rmse for w in cfgs])
    result = calibrate(errors, np.asarray(cfgs, dtype=np.float64))
    result.update(real_set=REAL_SET[name], n_images=int(errors.shape[1]), per_image_rmse=errors.round(6).tolist(),
                  seconds=round(time.perf_counter() - start, 1))
    return result

if __name__ == "__main__":
    raise SystemExit(main())
