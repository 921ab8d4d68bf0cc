"""What transfers from the digits model to mini-sd? The course's key findings, measured on both.

Each key finding of the course is one row of a table with four columns: the **digits**
model (8x8 pixel space, its own training images as the real set), **digits-split** (the same
network trained without 50 digits per class, those held-out digits as the real set),
**mini-sd** (a learned AutoencoderKL, 4x8x8 latents, 1,000 held-out MNIST images as the real
set, see ``docs/calibration.md``), and **what Stable Diffusion papers and users report** (cited
from ``docs/published-figures.md``; citations, never measurements of this project).

Two kinds of rows are not plain reconstructions. *Editing* rows (``kind="edit"``) edit each
real image into another digit with prompt-to-prompt (tau 0.5, 10 steps) from two inversions
and compare preservation (the style distance of the edit to its source,
:func:`cfginv_lite.style_metrics.style_distance`) and success (a classifier the model's training
images taught reads the target digit). *Calibrated* rows run at each model's own CFG where
naive inversion's median error reaches k x its CFG-1 error (``docs/calibration.json``), so
the models are compared at the same failure severity instead of the same knob setting.

Every row compares two runs ``a`` and ``b`` (e.g. naive inversion at CFG 7.5 vs CFG 1) on
100 images per set (10 per class, seed 0; :func:`cfginv_lite.evidence.digit_sets`), both
models computed fresh by this script. Per model and set it stores the median image RMSE of
``a`` and ``b`` with their interquartile ranges, the ratio of the medians ``a / b`` with a
bootstrap 95% interval (images resampled independently, :func:`~cfginv_lite.evidence.median_ratio`),
and, where ``a`` and ``b`` ran on the same images, the per-image paired ratio's median with its
bootstrap 95% interval (:func:`~cfginv_lite.evidence.paired_ratio`). Ratios below 1: ``a``
reconstructs better than ``b``.

``--notebook-timing`` adds the measurement behind the "main model" decision: notebooks 02, 03 and 03b
executed as committed (digits) and with ``cl.load_model("digits")`` replaced by
``cl.load_model("mini-sd")`` (copies in a temporary folder, errors allowed in digits-specific
cells), wall time per notebook, same machine, one after the other.

Results are saved (atomically, by the shared harness :mod:`cfginv_lite.benchmark`) after every
(row, model), so an interrupted run keeps what it finished and ``--resume`` skips what is there.
Files this script did not write are never replaced unless ``--force``.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/transfer.py                       # the table in docs/
    OMP_NUM_THREADS=1 python benchmarks/transfer.py --resume --notebook-timing
    python benchmarks/transfer.py --quick --out-dir /tmp/tr               # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cfginv_lite import load_model
from cfginv_lite.benchmark import (
    Results, add_output_arguments, command_line, environment, exit_on_output_error, text_render,
)
from cfginv_lite.evidence import CASES, digit_sets, evaluate_samplers, median_ratio, paired_ratio, spread
from cfginv_lite.ownership import first_line_is
from cfginv_lite.schedule import timestep_grid

WRITTEN_BY = "benchmarks/transfer.py"
HEADER = "# What transfers: the digits model vs mini-sd vs published Stable Diffusion figures"
MODELS = ("digits", "digits-split", "mini-sd")
TIMED_MODELS = ("digits", "mini-sd")          # the main-model decision compares these two
ROOT = Path(__file__).resolve().parents[1]
REAL_SET = {"digits": "its own training images (data.real_digit_set; the shipped digits model trained on all 1,797)",
            "digits-split": "the 500 digits (50 per class) it never saw in training (data.split_digit_set('heldout'))",
            "mini-sd": "held-out MNIST images never seen in training (mnist.heldout_digit_set)"}
#: model name -> its entry in docs/calibration.json (the CFG at which naive fails k x)
CALIBRATION_KEY = {"digits": "digits", "digits-split": "digits, split model: held-out", "mini-sd": "mini-sd"}
EDIT_TAU = 0.5


@dataclass(frozen=True)
class Run:
    """One inversion setting: registry method, its options, regeneration sampler, CFG and steps."""

    method: str
    cfg: float = 7.5
    steps: int = 20
    options: tuple[tuple[str, Any], ...] = ()
    sampler: str = "ddim"

    def text(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        regen = "" if self.sampler == "ddim" else f", {self.sampler} sampler"
        return f"`{self.method}`{' (' + opts + ')' if opts else ''}, CFG {self.cfg:g}, {self.steps} steps{regen}"


@dataclass(frozen=True)
class Row:
    """A key finding: ``a`` compared with ``b`` on ``cases``; ``published``: the cited SD figure."""

    key: str
    finding: str
    a: Run
    b: Run
    published: str
    cases: tuple[str, ...] = ("real",)
    optional: bool = False
    note: str = ""
    kind: str = "inversion"        # "edit": compare prompt-to-prompt edits made from runs a and b
    calibrated: str = ""           # "2x"/"4x"/"8x": both runs at each model's calibrated CFG, not a.cfg


NAIVE = Run("naive")
ROWS: tuple[Row, ...] = (
    Row("naive-cfg", "naive inversion fails at high CFG: median error at CFG 7.5 / at CFG 1", NAIVE,
        Run("naive", cfg=1.0),
        "users: reconstruction fine at CFG 1, broken at 7.5 (prompt-to-prompt #27, diffusers #3336); plain DDIM "
        "inversion at CFG 7.5, 50 steps: PSNR 17.87 on PIE-Bench (Ju et al., ICLR 2024). No CFG-1 ratio published.",
        cases=CASES, note="decoded/latent sets are generated at each CFG, so those ratios are not paired"),
    Row("label", "destination label vs source label (naive, real images)", Run("naive-destination"), NAIVE,
        "none published as a comparison; public fixed-point code uses the destination label "
        "(FPI, ReNoise, Hong et al.: docs/published-figures.md)"),
    Row("original", "the original method at its defaults vs naive", Run("original"), NAIVE,
        "the author: generated images invert well up to CFG ~5.5, real ones up to ~4.5 (seed text); "
        "no CFG 7.5 measurement published"),
    Row("tless", "the tless offset alone: original with tless factor 0.25 vs factor 0",
        Run("original", options=(("tless_factor", 0.25),)), Run("original", options=(("tless_factor", 0.0),)),
        "none published"),
    Row("anderson", "Anderson acceleration (3 iterations) vs naive-destination",
        Run("anderson", options=(("budget", 3),)), Run("naive-destination"),
        "AIDI re-run, SD 1.4, CFG 7.5: PSNR 27.01 vs 17.87 for plain DDIM inversion (PIE-Bench; SPDInv's re-run)"),
    Row("damped", "damped fixed point (10 iterations, damping 0.5) vs naive-destination",
        Run("fixed-point-damped"), Run("naive-destination"),
        "fixed-point inversion re-run (Meiri et al., 20 iterations, undamped): PSNR 26.61 vs 17.87 (PIE-Bench)"),
    Row("negative-prompt", "negative-prompt inversion vs naive", Run("negative-prompt"), NAIVE,
        "negative-prompt inversion: PSNR 26.21 vs 17.87 for plain DDIM inversion (PIE-Bench), ~4-5 s per image"),
    Row("edict-own", "EDICT with its own sampler vs naive", Run("edict", sampler="own"), NAIVE,
        "EDICT: pixel MSE 0.004 at 10-100 steps (the VAE's floor) vs DDIM 0.026 at 10 steps (COCO, SD 1.5; BELM paper)"),
    Row("edict-ddim", "EDICT's latents regenerated with DDIM vs naive", Run("edict"), NAIVE, "none published"),
    Row("bdia-own", "BDIA (gamma 1) with its own sampler vs naive", Run("bdia", sampler="own"), NAIVE,
        "BDIA: pixel MSE 0.004 at 10-100 steps vs DDIM 0.026 at 10 steps (COCO, SD 1.5; BELM paper)"),
    Row("bdia-ddim", "BDIA's latents regenerated with DDIM vs naive", Run("bdia"), NAIVE, "none published"),
    Row("null-text", "null-text inversion, REDUCED budget (3 Adam steps per step, lr 0.05) vs naive",
        Run("null-text", options=(("inner_steps", 3), ("lr", 0.05))), NAIVE,
        "null-text inversion (10 Adam steps per step at 50 steps): PSNR 27.03 vs 17.87, 132 s per image on an A40 "
        "(PIE-Bench)", optional=True,
        note="reduced budget (Mokady et al. use 10 inner steps); a lower bound on what null-text can do here"),
    Row("author", "the author's settings: original, 5 iterations, 50 steps, CFG 4.5, vs naive at the same",
        Run("original", cfg=4.5, steps=50, options=(("refine_iterations", 5),)), Run("naive", cfg=4.5, steps=50),
        "the author: real images invert reasonably well up to CFG ~4.5 with his method (seed text)", optional=True),
    *(Row(f"author-{k}", f"the author's settings at matching severity: original, 5 iterations, 50 steps, at the CFG "
          f"where naive fails {k} at 50 steps (each model's own, docs/calibration_50steps.md), vs naive at the same",
          Run("original", steps=50, options=(("refine_iterations", 5),)), Run("naive", steps=50),
          "the author: without the refinement only CFG < 3 is usable on SD (his README); with it, real images up to "
          "~4.5 (seed text); the naive failure factor at those CFGs on SD is not published" if k == "2x" else "",
          optional=True, calibrated=k,
          note="calibrated at the author's 50 steps (docs/calibration_50steps.md: a CFG fails less at 50 steps "
               "than at 20)" if k == "2x" else "")
      for k in ("2x", "4x", "8x")),
    Row("edit-label", f"editing: edits made from naive-destination vs from naive inversion (prompt-to-prompt, "
        f"tau {EDIT_TAU:g}, each real image into another digit)", Run("naive-destination", steps=10),
        Run("naive", steps=10),
        "PIE-Bench, SD 1.4, CFG 7.5, prompt-to-prompt: background PSNR 17.87 from plain DDIM inversion vs 27.03 from "
        "null-text (Ju et al.); edit-success scores are not quoted in docs/published-figures.md", kind="edit",
        note="editing rows: a and b are edits; their values are the style distance of each edit to its source image "
             "(lower = better preserved), and `success` is the fraction of edits that the judge (an SVM trained on "
             "the model's training images) reads as the target digit, with a bootstrap 95% interval"),
    Row("edit-anderson", f"editing: edits made from Anderson (3 iterations) vs from naive inversion (tau {EDIT_TAU:g})",
        Run("anderson", steps=10, options=(("budget", 3),)), Run("naive", steps=10),
        "better reconstruction gives better-preserved edits on PIE-Bench (null-text, AIDI vs DDIM: "
        "docs/published-figures.md)", kind="edit"),
)
ROW_KEYS = tuple(r.key for r in ROWS)


# --------------------------------------------------------------------------- measuring
@dataclass
class ModelRunner:
    """Builds input sets and runs inversions for one model, caching both per setting."""

    name: str
    per_digit: int
    model: Any = None
    sets: dict[tuple[float, int], dict[str, Any]] = field(default_factory=dict)
    errors: dict[tuple[Run, str], np.ndarray] = field(default_factory=dict)
    seconds: dict[Run, float] = field(default_factory=dict)
    nfe: dict[Run, int] = field(default_factory=dict)

    edits: dict[Run, dict[str, np.ndarray]] = field(default_factory=dict)
    _edit_inputs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.model = load_model(self.name)

    def edit_inputs(self) -> dict[str, Any]:
        """The editing set (built once): the real images, one other target digit each, the judge and style units."""
        if self._edit_inputs is None:
            from cfginv_lite.data import digit_prompt, heldout_indices, load_digit_images, train_digit_classifier
            from cfginv_lite.style_metrics import style_scales

            real = digit_sets(self.model, 7.5, self.grid(10), per_digit=self.per_digit, seed=0, cases=["real"])["real"]
            targets = [(d + 1 + k % 9) % 10 for k, d in enumerate(real.labels)]   # every other digit in turn
            if self.name == "mini-sd":
                from cfginv_lite.mnist import load_mnist_split, train_mnist_classifier

                judge, reference = train_mnist_classifier(), load_mnist_split("train")[0]
            else:   # digits-split: its judge and style units see only its own training digits
                held = 50 if self.name == "digits-split" else 0
                judge = train_digit_classifier(heldout_per_digit=held)
                reference = load_digit_images(8)[0]
                if held:
                    keep = np.ones(len(reference), dtype=bool)
                    keep[heldout_indices(held)] = False
                    reference = reference[torch.from_numpy(keep)]
            self._edit_inputs = {"set": real, "targets": np.array(targets), "judge": judge,
                                 "scales": style_scales(reference),
                                 "target_emb": self.model.encode_prompt([digit_prompt(d) for d in targets])}
        return self._edit_inputs

    def edit_scores(self, run: Run) -> dict[str, np.ndarray]:
        """Per image: style distance of the edit to its source, success (bool), reconstruction RMSE."""
        if run not in self.edits:
            from cfginv_lite.editing import edit
            from cfginv_lite.style_metrics import style_distance
            from cfginv_lite import make_guidance
            from cfginv_lite.methods import run_method

            e = self.edit_inputs()
            real, grid = e["set"], self.grid(run.steps)
            start = time.perf_counter()
            guidance = make_guidance(self.model, real.prompts, run.cfg)
            inv = run_method(run.method, self.model, real.latents, grid, guidance, progress=False, **dict(run.options))
            out = edit(self.model, inv.latents, grid, inv.guidance, e["target_emb"], tau=EDIT_TAU, progress=False)
            edited, recon = self.model.decode(out.edited), self.model.decode(out.reconstructed)
            self.edits[run] = {
                "style": style_distance(edited, real.images, e["scales"]).astype(np.float64),
                "success": np.asarray(e["judge"](edited) == e["targets"]),
                "recon": ((recon - real.images) / 2).pow(2).flatten(1).mean(1).sqrt().double().numpy()}
            self.seconds[run] = self.seconds.get(run, 0.0) + time.perf_counter() - start
            self.nfe[run] = inv.nfe
        return self.edits[run]

    def grid(self, steps: int) -> list[int]:
        return timestep_grid(steps, config=self.model.scheduler_config)

    def input_sets(self, cfg: float, steps: int, cases: tuple[str, ...]) -> dict[str, Any]:
        key = (cfg, steps)
        have = self.sets.setdefault(key, {})
        missing = [c for c in cases if c not in have]
        if missing:
            have.update(digit_sets(self.model, cfg, self.grid(steps), per_digit=self.per_digit, seed=0, cases=missing))
        return {c: have[c] for c in cases}

    def image_rmse(self, run: Run, cases: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Per-image RMSE of ``run`` on each case (one batched inversion for the missing cases)."""
        missing = tuple(c for c in cases if (run, c) not in self.errors)
        if missing:
            sets = self.input_sets(run.cfg, run.steps, missing)
            start = time.perf_counter()
            out = evaluate_samplers(self.model, sets, run.cfg, self.grid(run.steps), run.method,
                                    samplers=(run.sampler,), **dict(run.options))[run.sampler]
            self.seconds[run] = self.seconds.get(run, 0.0) + time.perf_counter() - start
            for c, r in out.items():
                self.errors[(run, c)] = r.image_rmse.astype(np.float64)
                self.nfe[run] = r.nfe
        return {c: self.errors[(run, c)] for c in cases}


def _spread_dict(x: np.ndarray) -> dict[str, float]:
    s = spread(x)
    return {"median": s.median, "q25": s.q25, "q75": s.q75, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}


def calibration_path(steps: int) -> Path:
    """``benchmarks/calibrate_cfg.py``'s JSON for ``steps`` DDIM steps (its default 20, or ``--steps``)."""
    return ROOT / "docs" / ("calibration.json" if steps == 20 else f"calibration_{steps}steps.json")


def calibrated_cfg(model: str, factor: str, steps: int = 20, path: Path | None = None) -> float | None:
    """The CFG at which naive inversion's median error on ``model``'s real images, at ``steps`` DDIM
    steps, reaches ``factor`` (e.g. "2x") times its CFG-1 error, from ``benchmarks/calibrate_cfg.py``'s
    JSON; None if not reached within its sweep (up to CFG 10)."""
    path = calibration_path(steps) if path is None else path
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; run `OMP_NUM_THREADS=1 python benchmarks/calibrate_cfg.py "
                         f"--steps {steps} --models {' '.join(MODELS)}`")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("steps", 20) != steps:
        raise SystemExit(f"error: {path} is a calibration at {data.get('steps')} steps, not {steps}")
    try:
        crossing = data["models"][CALIBRATION_KEY[model]]["crossings"][factor]
    except KeyError:
        raise SystemExit(f"error: {path} has no {factor} crossing for {model!r}; run benchmarks/calibrate_cfg.py") from None
    return None if crossing["cfg"] is None else round(float(crossing["cfg"]), 2)


def measure_edit_row(runner: ModelRunner, row: Row) -> dict[str, Any]:
    """Edits from runs a and b: style distance (spreads, ratios), success with bootstrap intervals."""
    from cfginv_lite.quality import bootstrap_accuracy

    start = time.perf_counter()
    ea, eb = runner.edit_scores(row.a), runner.edit_scores(row.b)
    r, p = median_ratio(ea["style"], eb["style"]), paired_ratio(ea["style"], eb["style"])
    entry: dict[str, Any] = {"a": _spread_dict(ea["style"]), "b": _spread_dict(eb["style"]),
                             "ratio": {"value": r.median, "ci_low": r.ci_low, "ci_high": r.ci_high},
                             "paired_ratio": {"median": p.median, "q25": p.q25, "q75": p.q75, "ci_low": p.ci_low,
                                              "ci_high": p.ci_high},
                             "a_per_image": np.round(ea["style"], 7).tolist(),
                             "b_per_image": np.round(eb["style"], 7).tolist()}
    for side, e in (("a", ea), ("b", eb)):
        acc = bootstrap_accuracy(e["success"])
        entry[f"success_{side}"] = {"value": acc.accuracy, "ci_low": acc.ci_low, "ci_high": acc.ci_high, "n": acc.n}
        entry[f"recon_{side}_median"] = float(np.median(e["recon"]))
    return {"cases": {"real": entry}, "nfe_a": runner.nfe.get(row.a), "nfe_b": runner.nfe.get(row.b),
            "seconds": round(time.perf_counter() - start, 1), "tau": EDIT_TAU}


def measure_row(runner: ModelRunner, row: Row) -> dict[str, Any]:
    """Both runs of ``row`` on ``runner``'s model: spreads, ratio of medians, paired ratio."""
    if row.kind == "edit":
        return measure_edit_row(runner, row)
    cfg = None
    if row.calibrated:
        cfg = calibrated_cfg(runner.name, row.calibrated, row.a.steps)
        if cfg is None:
            return {"cases": {}, "cfg": None, "not_reached": True, "seconds": 0.0}
        row = dataclasses.replace(row, a=dataclasses.replace(row.a, cfg=cfg), b=dataclasses.replace(row.b, cfg=cfg))
    start = time.perf_counter()
    ea, eb = runner.image_rmse(row.a, row.cases), runner.image_rmse(row.b, row.cases)
    paired = (row.a.cfg, row.a.steps) == (row.b.cfg, row.b.steps)
    cases: dict[str, Any] = {}
    for c in row.cases:
        r = median_ratio(ea[c], eb[c])
        entry = {"a": _spread_dict(ea[c]), "b": _spread_dict(eb[c]),
                 "ratio": {"value": r.median, "ci_low": r.ci_low, "ci_high": r.ci_high},
                 "a_per_image": np.round(ea[c], 7).tolist(), "b_per_image": np.round(eb[c], 7).tolist()}
        if paired or c == "real":   # the real set is the same images at every setting
            p = paired_ratio(ea[c], eb[c])
            entry["paired_ratio"] = {"median": p.median, "q25": p.q25, "q75": p.q75, "ci_low": p.ci_low,
                                     "ci_high": p.ci_high}
        cases[c] = entry
    result = {"cases": cases, "nfe_a": runner.nfe.get(row.a), "nfe_b": runner.nfe.get(row.b),
              "seconds": round(time.perf_counter() - start, 1)}
    if cfg is not None:
        result["cfg"] = cfg
    return result


# --------------------------------------------------------------------------- notebook timing
NOTEBOOK_TIME = re.compile(r"^(?P<name>\S+\.ipynb): (?P<wall>[0-9.]+) s, .*?(?P<status>ok|FAILED.*)$", re.M)


def swap_model(nb_text: str, name: str) -> tuple[str, int]:
    """The notebook JSON with every ``load_model("digits")`` replaced by ``load_model(name)``; count."""
    pattern = re.compile(r"load_model\((\\?[\"'])digits(\\?[\"'])\)")
    return pattern.subn(lambda m: f"load_model({m.group(1)}{name}{m.group(2)})", nb_text)


def time_notebooks(names: list[str], workdir: Path) -> list[dict[str, Any]]:
    """Execute each notebook as committed (digits) and with mini-sd swapped in; wall time of each."""
    results = []
    for nb in tqdm(names, desc="notebook timing"):
        src = ROOT / "notebooks" / nb
        for model in TIMED_MODELS:
            folder = workdir / model
            folder.mkdir(parents=True, exist_ok=True)
            text, n = swap_model(src.read_text(encoding="utf-8"), model)
            if model != "digits" and n == 0:
                raise SystemExit(f"error: {nb} has no load_model(\"digits\") to swap")
            notebook = json.loads(text)
            for c in notebook["cells"]:          # let digits-specific cells fail and the rest run on
                if c["cell_type"] == "code":
                    tags = c.setdefault("metadata", {}).setdefault("tags", [])
                    if "raises-exception" not in tags:
                        tags.append("raises-exception")
            copy = folder / nb
            copy.write_text(json.dumps(notebook), encoding="utf-8")
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, str(ROOT / "tools" / "execute_notebooks.py"), "--output-dir",
                                   str(folder / "out"), "--cwd", str(ROOT / "notebooks"), str(copy)],
                                  capture_output=True, text=True, cwd=ROOT)
            m = NOTEBOOK_TIME.search(proc.stdout)
            if m is None:
                raise SystemExit(f"error: no timing line from execute_notebooks.py for {nb}:\n{proc.stdout}\n{proc.stderr}")
            status = m.group("status")
            executed = folder / "out" / nb
            errors = []
            if executed.exists():
                cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
                errors = [f"cell {k}: {o.get('ename')}: {str(o.get('evalue'))[:120]}" for k, c in enumerate(cells)
                          if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
            n_code = sum(c["cell_type"] == "code" for c in notebook["cells"])
            results.append({"notebook": nb, "model": model, "swaps": n, "wall_s": float(m.group("wall")),
                            "ok": status == "ok", "error": None if status == "ok" else status[:300],
                            "code_cells": n_code, "cells_with_errors": len(errors), "cell_errors": errors,
                            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
            print(f"{nb} ({model}): {float(m.group('wall')):.1f} s, {status[:120]}", flush=True)
    return results


COST_ROW = re.compile(r"^\| (?P<nb>\w+) \| (?P<two>\d+) s \| [^|]+\| (?P<binder>\d+) s \|", re.M)


def committed_times(readme: Path = ROOT / "README.md") -> dict[str, tuple[float, float]]:
    """The README's committed notebook costs (an idle 2-core machine): ``{"02": (2-core s, Binder s)}``."""
    if not readme.is_file():
        return {}
    return {m["nb"]: (float(m["two"]), float(m["binder"])) for m in COST_ROW.finditer(readme.read_text(encoding="utf-8"))}


def decide(runs: list[dict[str, Any]], committed: dict[str, tuple[float, float]] | None = None,
           limits: tuple[float, float] = (90.0, 120.0)) -> str:
    """The main-model decision from the timings.

    The criterion of issue 17 is absolute (<= 90 s on 2 cores, <= 120 s in Binder mode), but a
    shared machine inflates every time, so the two models are timed back to back and compared by
    their ratio; the estimate for an idle machine is the README's committed time of the digits
    notebook (``committed``) times that ratio. Cells that raised with mini-sd swapped in are
    counted: they are the porting work a switch needs (and make that notebook's time a lower bound).
    """
    if committed is None:   # the README's rows are keyed by prefix: only a notebook that still exists matches its row
        current = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
        committed = committed_times()
    else:
        current = None
    swapped = [r for r in runs if r["model"] == "mini-sd"]
    parts, fits = [], True
    for m in swapped:
        d = next((r for r in runs if r["model"] == "digits" and r["notebook"] == m["notebook"]), None)
        if d is None:
            continue
        ratio = m["wall_s"] / d["wall_s"]
        text = f"{m['notebook']}: mini-sd {m['wall_s']:.1f} s vs digits {d['wall_s']:.1f} s here (x{ratio:.2f})"
        prefix = m["notebook"].split("_")[0]
        if current is not None and m["notebook"] not in current:
            text += " (this notebook has since been renamed or split, so the README's times are not its times)"
        elif prefix in committed:
            two, binder = (t * ratio for t in committed[prefix])
            ok = two <= limits[0] and binder <= limits[1]
            fits &= ok
            text += (f"; with the README's idle-machine times of the digits notebook ({committed[prefix][0]:g} s on 2 "
                     f"cores, {committed[prefix][1]:g} s Binder) that is an estimated {two:.0f} s and {binder:.0f} s "
                     f"({'within' if ok else 'over'} {limits[0]:g} s / {limits[1]:g} s)")
        parts.append(text)
    raised = sum(r["cells_with_errors"] for r in swapped)
    cells = sum(r["code_cells"] for r in swapped)
    text = "; ".join(parts) + ". "
    if raised:
        errors = [e for r in swapped for e in r.get("cell_errors", [])]
        asserts = sum(": AssertionError:" in e for e in errors)
        what = (f"{asserts} of them assert cells whose claim, measured on the digits model, fails on mini-sd"
                if asserts else "digits-specific code")
        text += (f"{raised} of {cells} code cells raised with mini-sd swapped in ({what}; listed in the JSON), so "
                 "porting the notebooks means rewriting claims, not only swapping the model. ")
    if fits and not raised:
        return text + "Decision: mini-sd meets the time criterion; it can become the main model."
    if fits:
        return text + ("Decision: on cost, mini-sd meets the criterion; making it the main model is a porting job "
                       "(the cells that raised), not a compute problem. Until they are ported the digits model "
                       "stays the main model and mini-sd is the second model of notebook 06b.")
    return text + "Decision: keep the digits model as the main model (mini-sd would break the time budget)."


# --------------------------------------------------------------------------- output
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1e}" if 0 < abs(x) < 1e-3 else f"{x:.4f}" if abs(x) < 1 else f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def _ratio(r: dict[str, float]) -> str:
    return f"{_fmt(r['value'])} [{_fmt(r['ci_low'])}-{_fmt(r['ci_high'])}]"


def cell(entry: dict[str, Any] | None, case: str) -> str:
    """One model's table cell: medians (IQR) of a and b, ratio of medians [95% CI], paired ratio."""
    if entry is None:
        return "not measured"
    if entry.get("not_reached"):
        return "naive never fails this much here (up to CFG 10): not run"
    e = entry["cases"][case]
    a, b = e["a"], e["b"]
    text = f"at CFG {entry['cfg']:g}: " if entry.get("cfg") is not None else ""
    if "success_a" in e:
        sa, sb = e["success_a"], e["success_b"]
        text += (f"success a {sa['value']:.2f} [{sa['ci_low']:.2f}-{sa['ci_high']:.2f}], b {sb['value']:.2f} "
                 f"[{sb['ci_low']:.2f}-{sb['ci_high']:.2f}]; style distance ")
    text += (f"a {_fmt(a['median'])} ({_fmt(a['q25'])}-{_fmt(a['q75'])}), b {_fmt(b['median'])} "
             f"({_fmt(b['q25'])}-{_fmt(b['q75'])}); **a/b {_ratio(e['ratio'])}**")
    if "paired_ratio" in e:
        p = e["paired_ratio"]
        text += f"; paired {_fmt(p['median'])} [{_fmt(p['ci_low'])}-{_fmt(p['ci_high'])}]"
    return text


def main_model_section(state: dict[str, Any]) -> list[str]:
    timing = state.get("notebook_timing")
    lines = ["## Main model", ""]
    if not timing:
        return lines + ["Not measured yet (`--notebook-timing`).", ""]
    lines += ["Criterion (issue 17): every notebook must still run in <= 90 s on 2 cores and <= 120 s in Binder "
              f"mode. Notebooks {', '.join(sorted({r['notebook'].split('_')[0] for r in timing['runs']}))} executed one after the other by `tools/execute_notebooks.py` "
              f"({timing['env']}), as committed (digits) and with `cl.load_model(\"digits\")` replaced by "
              "`cl.load_model(\"mini-sd\")`:", "",
              "| notebook | model | wall time | code cells that raised | 1-min load before/after |", "|---|---|---|---|---|"]
    for r in timing["runs"]:
        ok = (f"{r.get('cells_with_errors', 0)} of {r.get('code_cells', '?')}" if r["ok"] else f"run failed: {r['error']}")
        lines.append(f"| {r['notebook']} | {r['model']} | {r['wall_s']:.1f} s | {ok} | "
                     f"{r['load_before']:.2f}/{r['load_after']:.2f} |")
    by = {(r["notebook"], r["model"]): r for r in timing["runs"]}
    lines.append("")
    for nb in sorted({r["notebook"] for r in timing["runs"]}):
        d, m = by.get((nb, "digits")), by.get((nb, "mini-sd"))
        if d and m:
            lines.append(f"- {nb}: mini-sd / digits wall time = {m['wall_s'] / d['wall_s']:.2f}.")
    gone = sorted({r["notebook"] for r in timing["runs"]} - {p.name for p in (ROOT / "notebooks").glob("*.ipynb")})
    if gone:   # the timing is a record of what ran then; the course has changed since (CHANGELOG)
        lines += ["", f"Measured before the course was restructured: {', '.join(gone)} no longer exists "
                  "(notebook 03 was split into 03_the_authors_method and 03b_relatives_compared; see CHANGELOG). "
                  "Rerun `--notebook-timing` to time the current notebooks."]
    lines += ["", timing["decision"], "",
              "Binder mode (1 CPU, 2 GB; <= 120 s) was not run with mini-sd swapped in: its figures above are estimates "
              "(committed Binder time x the ratio measured here). The kernels ran with "
              f"OMP_NUM_THREADS={timing.get('omp_threads', '?')} on a machine shared with other jobs (the load "
              "column), so both models' times are inflated alike; compare them with each other.", ""]
    return lines


#: (row, run "a" or "b") -> the label of the same setting in docs/compare_methods.json (real digits, CFG 7.5, 20 steps)
COMMITTED = {("naive-cfg", "a"): "naive", ("label", "a"): "naive-destination", ("original", "a"): "original",
             ("damped", "a"): "fixed-point-damped", ("negative-prompt", "a"): "negative-prompt",
             ("edict-own", "a"): "edict (own sampler)", ("edict-ddim", "a"): "edict, DDIM regen.",
             ("bdia-own", "a"): "bdia (own sampler)", ("bdia-ddim", "a"): "bdia, DDIM regen."}


def cross_check(state: dict[str, Any], path: Path = ROOT / "docs" / "compare_methods.json") -> list[str]:
    """Digits medians of this run next to the committed ``docs/compare_methods.json`` for the same setting."""
    if not path.is_file() or state.get("per_digit") != 10:
        return []
    committed = {r["label"]: r["image_rmse_median"] for r in json.loads(path.read_text(encoding="utf-8"))["rows"]
                 if r["case"] == "real" and r["cfg"] == 7.5 and r["steps"] == 20}
    out = []
    for (key, side), label in COMMITTED.items():
        got = state["rows"].get(key, {}).get("digits")
        if got is None or label not in committed:
            continue
        mine = got["cases"]["real"][side]["median"]
        out.append(f"`{key}` {mine:.4g} vs `{label}` {committed[label]:.4g}")
    if not out:
        return []
    return ["Cross-check: the digits model's real-image medians of this run against the committed "
            "`docs/compare_methods.json` (same images, seed and setting): " + "; ".join(out) + ".", ""]


def markdown(state: dict[str, Any]) -> str:
    rows = {r.key: r for r in ROWS}
    lines = [HEADER, "",
             f"Written by `{WRITTEN_BY}` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
             f"(runs at the end). Each row compares two runs **a** and **b** on {10 * state['per_digit']} images per set "
             f"({state['per_digit']} per class, seed 0), DDIM regeneration on the inversion grid unless stated; image RMSE in [0, 1] pixel units as "
             "median (interquartile range); **a/b** = ratio of the medians with a bootstrap 95% interval (images "
             "resampled independently); *paired* = median of the per-image ratios a/b with its bootstrap 95% "
             "interval, where a and b ran on the same images. a/b < 1: a reconstructs better. The model columns "
             "were computed by this script; the last column quotes `docs/published-figures.md` (citations, "
             "not measurements of this project; PSNR is higher-is-better, the opposite direction of RMSE).", "",
             "Real images: " + "; ".join(f"{m} = {REAL_SET[m]}" for m in MODELS) + ".", "",
             "Editing rows (`edit-*`): each real image is edited into another digit (prompt-to-prompt word swap for "
             f"the first {EDIT_TAU:g} of 10 steps, CFG 7.5) from inversion a and from inversion b; the values are "
             "style distances of the edit to its source (ink, slant and position in units of their IQR, "
             "`cfginv_lite.style_metrics.style_distance`; lower = better preserved), *success* = fraction of edits the "
             "model's judge (an SVM fitted on that model's training images) reads as the target digit. "
             "Calibrated rows (`author-2x` ...): each model at its own CFG where naive inversion's median error, at "
             "the row's step count, reaches 2x/4x/8x its CFG-1 error (`docs/calibration_50steps.md` for the "
             "author's 50 steps): the same failure severity, not the same knob.",
             ""]
    lines += ["| finding | set | a vs b | " + " | ".join(MODELS) + " | SD papers / users report (cited) |",
              "|---|---|---|" + "---|" * len(MODELS) + "---|"]
    for key in ROW_KEYS:
        got = state["rows"].get(key)
        if not got:
            continue
        row = rows[key]
        for c in row.cases:
            lines.append(f"| {row.finding if c == row.cases[0] else ''} | {c} | a = {row_text(row, 'a')}; "
                         f"b = {row_text(row, 'b')} | " + " | ".join(cell(got.get(m), c) for m in MODELS) +
                         f" | {row.published if c == row.cases[0] else ''} |")
    left = [rows[k] for k in ROW_KEYS if k not in state["rows"]]
    notes = [f"- `{r.key}`: {r.note}" for r in ROWS if r.note and r.key in state["rows"]]
    if notes:
        lines += ["", "Notes:", *notes]
    if left:
        lines += ["", "Not measured in these runs: " + "; ".join(f"`{r.key}` ({r.finding})" for r in left) + "."]
    lines += ["", "Seconds spent per (row, model) (both runs of the row, excluding runs already cached by an "
              "earlier row): " + "; ".join(
                  f"`{k}` " + ", ".join(f"{m} {v['seconds']:.0f}" for m, v in state["rows"][k].items())
                  for k in ROW_KEYS if k in state["rows"]), ""]
    lines += cross_check(state)
    lines += main_model_section(state)
    lines += ["## Runs", "", *[f"- `{r['command']}`: {r['env']}; {r['minutes']} min" for r in state["runs"]], ""]
    return "\n".join(lines)


def row_text(row: Row, side: str) -> str:
    """How run ``side`` ("a"/"b") of ``row`` is shown: its setting, with a calibrated row's CFG named."""
    text = getattr(row, side).text()
    if row.calibrated:
        text = re.sub(r"CFG [0-9.]+", f"CFG at naive {row.calibrated}", text)
    if row.kind == "edit":
        text = f"edits (tau {EDIT_TAU:g}) from {text}"
    return text


def row_info(row: Row) -> dict[str, Any]:
    """What a reader of the JSON needs to show a row (``cfginv_lite.presentation.transfer_table``)."""
    return {"finding": row.finding, "a": row_text(row, "a"), "b": row_text(row, "b"), "published": row.published,
            "cases": list(row.cases), "optional": row.optional, "note": row.note, "order": ROW_KEYS.index(row.key),
            "kind": row.kind, "calibrated": row.calibrated}


def annotate(state: dict[str, Any]) -> None:
    """What readers of the JSON need besides the measurements: each row's text, the current decision."""
    state["row_info"] = {r.key: row_info(r) for r in ROWS if r.key in state["rows"]}
    if state.get("notebook_timing"):       # the decision follows the current rule and README
        state["notebook_timing"]["decision"] = decide(state["notebook_timing"]["runs"])


class TransferResults(Results):
    """The harness's results file, annotated (:func:`annotate`) before every save."""

    def save(self) -> None:
        annotate(self.state)
        super().save()


def open_results(out: Path, args: argparse.Namespace) -> TransferResults:
    """transfer.json and transfer.md in ``out``, checked before any work; a resumed file must match ``--per-digit``."""
    results = TransferResults(out / "transfer.json", script=WRITTEN_BY, force=args.force, resume=args.resume,
                              fresh={"quick": args.quick, "per_digit": args.per_digit, "rows": {}, "runs": []},
                              keys=lambda s: ((key, model) for key, by in s["rows"].items() for model in by),
                              renders={out / "transfer.md": (first_line_is(HEADER), text_render(markdown))},
                              what="transfer JSON")
    if results.state.get("per_digit") != args.per_digit:
        raise SystemExit(f"error: --resume with --per-digit {args.per_digit}, but the file has "
                         f"{results.state.get('per_digit')}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--rows", nargs="+", choices=ROW_KEYS, help="rows to run (default: all)")
    p.add_argument("--skip-optional", action="store_true", help="leave out the optional (slow) rows")
    p.add_argument("--per-digit", type=int, default=10, help="images per class per set (default 10: 100 per set)")
    p.add_argument("--notebook-timing", action="store_true",
                   help="also time notebooks 02, 03 and 03b with digits and with mini-sd swapped in (minutes)")
    add_output_arguments(p, "transfer.{json,md}")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per class, rows naive-cfg and label")
    args = p.parse_args(argv)
    if args.per_digit < 1:
        raise SystemExit("error: --per-digit must be >= 1")
    rows = [r for r in ROWS if (args.rows is None or r.key in args.rows) and not (args.skip_optional and r.optional)]
    if args.quick:
        args.per_digit = 1
        rows = [r for r in ROWS if r.key in (args.rows or ["naive-cfg", "label"])]
    with exit_on_output_error():
        results = open_results(Path(args.out_dir), args)
        env = environment(load=True)
        run = {"command": command_line(WRITTEN_BY, argv), "env": env}
        start = time.perf_counter()
        for name in args.models:
            todo = [r for r in rows if not results.done((r.key, name))]
            runner = ModelRunner(name, args.per_digit) if todo else None
            for row in tqdm(todo, desc=name):
                result = measure_row(runner, row)
                results.state["rows"].setdefault(row.key, {})[name] = result
                results.commit()                                  # after every row: an interrupted run keeps it
                report(name, row, result)
        if args.notebook_timing:
            with tempfile.TemporaryDirectory(prefix="transfer-nb-") as tmp:
                runs = time_notebooks(["02_cfg_breaks_inversion.ipynb", "03_the_authors_method.ipynb",
                                       "03b_relatives_compared.ipynb"], Path(tmp))
            results.state["notebook_timing"] = {"env": env, "runs": runs, "decision": decide(runs),
                                                "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset")}
            results.commit()
        results.finish({**run, "minutes": round((time.perf_counter() - start) / 60, 1)})
    print(f"wrote {results.rendered[0]} and {results.path} ({(time.perf_counter() - start) / 60:.1f} min)")
    return 0


def report(name: str, row: Row, result: dict[str, Any]) -> None:
    """One line per (model, row) as it finishes."""
    real = result["cases"].get(row.cases[0])
    if real is None:
        print(f"{name:>12} {row.key:>15}: not run ({cell(result, row.cases[0])})", flush=True)
        return
    print(f"{name:>12} {row.key:>15}: {row.cases[0]} a {real['a']['median']:.4f} b {real['b']['median']:.4f} "
          f"a/b {real['ratio']['value']:.3f} ({result['seconds']} s)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
