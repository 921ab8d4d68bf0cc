"""The rectified-flow twin's quality gates, measured at full size, into ``docs/flow_gates.json``.

(a) classifier accuracy of 100 generated digits (10 per class, CFG 3, ``--gen-steps`` Euler steps),
    judged by an RBF SVM fitted on the digits split's **training side only**
    (:func:`cfginv_lite.data.train_digit_classifier` ``(heldout_per_digit=50)``), with a bootstrap 95%
    interval; the judge's accuracy on the 500 held-out digits is reported next to it;
(b) the course's phenomenon on the twin: reversed Euler inversion + Euler regeneration of 100 held-out
    real digits at CFG 1 and CFG 7.5, 10 steps: medians, their ratio (bootstrap 95% interval) and the
    per-image paired ratio (:func:`cfginv_lite.flow_quality.flow_phenomenon`);
(d) the held-out flow-matching loss (500 held-out digits, 4 seeded draws of ``t`` and noise each) of the
    twin and of its starting point (the digits-split networks read as a velocity model): training
    must have made it a velocity model, which (a) alone cannot show (an epsilon network sampled as a
    flow already draws recognisable digits);
(c) the same generation gate for the teacher (``digits-split``, DDIM 20 steps), so the twin is judged
    next to the model it twins.

The file is checked before any work and replaced only if this script wrote it (``--force`` overrides),
atomically (the shared harness :mod:`cfginv_lite.benchmark`).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/flow_gates.py            # docs/flow_gates.json
    python benchmarks/flow_gates.py --quick --out /tmp/g.json     # smoke test
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from cfginv_lite import load_model
from cfginv_lite.benchmark import OutputFile, add_output_arguments, command_line, environment, exit_on_output_error
from cfginv_lite.data import heldout_indices, load_digit_images, train_digit_classifier
from cfginv_lite.data import split_digit_set
from cfginv_lite.flow_quality import flow_generation_accuracy, flow_matching_loss, flow_phenomenon
from cfginv_lite.models.flow_digits import FlowDigitsModel
from cfginv_lite.ownership import json_marked
from cfginv_lite.quality import generation_accuracy

WRITTEN_BY = "benchmarks/flow_gates.py"


def _sd(s) -> dict[str, float]:
    return {"median": s.median, "q25": s.q25, "q75": s.q75, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}


def _acc(a) -> dict[str, float]:
    return {"accuracy": a.accuracy, "ci_low": a.ci_low, "ci_high": a.ci_high, "n": a.n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/flow_gates.json", help="output JSON (default docs/flow_gates.json)")
    p.add_argument("--gen-steps", type=int, default=20, help="Euler steps for the generated digits (default 20)")
    p.add_argument("--weights-dir", default=None, help="digits-flow weights folder (default: the shipped ones)")
    add_output_arguments(p, resume=False)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, 4 steps")
    args = p.parse_args(argv)
    with exit_on_output_error():
        out = OutputFile(args.out, script=WRITTEN_BY, owned=json_marked(WRITTEN_BY), force=args.force,
                         what="gates JSON")
        if args.gen_steps < 1:
            raise SystemExit("error: --gen-steps must be >= 1")
        result = measure(args, command_line(WRITTEN_BY, argv))
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.path} ({result['seconds']} s)")
    return 0


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The four gates, printed as they finish; the JSON's content."""
    per_digit, gen_steps, inv_steps = (1, 4, 4) if args.quick else (10, args.gen_steps, 10)
    start = time.perf_counter()
    model = load_model("digits-flow", **({"weights_dir": args.weights_dir} if args.weights_dir else {}))
    predict = train_digit_classifier(heldout_per_digit=50)
    images, targets = load_digit_images(8)
    held = heldout_indices(50)
    judge = float((predict(images[torch.from_numpy(held)]) == targets[held]).mean())
    acc, _ = flow_generation_accuracy(model, predict, per_digit=per_digit, scale=3.0, steps=gen_steps, seed=0)
    print(f"(a) accuracy of {acc.n} generated digits (CFG 3, {gen_steps} Euler steps): {acc}; judge on held-out: "
          f"{judge:.3f}")
    ph = flow_phenomenon(model, per_digit=per_digit, steps=inv_steps, scales=(1.0, 7.5))
    print(f"(b) reversed Euler on {ph.spreads[1.0].n} held-out digits, {inv_steps} steps: CFG 1 {ph.spreads[1.0]}, "
          f"CFG 7.5 {ph.spreads[7.5]}; ratio of medians {ph.ratio_of_medians.median:.2f} "
          f"({ph.ratio_of_medians.ci_low:.2f}-{ph.ratio_of_medians.ci_high:.2f}); paired {ph.paired}")
    teacher, _ = generation_accuracy(load_model("digits-split"), predict, per_digit=per_digit, scale=3.0,
                                     steps=gen_steps, seed=0)
    print(f"(c) teacher digits-split, same gate (DDIM {gen_steps} steps): {teacher}")
    held_images, held_labels = split_digit_set("heldout", 50)
    split = load_model("digits-split")
    start_point = FlowDigitsModel(split.text_encoder, split.unet)
    losses = {"twin": flow_matching_loss(model, held_images, held_labels),
              "start": flow_matching_loss(start_point, held_images, held_labels)}
    print(f"(d) held-out flow-matching loss: twin {losses['twin']:.4f}, its starting point {losses['start']:.4f}")
    info = json.loads((Path(model_dir(args.weights_dir)) / "digits.json").read_text())
    return {
        "written_by": WRITTEN_BY, "command": command, "quick": args.quick, "env": environment(),
        "seconds": round(time.perf_counter() - start, 1),
        "training": {k: info.get(k) for k in ("train_steps", "init", "train_seconds", "train_images",
                                              "holdout_per_digit", "final_loss_avg100", "seed")},
        "a_generation_accuracy": {**_acc(acc), "cfg": 3.0, "steps": gen_steps, "sampler": "euler", "seed": 0,
                                  "classifier": "RBF SVM (gamma=0.001, C=10) on the 1,297 training-side digits",
                                  "classifier_heldout_accuracy": judge},
        "b_reversed_euler": {"steps": inv_steps, "set": "held-out real digits, 10 per class",
                             "cfg1": _sd(ph.spreads[1.0]), "cfg7.5": _sd(ph.spreads[7.5]),
                             "ratio_of_medians": _sd(ph.ratio_of_medians), "paired_ratio": _sd(ph.paired)},
        "d_heldout_flow_matching_loss": {**losses, "images": len(held_labels), "draws_per_image": 4, "seed": 0},
        "c_teacher_generation_accuracy": {**_acc(teacher), "model": "digits-split", "sampler": "ddim",
                                          "steps": gen_steps},
    }


def model_dir(weights_dir: str | None) -> str:
    from cfginv_lite.models.flow_digits import FLOW_WEIGHTS_DIR

    return weights_dir or str(FLOW_WEIGHTS_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
