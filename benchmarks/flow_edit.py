"""FlowEdit (inversion-free) vs inversion-based editing on the rectified-flow twin, at target CFG 1, 3 and 7.5.

Each of the 100 held-out digits of the split (10 per class) is edited into the next digit ((d + 1) mod 10)
on a uniform 10-step flow grid:

* **FlowEdit** (Kulikov et al. 2024, arXiv:2412.08629, :func:`cfginv_lite.flow_edit.flow_edit`): source
  prompt at CFG 1, target prompt at the tested CFG, the first ``--skip`` (default 3) noisiest steps
  skipped, ``n_avg = 1``; run with seeds 0, 1, 2 (its noise is random): per seed, and the spread across seeds.
* **inversion-based**: reversed Euler inversion with the source prompt at the tested CFG, Euler sampling
  with the target prompt at the same CFG (the plain prompt swap of notebook 06, on a flow).

Success: the target digit read by an RBF SVM fitted on the split's training side; preservation: the style
distance to the source (:func:`cfginv_lite.editing.style_distance`, in IQR units of the held-out digits'
style features; lower keeps more of the source's ink, slant and position). Per cell: success with a
bootstrap 95% interval, median style distance with IQR and 95% interval, NFE per image.

The outputs are replaced only if this script wrote them (``--force`` overrides), atomically.

    OMP_NUM_THREADS=1 python benchmarks/flow_edit.py            # docs/flow_edit.{json,md}
    python benchmarks/flow_edit.py --quick --out-dir /tmp/fe     # smoke test
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfginv_lite import load_model
from cfginv_lite.benchmark import Results, add_output_arguments, command_line, environment, exit_on_output_error, \
    text_render
from cfginv_lite.data import digit_prompt, split_digit_set, train_digit_classifier
from cfginv_lite.guidance import make_guidance
from cfginv_lite.style_metrics import style_distance, style_scales
from cfginv_lite.evidence import spread
from cfginv_lite.flow import flow_grid, invert_euler, sample_euler
from cfginv_lite.flow_edit import flow_edit
from cfginv_lite.methods import NFECounter
from cfginv_lite.ownership import first_line_is
from cfginv_lite.quality import bootstrap_accuracy

WRITTEN_BY = "benchmarks/flow_edit.py"
HEADER = "# FlowEdit vs inversion-based editing (digits-flow, held-out digits)"
CFGS = (1.0, 3.0, 7.5)
SEEDS = (0, 1, 2)


def _cell(edited: torch.Tensor, source: torch.Tensor, targets: list[int], predict, scales, nfe: int) -> dict:
    acc = bootstrap_accuracy(predict(edited) == np.asarray(targets))
    s = spread(style_distance(edited, source, scales))
    return {"success": acc.accuracy, "success_ci": [acc.ci_low, acc.ci_high], "style_median": s.median,
            "style_iqr": [s.q25, s.q75], "style_ci": [s.ci_low, s.ci_high], "n": s.n, "nfe": nfe}


def markdown(state: dict[str, Any]) -> str:
    lines = [HEADER, "", f"Written by `{WRITTEN_BY}` (do not edit by hand); {state['n']} held-out digits edited into "
             f"the next digit, {state['steps']} flow steps, FlowEdit skipping {state['skip']} steps (source CFG 1). "
             "Success: target digit recognised (95% interval); style: median style distance to the source "
             "(IQR) [95% interval], lower preserves more.", "",
             "| method | NFE | " + " | ".join(f"CFG {c:g}: success / style" for c in CFGS) + " |",
             "|---|---:|" + "---|" * len(CFGS)]
    for key, cells in state["cells"].items():
        row = [key, str(next(iter(cells.values()))["nfe"])]
        for c in CFGS:
            e = cells.get(f"{c:g}")
            row.append("not run" if e is None else f"{e['success']:.2f} / {e['style_median']:.3f} "
                       f"({e['style_iqr'][0]:.3f}-{e['style_iqr'][1]:.3f}) [{e['style_ci'][0]:.3f}-{e['style_ci'][1]:.3f}]")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Seed variance of FlowEdit (its per-step noise): per CFG, the range of the three seeds' median style "
              "distances and success rates, and the median over images of the per-image standard deviation of the "
              "style distance across seeds.", ""]
    for c, v in state.get("seed_spread", {}).items():
        lines.append(f"- CFG {c}: style medians {v['style_medians_min']:.3f}-{v['style_medians_max']:.3f}, success "
                     f"{v['success_min']:.2f}-{v['success_max']:.2f}, per-image std across seeds (median) "
                     f"{v['per_image_std_median']:.3f}")
    lines.append("")
    for run in state["runs"]:
        lines.append(f"Run: `{run['command']}` ({run['env']}; {run['minutes']} min)")
    return "\n".join(lines) + "\n"


def open_results(args: argparse.Namespace, n: int, steps: int, skip: int) -> Results:
    """The JSON and its table in ``--out-dir``, both checked before any work. A file from before the
    runs log (one run's ``command``, ``env``, ``minutes`` at the top) gets them as its first run; a
    resumed file must have been measured with the same images, steps and skip."""
    out = Path(args.out_dir)
    results = Results(out / "flow_edit.json", script=WRITTEN_BY, force=args.force, resume=args.resume,
                      fresh={"quick": args.quick, "n": n, "steps": steps, "skip": skip, "cells": {},
                             "seed_spread": {}, "runs": []},
                      keys=lambda s: iter(s["seed_spread"]),
                      renders={out / "flow_edit.md": (first_line_is(HEADER), text_render(markdown))},
                      what="FlowEdit JSON")
    state = results.state
    if "command" in state:
        state["runs"] = [{k: state.pop(k) for k in ("command", "env", "minutes")}, *state["runs"]]
    if (state["n"], state["steps"], state["skip"]) != (n, steps, skip):
        raise SystemExit(f"error: --resume with {n} images, {steps} steps, skip {skip}, but the file has "
                         f"{state['n']}, {state['steps']} and {state['skip']}")
    return results


def edit_at(model: Any, c: float, images: torch.Tensor, labels: list[int], targets: list[int], times: list[float],
            skip: int, predict: Any, scales: Any) -> tuple[dict[str, dict], dict[str, float]]:
    """One target CFG: FlowEdit with each seed and inversion-based editing; the cells and the seed spread."""
    src1 = make_guidance(model, [digit_prompt(d) for d in labels], 1.0)
    tar = make_guidance(model, [digit_prompt(d) for d in targets], c)
    cells, dists, succ = {}, [], []
    for seed in SEEDS:
        count = NFECounter()
        edited = model.decode(flow_edit(model, images, times, src1, tar, skip=skip, seed=seed, progress=False,
                                        callback=count))
        cells[f"flowedit (seed {seed})"] = _cell(edited, images, targets, predict, scales, count.nfe)
        dists.append(style_distance(edited, images, scales))
        succ.append(cells[f"flowedit (seed {seed})"]["success"])
    medians = [float(np.median(d)) for d in dists]
    spread_ = {"style_medians_min": min(medians), "style_medians_max": max(medians), "success_min": min(succ),
               "success_max": max(succ), "per_image_std_median": float(np.median(np.std(dists, axis=0)))}
    z = invert_euler(model, images, times, make_guidance(model, [digit_prompt(d) for d in labels], c), progress=False)
    edited = model.decode(sample_euler(model, z, times, tar, progress=False))
    nfe = 4 * (len(times) - 1)                       # reversed Euler + Euler, two branches each
    cells["inversion-based (reversed Euler + Euler)"] = _cell(edited, images, targets, predict, scales, nfe)
    return cells, spread_


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip", type=int, default=3, help="FlowEdit's skipped noisiest steps (default 3)")
    add_output_arguments(p, "flow_edit.{json,md}")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per class, 3 steps, skip 1")
    args = p.parse_args(argv)
    per_digit, steps, skip = (1, 3, 1) if args.quick else (10, 10, args.skip)
    if not 0 <= skip < steps:
        raise SystemExit(f"error: --skip must be in 0..{steps - 1}")
    with exit_on_output_error():
        results = open_results(args, 10 * per_digit, steps, skip)
        run = {"command": command_line(WRITTEN_BY, argv), "env": environment()}
        start = time.perf_counter()
        model = load_model("digits-flow")
        images, labels = split_digit_set("heldout", per_digit)
        targets = [(d + 1) % 10 for d in labels]
        predict, scales = train_digit_classifier(heldout_per_digit=50), style_scales(split_digit_set("heldout", 50)[0])
        times = flow_grid(steps)
        with torch.no_grad():
            for c in CFGS:
                if results.done(f"{c:g}"):
                    continue
                cells, results.state["seed_spread"][f"{c:g}"] = edit_at(model, c, images, labels, targets, times,
                                                                        skip, predict, scales)
                for key, cell in cells.items():
                    results.state["cells"].setdefault(key, {})[f"{c:g}"] = cell
                results.commit()                       # after every CFG: an interrupted run keeps it
                print(f"CFG {c:g}: " + "; ".join(f"{k}: {v['success']:.2f} / {v['style_median']:.3f}"
                                                 for k, v in cells.items()), flush=True)
        results.finish({**run, "minutes": round((time.perf_counter() - start) / 60, 1)})
    print(f"wrote {', '.join(map(str, results.rendered))} and {results.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
