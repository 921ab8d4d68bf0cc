"""Shared by the bad-input tests of the command line (test_cli.py) and the trainer
(test_train_digits.py): an entry point's exit code, stand-ins for ``compare``, a folder's
content digest, and the argument values the fuzz tests draw from (moved from test_robustness.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import strategies as st


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (sub-folders such as ``digits_split/`` included) by content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_compare(*args, **kwargs):
    raise AssertionError("the comparison ran although an argument or an output path was bad")


def _exit_code(fn, *args) -> int:
    try:
        result = fn(*args)
    except SystemExit as stop:
        return stop.code
    return result if isinstance(result, int) else 0


def _fake_compare(rows_to_make: int = 2, fail: BaseException | None = None, before_fail=None):
    def fake(**kwargs):
        rows = kwargs["into"]
        for i in range(rows_to_make):
            rows.append({"set": "generated", "cfg": float(kwargs["cfgs"][0]) + i, "steps": kwargs["steps_list"][0],
                         "method": "naive", "nfe": 4, "nfe_bwd": 0, "latent_rmse": 0.5, "image_rmse": 0.1 + i,
                         "psnr_db": 20.0, "seconds": 0.01})
        if before_fail is not None:
            before_fail()
        if fail is not None:
            raise fail
        return rows
    return fake


_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "20", "999", "1000", "5000", "nan", "inf", "-inf", "1e309", "7.5",
                     "-0.0", "2.5", str(2**64), str(2**64 - 1), "", "naive", "bogus", "digits", "cpu", "cuda",
                     "linspace", "leading", "trailing", "ddim", "lms", "x.md", "x.png", "x.xyz", "/proc/x.png",
                     "sub", "sub/y.md", "README.md", "stable-diffusion"]),
    st.text(max_size=8),
)
