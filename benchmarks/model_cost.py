"""Seconds per guided network call of the embedded models, measured in one run.

One guided call (:func:`cfginv_lite.guidance.guided_noise`) at batch 100 images is one batched
network evaluation of 200 rows (unconditional + conditional), which is what every step of
every solver costs. For each model: ``--warmup`` untimed calls, then ``--repeats`` timed
calls at noise levels spread over the schedule; the median is printed, with the ratio
mini-sd / digits. Both models are timed in the same process, alternating, so that a
change in machine load hits both alike.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/model_cost.py
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from cfginv_lite import load_model
from cfginv_lite.guidance import guided_noise, make_guidance
from cfginv_lite.experiment import digit_prompts

MODELS = ("digits", "mini-sd")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100, help="images per call (default 100: 200 network rows)")
    p.add_argument("--repeats", type=int, default=9, help="timed calls per model (default 9)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per model first (default 2)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.batch % 10 or args.repeats < 1 or args.warmup < 0:
        raise SystemExit("error: --batch must be a positive multiple of 10, --repeats >= 1, --warmup >= 0")
    prompts, _ = digit_prompts(args.batch // 10)
    setups = {}
    for name in MODELS:
        model = load_model(name)
        z = torch.randn(args.batch, *model.latent_shape, generator=torch.Generator().manual_seed(0))
        setups[name] = (model, z, make_guidance(model, prompts, 7.5))
    labels = [round(50 + 900 * k / max(1, args.repeats - 1)) for k in range(args.repeats)]
    times: dict[str, list[float]] = {n: [] for n in MODELS}
    with torch.no_grad():
        for name, (model, z, g) in setups.items():
            for _ in range(args.warmup):
                guided_noise(model, z, 500, 500, g)
        for label in labels:                      # alternate the models: equal exposure to load changes
            for name, (model, z, g) in setups.items():
                start = time.perf_counter()
                guided_noise(model, z, label, label, g)
                times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, nproc "
          f"{os.cpu_count()}, torch threads {torch.get_num_threads()}; batch {args.batch} images "
          f"= {2 * args.batch} rows per call, {args.repeats} timed calls after {args.warmup} warm-up")
    med = {}
    for name in MODELS:
        t = sorted(times[name])
        med[name] = statistics.median(t)
        params = sum(q.numel() for q in setups[name][0].unet.parameters())
        print(f"{name:>8}: median {med[name]:.4f} s per guided call (min {t[0]:.4f}, max {t[-1]:.4f}); "
              f"latent {setups[name][0].latent_shape}, UNet {params / 1e6:.2f} M parameters")
    print(f"ratio mini-sd / digits: {med['mini-sd'] / med['digits']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
