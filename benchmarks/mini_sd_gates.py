"""The mini-sd model's quality gates, measured at full size, into ``docs/mini_sd_gates.json``.

(a) classifier accuracy of 100 generated digits (10 per class, CFG 3, ``--gen-steps`` DDIM
    steps), judged by an RBF SVM trained on the **training split only**
    (:func:`cfginv_lite.mnist.train_mnist_classifier`), with a bootstrap 95% interval;
    the judge's own accuracy on the 1,000 held-out images is reported next to it;
(b) VAE reconstruction RMSE (``[0, 1]`` units, the 28x28 MNIST pixels) on the 1,000 held-out
    images: median and interquartile range;
(c) the course's phenomenon: naive DDIM inversion (source label) + DDIM regeneration of 100
    held-out real digits at CFG 1 and CFG 7.5, 20 steps: medians, their ratio (bootstrap 95%
    interval) and the per-image paired ratio.

The file is checked before any work and replaced only if this script wrote it (``--force``
overrides), atomically (the shared harness :mod:`cfginv_lite.benchmark`).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/mini_sd_gates.py           # docs/mini_sd_gates.json
    python benchmarks/mini_sd_gates.py --quick --out /tmp/g.json    # smoke test
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cfginv_lite import load_model
from cfginv_lite.benchmark import OutputFile, add_output_arguments, command_line, environment, exit_on_output_error
from cfginv_lite.mnist import load_mnist_split, train_mnist_classifier
from cfginv_lite.ownership import json_marked
from cfginv_lite.quality import generation_accuracy, naive_phenomenon, reconstruction_rmse
from cfginv_lite.evidence import spread

WRITTEN_BY = "benchmarks/mini_sd_gates.py"


def _sd(s: Any) -> dict[str, float]:
    return {"median": s.median, "q25": s.q25, "q75": s.q75, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/mini_sd_gates.json", help="output JSON (default docs/mini_sd_gates.json)")
    p.add_argument("--gen-steps", type=int, default=50, help="DDIM steps for the generated digits (default 50)")
    p.add_argument("--weights-dir", default=None, help="mini-sd weights folder (default: the shipped ones)")
    add_output_arguments(p, resume=False)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, 4 steps, 100 VAE images")
    args = p.parse_args(argv)
    if args.gen_steps < 1:
        raise SystemExit("error: --gen-steps must be >= 1")
    with exit_on_output_error():
        out = OutputFile(args.out, script=WRITTEN_BY, owned=json_marked(WRITTEN_BY), force=args.force,
                         what="gates JSON")
        result = measure(args, command_line(WRITTEN_BY, argv))
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.path} ({result['seconds']} s)")
    return 0


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The three gates, printed as they finish; the JSON's content."""
    per_digit, gen_steps, inv_steps, n_vae = (1, 4, 4, 100) if args.quick else (10, args.gen_steps, 20, 1000)
    start = time.perf_counter()
    model = load_model("mini-sd", **({"weights_dir": args.weights_dir} if args.weights_dir else {}))
    predict = train_mnist_classifier()
    held, held_labels = load_mnist_split("heldout")
    judge = float((predict(held) == held_labels).mean())
    acc, _ = generation_accuracy(model, predict, per_digit=per_digit, scale=3.0, steps=gen_steps, seed=0)
    print(f"(a) accuracy of {acc.n} generated digits (CFG 3, {gen_steps} steps): {acc}; judge on held-out: {judge:.3f}")
    rec = spread(reconstruction_rmse(model, held[:n_vae], crop=28))
    print(f"(b) VAE reconstruction RMSE on {rec.n} held-out images: {rec}")
    ph = naive_phenomenon(model, per_digit=per_digit, steps=inv_steps, scales=(1.0, 7.5))
    print(f"(c) naive inversion of {ph.spreads[1.0].n} held-out digits, {inv_steps} steps: CFG 1 {ph.spreads[1.0]}, "
          f"CFG 7.5 {ph.spreads[7.5]}; ratio of medians {ph.ratio_of_medians.median:.2f} "
          f"({ph.ratio_of_medians.ci_low:.2f}-{ph.ratio_of_medians.ci_high:.2f}); paired {ph.paired}")
    result = {
        "written_by": WRITTEN_BY, "command": command, "quick": args.quick,
        "env": environment(),
        "seconds": round(time.perf_counter() - start, 1),
        "a_generation_accuracy": {"accuracy": acc.accuracy, "ci_low": acc.ci_low, "ci_high": acc.ci_high,
                                  "n": acc.n, "cfg": 3.0, "steps": gen_steps, "seed": 0,
                                  "classifier": "RBF SVM (gamma=scale, C=5) on the 4,000 training images",
                                  "classifier_heldout_accuracy": judge},
        "b_vae_reconstruction_rmse": {**_sd(rec), "units": "[0, 1] pixels, central 28x28", "set": "held-out"},
        "c_naive_inversion": {"steps": inv_steps, "set": "held-out real digits, 10 per class",
                              "cfg1": _sd(ph.spreads[1.0]), "cfg7.5": _sd(ph.spreads[7.5]),
                              "ratio_of_medians": _sd(ph.ratio_of_medians), "paired_ratio": _sd(ph.paired)},
    }
    return result


if __name__ == "__main__":
    raise SystemExit(main())
