"""The issue-11 target line: a DDIM-exact root finder vs the better naive convention, on real digits.

For each (CFG, steps): 100 real dataset digits (10 per digit, seed 0) are inverted by the
destination-label naive step and by each candidate, regenerated with DDIM on the inversion
grid, and compared by median image RMSE: ``ratio = median(naive) / median(candidate)`` with a
bootstrap 95% interval (:func:`cfginv_lite.evidence.median_ratio`), and the NFE ratio. The
target is ratio >= 10 at NFE ratio <= 4. The exact-by-construction BDIA is printed too,
regenerated with its OWN sampler (not DDIM), for reference.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/root_finder_target.py --cfg 7.5 3 5 --steps 20
    OMP_NUM_THREADS=1 python benchmarks/root_finder_target.py --cfg 7.5 --steps 50
"""
from __future__ import annotations

import argparse
from typing import Any

from cfginv_lite import load_model
from cfginv_lite.evidence import digit_sets, evaluate, median_ratio, spread
from cfginv_lite.schedule import timestep_grid

# label -> (registry name, options, regeneration sampler)
CANDIDATES: dict[str, tuple[str, dict[str, Any], str]] = {
    "anderson, 3 it every step": ("anderson", {"budget": 3}, "ddim"),
    "focused (default)": ("focused", {}, "ddim"),
    "anderson, 8 it every step (floor)": ("anderson", {"budget": 8}, "ddim"),
    "bdia, OWN sampler (not DDIM)": ("bdia", {}, "own"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", type=float, default=[7.5])
    p.add_argument("--steps", nargs="+", type=int, default=[20])
    p.add_argument("--per-digit", type=int, default=10)
    p.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    args = p.parse_args(argv)
    model = load_model("digits")
    for steps in args.steps:
        grid = timestep_grid(steps)
        for cfg in args.cfg:
            sets = digit_sets(model, cfg, grid, per_digit=args.per_digit, seed=0, cases=("real",))
            base = evaluate(model, sets, cfg, grid, "naive-destination")["real"]
            b = spread(base.image_rmse)
            print(f"cfg {cfg:g}, {steps} steps, {b.n} real digits: destination-naive median {b.median:.4f} "
                  f"(95% CI {b.ci_low:.4f}-{b.ci_high:.4f}), {base.nfe} NFE", flush=True)
            for label in args.candidates:
                name, options, sampler = CANDIDATES[label]
                r = evaluate(model, sets, cfg, grid, name, sampler=sampler, **options)["real"]
                s, q = spread(r.image_rmse), median_ratio(base.image_rmse, r.image_rmse)
                hit = "MET" if q.median >= 10 and r.nfe <= 4 * base.nfe else "not met"
                print(f"  target: {label} median {s.median:.4f} (95% CI {s.ci_low:.4f}-{s.ci_high:.4f}, IQR "
                      f"{s.q25:.4f}-{s.q75:.4f}) vs destination-naive {b.median:.4f}: ratio {q.median:.2f} "
                      f"(95% CI {q.ci_low:.2f}-{q.ci_high:.2f}), NFE {r.nfe} = {r.nfe / base.nfe:.1f}x naive "
                      f"-> {hit}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
