"""The course on one page: every method family on one error-vs-cost plot (``docs/overview.png``).

Reads the per-image errors that ``benchmarks/compare_methods.py`` committed in
``docs/compare_methods.json`` (100 real digits, CFG 7.5, 20 steps, DDIM regeneration unless a
method has its own sampler) and computes nothing new: each method is one point at its median
image RMSE, with its interquartile range as a bar, against its cost per image (network
evaluations plus backward passes, as the JSON counts them). Colour and marker say the family:

* naive DDIM inversion and its label conventions (notebooks 01-02),
* the seed's method, with and without ``tless`` (notebook 03),
* iterative solvers of the implicit step (notebook 03b),
* baselines from the literature, negative-prompt and null-text inversion (notebook 03b),
* exact inversions, EDICT and BDIA, with their own samplers and with DDIM regeneration (notebook 05).

It also prints the plotted numbers, so the figure can be checked against the JSON.

Usage (from the repository root)::

    python benchmarks/overview_figure.py                      # docs/overview.png from docs/compare_methods.json
    python benchmarks/overview_figure.py --out /tmp/o.png     # anywhere else

The output must be a new file or an earlier output of this script (recognised by the title it
stores in the PNG's metadata) unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cfginv_lite.benchmark import OutputFile, add_output_arguments, exit_on_output_error
from cfginv_lite.evidence import spread
from cfginv_lite.outputs import OutputPathError
from cfginv_lite.ownership import png_titled

ROOT = Path(__file__).resolve().parents[1]
WRITTEN_BY = "benchmarks/overview_figure.py"
TITLE = "cfginv-lite overview: error vs cost of every method family (benchmarks/overview_figure.py)"
#: whether a PNG is this script's (the title it stores in the PNG's metadata)
_ours = png_titled(TITLE)
CASE, CFG, STEPS = "real", 7.5, 20

#: family -> (the compare_methods labels in it, colour, marker, where the course teaches it)
FAMILIES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "naive DDIM inversion": (("naive", "naive-destination"), "tab:gray", "o", "notebooks 01-02"),
    "the seed's method": (("original", "original-showcase", "original-no-tless"), "tab:red", "s", "notebook 03"),
    "iterative solvers": (("fixed-point", "fixed-point-damped", "anderson", "focused"), "tab:blue", "D", "notebook 03b"),
    "literature baselines": (("negative-prompt", "null-text (lr 0.05)"), "tab:green", "^", "notebook 03b"),
    "exact pairs, own sampler": (("edict (own sampler)", "bdia (own sampler)"), "tab:purple", "*", "notebook 05"),
    "exact pairs, DDIM regeneration": (("edict, DDIM regen.", "bdia, DDIM regen."), "tab:orange", "v", "notebook 05"),
}


#: where a label goes relative to its point (offset in points, horizontal alignment), where the default would
#: overlap a neighbour's label
LABEL_PLACE: dict[str, tuple[tuple[int, int], str]] = {
    "original": ((-8, 6), "right"),
    "original-showcase": ((7, 6), "left"),
    "original-no-tless": ((7, -8), "left"),
    "bdia (own sampler)": ((-8, -4), "right"),
    "fixed-point-damped": ((-8, -4), "right"),
    "naive": ((-8, 4), "right"),
    "naive-destination": ((-8, -4), "right"),
}


def family_of(label: str) -> str:
    """The family a compare_methods label belongs to; ``KeyError`` for a label no family names."""
    for family, (labels, *_rest) in FAMILIES.items():
        if label in labels:
            return family
    raise KeyError(f"no family for method {label!r}: add it to FAMILIES in benchmarks/overview_figure.py")


def points(state: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per method of the (real, CFG 7.5, 20 steps) configuration: cost, median and quartiles."""
    rows = {r["label"]: r for r in state.get("rows", [])
            if r["case"] == CASE and r["cfg"] == CFG and r["steps"] == STEPS}
    out = []
    for d in state.get("per_image", []):
        if (d["case"], d["cfg"], d["steps"]) != (CASE, CFG, STEPS):
            continue
        row = rows.get(d["label"])
        if row is None:
            raise ValueError(f"{d['label']!r} has per-image errors but no row (cost) in the JSON")
        s = spread(d["image_rmse"], n_boot=1)   # the course's median and quartiles (the interval is not drawn)
        out.append({"label": d["label"], "family": family_of(d["label"]), "cost": row["nfe"] + row["nfe_bwd"],
                    "median": s.median, "q25": s.q25, "q75": s.q75, "n": s.n})
    if not out:
        raise ValueError(f"no per-image errors for case {CASE!r}, CFG {CFG:g}, {STEPS} steps")
    return out


def draw(pts: list[dict[str, Any]], path: Path) -> None:
    """The figure: log-log error vs cost, one colour and marker per family, every point labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cfginv_lite.style import rc_params

    with plt.rc_context(rc_params(font_size=10)):
        fig, ax = plt.subplots(figsize=(12, 6), dpi=100, layout="constrained")
        for family, (_labels, colour, marker, where) in FAMILIES.items():
            mine = [p for p in pts if p["family"] == family]
            if not mine:
                continue
            x = [p["cost"] for p in mine]
            y = [p["median"] for p in mine]
            yerr = [[p["median"] - p["q25"] for p in mine], [p["q75"] - p["median"] for p in mine]]
            ax.errorbar(x, y, yerr=yerr, ls="none", marker=marker, ms=9, color=colour, capsize=3,
                        label=f"{family} ({where})")
            for p in mine:
                offset, align = LABEL_PLACE.get(p["label"], ((7, 4), "left"))
                ax.annotate(p["label"], (p["cost"], p["median"]), textcoords="offset points", xytext=offset,
                            ha=align, fontsize=9, color=colour)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = []
        for cost in sorted({p["cost"] for p in pts}):   # one labelled tick per cost, none crowding the last
            if not ticks or cost > 1.15 * ticks[-1]:
                ticks.append(cost)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlim(min(ticks) / 1.6, max(ticks) * 2.2)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("cost per image: network evaluations + backward passes (20 steps)")
        ax.set_ylabel("median image RMSE, [0, 1] pixels (bars: IQR; log scale)")
        n = pts[0]["n"]
        ax.set_title(f"Inverting {n} real digits at CFG {CFG:g}: error vs cost of every method family\n"
                     "(digits model, DDIM regeneration unless 'own sampler'; docs/compare_methods.json)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, title="family (where it is taught)",
                  title_fontsize=9)
        fig.savefig(path, format="png", metadata={"Title": TITLE})
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(ROOT / "docs" / "compare_methods.json"),
                   help="compare_methods.json to read (default docs/compare_methods.json)")
    p.add_argument("--out", default=str(ROOT / "docs" / "overview.png"), help="PNG to write (default docs/overview.png)")
    add_output_arguments(p, resume=False)
    args = p.parse_args(argv)
    src = Path(args.json)
    if not src.is_file():
        p.error(f"{src} does not exist (written by benchmarks/compare_methods.py)")
    try:
        out = OutputFile(args.out, script=WRITTEN_BY, owned=_ours, force=args.force, what="overview PNG")
        pts = points(json.loads(src.read_text(encoding="utf-8")))
    except (OutputPathError, ValueError, KeyError) as err:
        p.error(str(err).strip("'\""))
    for q in sorted(pts, key=lambda q: (q["cost"], q["median"])):
        print(f"{q['label']:>22}  {q['family']:<31} cost {q['cost']:>4}  median {q['median']:.2e} "
              f"(IQR {q['q25']:.2e}-{q['q75']:.2e})")
    with exit_on_output_error():   # the PNG changed hands during the run: say so, keep the figure beside it
        out.write(lambda tmp: draw(pts, tmp))
    print(f"wrote {out.path} ({len(pts)} methods, {pts[0]['n']} images each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
