"""Edit real digits into every other digit: success and preservation per inversion method and tau.

The fuller grid behind notebook 06: ``--per-digit`` real digits of each class, each edited
into **all nine** other digits (``90 x per_digit`` edits per method and tau), from each
inversion method at guidance ``--cfg``, with the prompt-to-prompt word swap active for the
first ``tau`` of the steps (:func:`cfginv_lite.editing.edit`). Per (method, tau): edit
success (the quality gate's classifier reads the target digit), the style distance to the
source (:func:`cfginv_lite.style_metrics.style_distance`) as a median with IQR and bootstrap 95%
interval, and its ratio to a control of unrelated generated target digits.

Results are written to a JSON file after every method (``--resume`` skips methods already
there; it needs the same edits, CFG and steps) and to a Markdown table, atomically, by the
shared harness :mod:`cfginv_lite.benchmark`; neither is overwritten unless this script wrote it
(recognised by the JSON's ``"tool"`` key / the Markdown's first line) or ``--force``.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/editing.py                 # docs/editing.{json,md}
    python benchmarks/editing.py --quick --out-dir /tmp/ed          # smoke test (seconds)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from cfginv_lite import load_model, make_guidance, timestep_grid
from cfginv_lite.benchmark import Results, add_output_arguments, command_line, exit_on_output_error, text_render
from cfginv_lite.data import digit_prompt, load_digit_images, real_digit_set, train_digit_classifier
from cfginv_lite.editing import edit
from cfginv_lite.evidence import median_ratio, spread
from cfginv_lite.sampling import generate
from cfginv_lite.methods import run_method
from cfginv_lite.style_metrics import style_distance, style_scales
from cfginv_lite.ownership import first_line_is

TOOL = "benchmarks/editing.py"
HEADER = "# Editing real digits: success and preservation per inversion method and tau"
# label -> (registry name, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "naive": ("naive", {}),
    "naive-destination": ("naive-destination", {}),
    "original": ("original", {}),
    "anderson (3 it)": ("anderson", {"budget": 3}),
    "null-text (lr 0.05)": ("null-text", {"lr": 0.05}),
}


def markdown(data: dict[str, Any]) -> str:
    s = data["settings"]
    lines = [HEADER, "",
             f"{s['images']} real digits ({s['per_digit']} per class), each edited into all 9 other digits "
             f"({s['edits']} edits per row); CFG {s['cfg']}, {s['steps']} DDIM steps; command: `{s['command']}`.",
             "Control: unrelated target digits generated from fresh noise at the same CFG: success "
             f"{data['control']['success']:.3f}, style distance {data['control']['style_median']:.3f}.", "",
             "| method | NFE | recon. RMSE (median) | tau | success | style distance: median [IQR] (95% CI) | / control (95% CI) |",
             "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['method']} | {r['nfe']} | {r['recon_rmse_median']:.3f} | {r['tau']:g} | {r['success']:.3f} | "
                     f"{r['style_median']:.3f} [{r['style_q25']:.3f}-{r['style_q75']:.3f}] "
                     f"({r['style_ci_low']:.3f}-{r['style_ci_high']:.3f}) | {r['to_control']:.2f} "
                     f"({r['to_control_ci_low']:.2f}-{r['to_control_ci_high']:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--taus", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--per-digit", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--steps", type=int, default=10)
    add_output_arguments(ap, "editing.{json,md}")
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 digit per class, 3 steps, 2 methods")
    args = ap.parse_args(argv)
    if args.quick:
        args.per_digit, args.steps, args.methods, args.taus = 1, 3, args.methods[:2], [0.0, 1.0]
    out = Path(args.out_dir)
    with exit_on_output_error():
        results = Results(out / "editing.json", script=TOOL, marker="tool", fresh={"rows": []}, force=args.force,
                          resume=args.resume, keys=lambda s: (r["method"] for r in s["rows"]),
                          renders={out / "editing.md": (first_line_is(HEADER), text_render(markdown))})
        old, new = results.state.get("settings"), {"edits": 90 * args.per_digit, "cfg": args.cfg, "steps": args.steps}
        if old is not None and {k: old.get(k) for k in new} != new:
            raise SystemExit(f"error: {results.path} holds edits of another setting ({old.get('edits')} edits, CFG "
                             f"{old.get('cfg')}, {old.get('steps')} steps); --resume needs the same, --force starts over")
        return run(args, argv, results)


def run(args: argparse.Namespace, argv: list[str] | None, results: Results) -> int:
    """The edits of every method and tau not in ``results`` yet, saved after each method."""
    model = load_model("digits")
    grid = timestep_grid(args.steps)
    images, labels = real_digit_set(args.per_digit, seed=0)
    src = np.repeat(np.array(labels), 9)
    tgt = np.array([(d + k) % 10 for d in labels for k in range(1, 10)])
    x = model.encode(images).repeat_interleave(9, 0)
    originals = images.repeat_interleave(9, 0)
    classify = train_digit_classifier()
    scales = style_scales(load_digit_images()[0])
    target_prompts = [digit_prompt(d) for d in tgt]
    target_emb = model.encode_prompt(target_prompts)
    control = generate(model, target_prompts, args.cfg, grid, seed=1).images
    style_control = style_distance(control, originals, scales)
    settings = dict(images=len(images), per_digit=args.per_digit, edits=len(x), cfg=args.cfg, steps=args.steps,
                    command=command_line(TOOL, argv))
    results.state.update(settings=settings, control=dict(success=float((classify(control) == tgt).mean()),
                                                         style_median=float(np.median(style_control))))
    guidance = make_guidance(model, [digit_prompt(d) for d in src], args.cfg)
    for label in args.methods:
        if results.done(label):
            print(f"{label}: kept from {results.path}")
            continue
        name, options = VARIANTS[label]
        start = time.perf_counter()
        inv = run_method(name, model, x, grid, guidance, progress=True, **options)
        rows = []
        for tau in args.taus:
            out = edit(model, inv.latents, grid, inv.guidance, target_emb, tau=tau, progress=False)
            edited = model.decode(out.edited)
            rec = ((model.decode(out.reconstructed) - originals) / 2).pow(2).flatten(1).mean(1).sqrt().numpy()
            dist = style_distance(edited, originals, scales)
            s, r = spread(dist), median_ratio(dist, style_control)
            rows.append(dict(method=label, tau=tau, nfe=inv.nfe, nfe_backward=inv.nfe_backward,
                             recon_rmse_median=float(np.median(rec)), success=float((classify(edited) == tgt).mean()),
                             style_median=s.median, style_q25=s.q25, style_q75=s.q75, style_ci_low=s.ci_low,
                             style_ci_high=s.ci_high, to_control=r.median, to_control_ci_low=r.ci_low,
                             to_control_ci_high=r.ci_high))
            print(f"{label} tau {tau:g}: success {rows[-1]['success']:.3f}, style {s}, / control {r.median:.2f}",
                  flush=True)
        results.state["seconds_" + label] = time.perf_counter() - start
        results.add(*rows)                                  # after every method: JSON and table
    results.save()
    print(f"wrote {results.path} and {results.rendered[0]}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
