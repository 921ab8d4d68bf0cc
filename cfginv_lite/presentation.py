"""Presentation: tables and figures of results (plain text, Markdown, matplotlib).

Small helpers so that notebook cells, the CLI and the benchmarks stay short. Nothing here
computes a measurement (those are in :mod:`cfginv_lite.metrics`) or an interactive view
(:mod:`cfginv_lite.widgets`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

#: Columns of :func:`cfginv_lite.cli.compare` rows, in table order.
COLUMNS = ("set", "cfg", "steps", "method", "nfe", "nfe_bwd", "latent_rmse", "image_rmse", "psnr_db", "seconds")


# --------------------------------------------------------------------------- tables
def format_table(rows: list[dict[str, Any]], markdown: bool = False, columns: Sequence[str] = COLUMNS) -> str:
    """Fixed-width (or Markdown) table of :func:`compare` rows (or any rows with ``columns``), numbers rounded."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
        if isinstance(v, tuple):  # (cfg,) marker: print guidance compactly
            return f"{v[0]:g}"
        return str(v)

    body = [[cell((r[c],) if c == "cfg" else r[c]) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join([fmt.format(*columns)] + [fmt.format(*b) for b in body])


def plot_rows(rows: list[dict[str, Any]], path: str, *, software: str | None = None) -> None:
    """Reconstruction error (image RMSE) vs guidance scale, one line per (set, method, steps).

    ``software`` is stored in the file's metadata (PNG ``Software``, else ``Creator``), which
    is how the CLI recognises files it wrote and may replace without ``--force``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    keys = sorted({(r["set"], r["method"], r["steps"]) for r in rows})
    for key in keys:
        pts = sorted((r["cfg"], r["image_rmse"]) for r in rows if (r["set"], r["method"], r["steps"]) == key)
        ax.plot(*zip(*pts), marker="o", label=f"{key[0]}, {key[1]}, {key[2]} steps")
    ax.set_xlabel("classifier-free guidance scale w")
    ax.set_ylabel("image RMSE after regeneration ([0, 1] pixel units)")
    ax.set_yscale("log")
    ax.set_title("Reconstruction error vs guidance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fmt = Path(os.fspath(path)).suffix.lstrip(".").lower() or "png"
    metadata = None if software is None else {"Software" if fmt == "png" else "Creator": software}
    fig.savefig(path, format=fmt, metadata=metadata)
    plt.close(fig)


# --------------------------------------------------------------------------- images
def to_display(images: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` in ``[-1, 1]`` -> ``(B, H, W)`` (C=1) or ``(B, H, W, 3)`` in ``[0, 1]``."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    if x.shape[1] == 1:
        return x[:, 0]
    return np.moveaxis(x[:, :3], 1, -1)


def image_rows(rows: Sequence[torch.Tensor], row_titles: Sequence[str], col_titles: Sequence[str] | None = None,
               max_cols: int = 10, scale: float = 0.9, dpi: int = 100):
    """A grid of images: one row per tensor batch, at most ``max_cols`` columns."""
    import matplotlib.pyplot as plt

    n = min(max_cols, max(len(r) for r in rows))
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n, scale * len(rows) + 0.3), dpi=dpi, squeeze=False)
    for r, (batch, title) in enumerate(zip(rows, row_titles)):
        shown = to_display(batch[:n])
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([]); ax.set_yticks([])
            if c < len(shown):
                ax.imshow(shown[c], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=9)
    fig.tight_layout(pad=0.2)
    return fig


# --------------------------------------------------------------------------- the transfer table
#: Where ``benchmarks/transfer.py`` writes the table (relative to the repository root).
TRANSFER_JSON = Path(__file__).resolve().parents[1] / "docs" / "transfer.json"


def load_transfer(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The JSON written by ``benchmarks/transfer.py`` (default ``docs/transfer.json``).

    Raises ``FileNotFoundError`` with the command that writes it, and ``ValueError`` for a file
    that script did not write.
    """
    import json

    p = Path(path) if path is not None else TRANSFER_JSON
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found; write it with `OMP_NUM_THREADS=1 python benchmarks/transfer.py`")
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("written_by") != "benchmarks/transfer.py" or "rows" not in data:
        raise ValueError(f"{p} was not written by benchmarks/transfer.py")
    return data


def transfer_entry(data: dict[str, Any], row: str, model: str, case: str = "real") -> dict[str, Any]:
    """One model's measurement of one row and set: ``a``/``b`` spreads, ``ratio``, maybe ``paired_ratio``."""
    try:
        return data["rows"][row][model]["cases"][case]
    except KeyError:
        raise KeyError(f"transfer table has no ({row!r}, {model!r}, {case!r}); rows: {sorted(data['rows'])}") from None


def _ratio_text(e: dict[str, Any] | None) -> str:
    if e is None:
        return "not measured"
    r = e["ratio"]
    def f(x: float) -> str:
        return f"{x:.2g}" if abs(x) < 0.01 else f"{x:.2f}"
    return f"{f(r['value'])} [{f(r['ci_low'])}-{f(r['ci_high'])}]"


TRANSFER_MODELS = ("digits", "digits-split", "mini-sd")


def transfer_table(data: dict[str, Any] | None = None, *, models: Sequence[str] | None = None,
                   width: int = 60) -> str:
    """The transfer table as fixed-width text: per row and set, each model's ratio of median errors
    ``a/b`` [bootstrap 95% interval] (a calibrated row also names the model's CFG), and the cited
    SD report (shortened to ``width`` characters; the full text is in ``docs/transfer.md``).
    ``models``: the columns (default: every model the JSON has, in :data:`TRANSFER_MODELS` order)."""
    data = load_transfer() if data is None else data
    if models is None:
        present = {m for row in data["rows"].values() for m in row}
        models = [m for m in TRANSFER_MODELS if m in present]
    info = data.get("row_info", {})
    keys = sorted(data["rows"], key=lambda k: info.get(k, {}).get("order", 99))
    body = []
    for key in keys:
        meta = info.get(key, {})
        for k, case in enumerate(meta.get("cases", ["real"])):
            cells = [key if k == 0 else "", case]
            for m in models:
                got = data["rows"][key].get(m)
                if got is not None and got.get("not_reached"):
                    cells.append("naive never fails this much")
                    continue
                text = _ratio_text(None if got is None else got["cases"].get(case))
                cells.append(f"{text} @CFG {got['cfg']:g}" if got is not None and got.get("cfg") is not None else text)
            pub = meta.get("published", "") if k == 0 else ""
            cells.append(pub if len(pub) <= width else pub[:width - 3] + "...")
            body.append(cells)
    head = ["row", "set", *(f"{m}: a/b [95% CI]" for m in models), "SD papers / users (cited)"]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    legend = [f"{key}: a = {info[key]['a']}; b = {info[key]['b']}" for key in keys if key in info]
    return "\n".join([fmt.format(*head), *(fmt.format(*b) for b in body), "", *legend])


# --------------------------------------------------------------------------- committed result files in docs/
#: The repository's ``docs/`` folder, where the benchmark scripts write their JSON.
DOCS_DIR = TRANSFER_JSON.parent


def load_docs_json(name: str, docs_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The committed result file ``docs/<name>.json`` (e.g. ``"compare_methods"``, ``"editing"``),
    or ``None`` where it is absent (a ``pip install`` without the repository, as on Colab): a
    notebook that cites it then says so instead of failing. Raises ``ValueError`` for a file
    that is not a JSON object."""
    import json

    p = Path(docs_dir if docs_dir is not None else DOCS_DIR) / f"{name}.json"
    if not p.is_file():
        return None
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p} is not a JSON object")
    return data


def benchmark_rows(data: dict[str, Any] | None, *, case: str = "real", cfg: float = 7.5,
                   steps: int = 20) -> dict[str, dict[str, Any]]:
    """Rows of ``docs/compare_methods.json`` (``benchmarks/compare_methods.py``) for one set and
    setting, by their table label (``"anderson"``, ``"null-text (lr 0.05)"``, ...); ``{}`` for
    ``data=None``. Each row has ``nfe``, ``nfe_bwd``, ``image_rmse_median``, its bootstrap
    interval ``median_ci_low``/``median_ci_high`` and ``diverged``."""
    if data is None:
        return {}
    return {r["label"]: r for r in data["rows"] if r["case"] == case and r["cfg"] == cfg and r["steps"] == steps}


def editing_rows(data: dict[str, Any] | None) -> dict[tuple[str, float], dict[str, Any]]:
    """Rows of ``docs/editing.json`` (``benchmarks/editing.py``) by ``(method, tau)``; ``{}`` for
    ``data=None``. Each row has ``recon_rmse_median``, ``success``, ``style_median`` and
    ``to_control`` (median style distance over the control's) with ``to_control_ci_low``/``_high``."""
    if data is None:
        return {}
    return {(r["method"], float(r["tau"])): r for r in data["rows"]}


def distribution_plot(ax, groups: dict[str, Sequence[float]], *, ylabel: str = "", log: bool = True,
                      seed: int = 0, colors: Sequence[str] | None = None, horizontal: bool = False):
    """Per-image values of several groups side by side: a box (median, IQR, 1.5 IQR whiskers)
    over the jittered points themselves, so the tail a mean would hide stays visible.

    ``horizontal=True`` draws one box per row, the first group at the top, values along the x
    axis (``ylabel`` then labels that axis): long group names stay readable without rotation."""
    rng = np.random.default_rng(seed)
    names = list(groups)
    data = [np.asarray(groups[n], dtype=float) for n in names]
    pos = np.arange(len(names))
    ax.boxplot(data, positions=pos, widths=0.55, showfliers=False, medianprops=dict(color="black", lw=1.5),
               **({"orientation": "horizontal"} if horizontal else {}))
    for k, values in enumerate(data):
        color = colors[k % len(colors)] if colors else f"C{k % 10}"
        jitter = k + rng.uniform(-0.22, 0.22, len(values))
        xy = (values, jitter) if horizontal else (jitter, values)
        ax.scatter(*xy, s=6, alpha=0.45, color=color, lw=0)
    if horizontal:
        ax.set_yticks(pos, names)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first group on top, as in a table
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(ylabel)
        ax.grid(alpha=0.3, axis="x")
        return ax
    ax.set_xticks(pos, names)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return ax


__all__ = ["COLUMNS", "DOCS_DIR", "TRANSFER_JSON", "TRANSFER_MODELS", "benchmark_rows", "distribution_plot",
           "editing_rows", "format_table", "image_rows", "load_docs_json", "load_transfer", "plot_rows", "to_display",
           "transfer_entry", "transfer_table"]
