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
from cfginv_lite.data import digit_prompt, split_digit_set, train_digit_classifier
from cfginv_lite.guidance import make_guidance
from cfginv_lite.style_metrics import style_distance, style_scales
from cfginv_lite.evidence import spread
from cfginv_lite.flow import flow_grid, invert_euler, sample_euler
from cfginv_lite.flow_edit import flow_edit
from cfginv_lite.methods import NFECounter
from cfginv_lite.outputs import OutputPathError, check_output_file, write_output
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
    lines += ["", f"Run: `{state['command']}` ({state['env']}; {state['minutes']} min)"]
    return "\n".join(lines) + "\n"


def _ours_json(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def _ours_md(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\r\n") == HEADER
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="docs", help="folder for flow_edit.{json,md} (default docs)")
    p.add_argument("--skip", type=int, default=3, help="FlowEdit's skipped noisiest steps (default 3)")
    p.add_argument("--force", action="store_true", help="replace output files this script did not write")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per class, 3 steps, skip 1")
    args = p.parse_args(argv)
    per_digit, steps, skip = (1, 3, 1) if args.quick else (10, 10, args.skip)
    if not 0 <= skip < steps:
        raise SystemExit(f"error: --skip must be in 0..{steps - 1}")
    out = Path(args.out_dir)
    try:
        js = check_output_file(out / "flow_edit.json", what="FlowEdit JSON", force=args.force, owned=_ours_json)
        md = check_output_file(out / "flow_edit.md", what="FlowEdit Markdown", force=args.force, owned=_ours_md)
    except OutputPathError as err:
        raise SystemExit(f"error: {err}") from None
    existed = {js: js.exists(), md: md.exists()}
    command = shlex.join(["python", *(sys.argv if argv is None else [WRITTEN_BY, *argv])])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    start = time.perf_counter()
    model = load_model("digits-flow")
    images, labels = split_digit_set("heldout", per_digit)
    targets = [(d + 1) % 10 for d in labels]
    predict, scales = train_digit_classifier(heldout_per_digit=50), style_scales(split_digit_set("heldout", 50)[0])
    times = flow_grid(steps)
    src1 = make_guidance(model, [digit_prompt(d) for d in labels], 1.0)
    state: dict[str, Any] = {"written_by": WRITTEN_BY, "quick": args.quick, "n": len(labels), "steps": steps,
                             "skip": skip, "cells": {}, "seed_spread": {}}
    with torch.no_grad():
        for c in CFGS:
            tar = make_guidance(model, [digit_prompt(d) for d in targets], c)
            dists, succ = [], []
            for seed in SEEDS:
                count = NFECounter()
                edited = model.decode(flow_edit(model, images, times, src1, tar, skip=skip, seed=seed, progress=False,
                                                callback=count))
                cell = _cell(edited, images, targets, predict, scales, count.nfe)
                state["cells"].setdefault(f"flowedit (seed {seed})", {})[f"{c:g}"] = cell
                dists.append(style_distance(edited, images, scales))
                succ.append(cell["success"])
            medians = [float(np.median(d)) for d in dists]
            state["seed_spread"][f"{c:g}"] = {"style_medians_min": min(medians), "style_medians_max": max(medians),
                                              "success_min": min(succ), "success_max": max(succ),
                                              "per_image_std_median": float(np.median(np.std(dists, axis=0)))}
            z = invert_euler(model, images, times, make_guidance(model, [digit_prompt(d) for d in labels], c),
                             progress=False)
            edited = model.decode(sample_euler(model, z, times, tar, progress=False))
            state["cells"].setdefault("inversion-based (reversed Euler + Euler)", {})[f"{c:g}"] = \
                _cell(edited, images, targets, predict, scales, 4 * steps)
            print(f"CFG {c:g}: " + "; ".join(f"{k}: {v[f'{c:g}']['success']:.2f} / {v[f'{c:g}']['style_median']:.3f}"
                                             for k, v in state["cells"].items()), flush=True)
    state.update(command=command, minutes=round((time.perf_counter() - start) / 60, 1),
                 env=f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()} CPU, "
                     f"nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    for path, text, owned in ((js, json.dumps(state, indent=1) + "\n", _ours_json), (md, markdown(state), _ours_md)):
        write_output(path, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"), existed=existed[path],
                     force=args.force, owned=owned)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
