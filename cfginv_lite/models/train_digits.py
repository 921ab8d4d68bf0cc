"""Train the embedded digits model reproducibly on CPU.

    python -m cfginv_lite.models.train_digits --steps 2500 --out my_digits_weights
    # then: load_model("digits", weights_dir="my_digits_weights")

Epsilon-prediction objective (Ho et al. 2020, eq. 14) on the SD 1.x schedule: sample
``t ~ U{0..999}``, ``z_t = a_t x0 + b_t eps``, minimise ``|eps - eps_theta(z_t, t, c)|^2``.
Prompts are dropped (replaced by ``""``) with probability ``--dropout`` so that the same
network also learns the unconditional branch classifier-free guidance needs. An EMA of
the weights is what gets saved. Fixed seed; the run is deterministic on CPU.

Output: ``digits.safetensors`` and ``digits.json`` in ``--out`` (default: a new folder
``digits_weights`` in the current directory). Existing weights, and the weights shipped with
the package, are never replaced without ``--force``. Every argument and the output folder are
checked before training starts, and the folder is claimed (a lock file in it) so a second
trainer with the same ``--out`` fails at once instead of racing the first. A model whose
folder became unwritable during training (removed, disk full) is saved to a new folder
instead of being lost. A run whose loss becomes NaN/inf (too high a ``--lr``) stops with a
message and saves nothing; Ctrl-C stops it with exit code 130 and a message.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..validation import check_int, check_real, check_seed
from ..data import DIGIT_NAMES, HOLDOUT_SEED, heldout_indices, load_digit_images
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config
from ..outputs import OutputPathError, check_output_dir
from .digits import WEIGHT_FILES, WEIGHTS_DIR, DigitsModel, build_networks

TEMPLATES = ("a handwritten digit {}", "the digit {}", "a handwritten {}", "the number {}")
DEFAULT_OUT = "digits_weights"  # relative: a new folder in the working directory, never the package's
LOCK_NAME = ".cfginv-train.lock"  # in --out while a trainer owns it


class TrainingDivergedError(ValueError):
    """The training loss (or the weights) became NaN or infinite: nothing worth saving."""


def check_train_args(steps: Any = 2500, batch: Any = 128, lr: Any = 1e-3, dropout: Any = 0.12,
                     ema_decay: Any = 0.999, seed: Any = 0, size: Any = 8, holdout_per_digit: Any = 0) -> dict[str, Any]:
    """Validate every training argument up front (cheap), returning them as plain Python numbers.

    ``dropout`` must be in ``[0, 1)``: at 1 every prompt is dropped and the model never learns
    the conditional branch guidance needs.
    """
    return dict(
        steps=check_int("steps", steps, minimum=1),
        batch=check_int("batch", batch, minimum=1, maximum=65536),
        lr=check_real("lr", lr, low=0.0, low_open=True, high=1.0),
        dropout=check_real("dropout", dropout, low=0.0, high=1.0, high_open=True),
        ema_decay=check_real("ema_decay", ema_decay, low=0.0, high=1.0, high_open=True),
        seed=check_seed(seed),
        size=_check_size(size),
        holdout_per_digit=check_int("holdout_per_digit", holdout_per_digit, minimum=0, maximum=170),
    )


def _check_size(size: Any) -> int:
    size = check_int("size", size, minimum=4, maximum=64)
    if size % 2:  # the UNet halves the side once
        raise ValueError(f"size must be an even integer in [4, 64], got {size}")
    return size


def train(steps: int = 2500, batch: int = 128, lr: float = 1e-3, dropout: float = 0.12,
          ema_decay: float = 0.999, seed: int = 0, size: int = 8, progress: bool = True,
          holdout_per_digit: int = 0) -> tuple[DigitsModel, dict]:
    """Train a digits model; returns it (EMA weights) and the run's metadata. Arguments: :func:`check_train_args`.

    ``holdout_per_digit = N > 0`` keeps :func:`cfginv_lite.data.heldout_indices` ``(N)`` out of the
    training set, so that inversion can be measured on digits the model never saw (the shipped
    model uses ``0``: every dataset digit is a training image).
    """
    args = check_train_args(steps, batch, lr, dropout, ema_decay, seed, size, holdout_per_digit)
    steps, batch, lr, dropout, ema_decay, seed, size, holdout_per_digit = (args[k] for k in (
        "steps", "batch", "lr", "dropout", "ema_decay", "seed", "size", "holdout_per_digit"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digit_images(size)
    if holdout_per_digit:
        keep = np.ones(len(labels), dtype=bool)
        keep[heldout_indices(holdout_per_digit)] = False
        images, labels = images[torch.from_numpy(keep)], labels[keep]
    labels = torch.from_numpy(labels)
    text_encoder, unet = build_networks(size)
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    # OneCycleLR divides by zero when the warm-up ends exactly at step 0 (pct_start * steps == 1,
    # i.e. steps=20); a slightly longer warm-up gives the same one-step warm-up there.
    pct_start = 0.05 if 0.05 * steps != 1 else 0.06
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
    abar = alphas_cumprod_from_config(SD1_SCHEDULER_CONFIG).to(torch.float32)
    model = DigitsModel(text_encoder, unet, size=size)  # for its tokenizer
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    text_encoder.train(); unet.train()
    text_encoder.requires_grad_(True); unet.requires_grad_(True)
    start, losses = time.time(), []
    for step in tqdm(range(steps), desc="training digits", disable=not progress):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x0, y = images[idx], labels[idx]
        template = torch.randint(0, len(TEMPLATES), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < dropout
        prompts = ["" if d else TEMPLATES[k].format(DIGIT_NAMES[c]) for d, k, c in zip(drop, template, y)]
        t = torch.randint(0, len(abar), (batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = unet(zt, t, encoder_hidden_states=text_encoder(model.tokenizer(prompts))).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step()
        ema_update(((ema_text, text_encoder), (ema_unet, unet)), ema_decay, step)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TrainingDivergedError(f"training diverged: the loss became {losses[-1]} at step {step + 1} of "
                                        f"{steps} (lr {lr:g}); nothing was saved; try a smaller --lr (default 1e-3)")
    bad = [name for net in (ema_text, ema_unet) for name, p in net.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDivergedError(f"training diverged: {len(bad)} weight tensor(s) hold NaN/inf (e.g. {bad[0]}); "
                                    "nothing was saved; try a smaller --lr (default 1e-3)")
    seconds = time.time() - start
    info = {"train_steps": steps, "batch": batch, "lr": lr, "prompt_dropout": dropout, "ema_decay": ema_decay,
            "seed": seed, "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
            "train_images": len(images), "holdout_per_digit": holdout_per_digit, "holdout_seed": HOLDOUT_SEED,
            "final_loss_avg100": round(sum(losses[-100:]) / min(100, len(losses)), 4)}
    return DigitsModel(ema_text, ema_unet, size=size), info


def ema_update(pairs: Sequence[tuple[torch.nn.Module, torch.nn.Module]], ema_decay: float, step: int) -> None:
    """EMA of the weights with warm-up: ``decay = min(ema_decay, (1 + step) / (10 + step))``."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for ema, live in pairs:
            for pe, pl in zip(ema.parameters(), live.parameters()):
                pe.lerp_(pl, 1 - decay)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: validate everything, claim ``--out``, train, save; a clean message and exit code 2 for a
    bad argument, a second trainer on the same folder, or a diverged run; 1 if the model could be saved nowhere."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite.models.train_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="training steps, >= 1 (default 2500)")
    parser.add_argument("--batch", type=int, default=128, help="batch size, 1..65536 (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, in (0, 1] (default 1e-3)")
    parser.add_argument("--dropout", type=float, default=0.12,
                        help="probability of dropping the prompt, in [0, 1) (default 0.12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, 0..2**64-1 (default 0)")
    parser.add_argument("--holdout-per-digit", type=int, default=0, metavar="N",
                        help="keep N dataset images of each digit out of training (cfginv_lite.data.heldout_indices; "
                             "default 0: train on all 1,797, as the shipped weights do)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder to write digits.safetensors and digits.json to (default: ./{DEFAULT_OUT} in "
                             "the current directory; load it with load_model('digits', weights_dir=DIR)). "
                             f"The shipped weights ({WEIGHTS_DIR}) are used only with --out pointing there and --force")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing weights in --out (including the package's shipped weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return _main(parser, argv)  # Ctrl-C propagates (the claim on --out released): see run()


def run(argv: Sequence[str] | None = None) -> int:
    """What ``python -m cfginv_lite.models.train_digits`` runs: :func:`main`, with Ctrl-C (while
    checking, loading the data or training) a one-line message and exit code 130, no traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("python -m cfginv_lite.models.train_digits: interrupted; nothing was saved", file=sys.stderr)
        return 130


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:  # everything that can be checked is checked before the (long) training starts
        settings = check_train_args(args.steps, args.batch, args.lr, args.dropout, seed=args.seed,
                                    holdout_per_digit=args.holdout_per_digit)
    except ValueError as err:
        parser.error(str(err))
    code, path = train_into_folder(parser, args.out, WEIGHT_FILES, force=args.force, protected=(WEIGHTS_DIR,),
                                   train=lambda: train(**settings, progress=not args.no_progress))
    if path is not None and path.parent.resolve() != WEIGHTS_DIR.resolve():
        print(f"load it with: load_model('digits', weights_dir={str(path.parent)!r})", file=sys.stderr)
    return code


def train_into_folder(parser: argparse.ArgumentParser, out: Any, files: Sequence[str], *, force: bool,
                      protected: Sequence[Path], train: Any, prefix: str = DEFAULT_OUT) -> tuple[int, Path | None]:
    """The trainers' common command-line path: check and claim ``--out``, ``train()``, save.

    ``train`` returns ``(model, info)``. A bad ``--out`` (or a second trainer on it) is a
    ``parser.error`` (exit 2) before any training; a diverged run exits 2; a model that could be
    saved nowhere exits 1 (:func:`_save_or_rescue` tries a fresh folder named after ``prefix``).
    Returns the exit code and the saved weights' path (None when nothing was saved).
    """
    try:
        folder = check_output_dir(out, files, what="--out folder", force=force, protected=protected)
        claim = _OutClaim(folder)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    with claim:
        try:  # files that appeared between the check and the claim
            check_output_dir(folder, files, what="--out folder", force=force, protected=protected)
        except OutputPathError as err:
            parser.error(str(err))
        try:
            model, info = train()
        except TrainingDivergedError as err:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 2, None
        try:
            path = _save_or_rescue(model, folder, info, force, prefix=prefix)
        except OSError as err:
            print(f"{parser.prog}: error: {err}", file=sys.stderr)
            return 1, None
    print(f"saved {path}: {info}")
    return 0, path


class _OutClaim:
    """Claim ``--out`` for this trainer: create the folder and lock a file in it, atomically.

    With ``fcntl`` (Linux, macOS) the lock is ``flock`` on :data:`LOCK_NAME`, which the kernel
    releases when the process dies, so a killed trainer never blocks the next one; elsewhere
    the lock file is created exclusively (``O_EXCL``) and a stale one must be deleted by hand.
    Used as a context manager: the lock file, and the folder if this claim created it and it
    is still empty, are removed on exit.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.lock = out / LOCK_NAME
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            fcntl = None
        busy = (f"another trainer is writing to the --out folder {str(out)!r} (it holds {str(self.lock)!r}); "
                "wait for it to finish, or choose another folder")
        if fcntl is None:  # pragma: no cover
            try:
                self.fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise OutputPathError(busy + " (delete the lock file if no trainer is running)") from None
            return
        self.fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process (or open file) holds it
            os.close(self.fd)
            self._forget_folder()
            raise OutputPathError(busy) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _forget_folder(self) -> None:
        if self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only if empty

    def __enter__(self) -> "_OutClaim":
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.lock)  # while still locked: a waiting trainer then finds the files, or nothing
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self._forget_folder()


def _save_or_rescue(model: Any, out: Path, info: dict[str, Any], force: bool, prefix: str = DEFAULT_OUT) -> Path:
    """Save to ``out``; if that fails now (folder removed, disk full, file created meanwhile), save elsewhere.

    Any failure of the save counts (safetensors reports a full disk as its own
    ``SafetensorError``, not an ``OSError``); only when the working directory and the temp
    folder fail too does this raise, with every reason in the message. ``model`` is anything
    with ``save(directory, metadata=, overwrite=)`` (the mini-sd trainer reuses this).
    """
    reasons = []
    try:
        return model.save(out, metadata=info, overwrite=force)
    except Exception as err:  # noqa: BLE001 (OSError, ValueError, FileExistsError, SafetensorError)
        reasons.append(f"{str(out)!r}: {err}")
        print(f"could not save to {str(out)!r} ({err}); saving to a new folder instead", file=sys.stderr)
    for parent in (Path.cwd(), Path(tempfile.gettempdir())):
        rescue = None
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"{prefix}-rescued-", dir=parent))
            return model.save(rescue, metadata=info)
        except Exception as err:  # noqa: BLE001
            reasons.append(f"{str(rescue or parent)!r}: {err}")
            if rescue is not None:
                with contextlib.suppress(OSError):
                    rescue.rmdir()  # an empty rescue folder helps nobody
            continue
    raise OSError("could not save the trained model anywhere (" + "; ".join(reasons) + ")")


if __name__ == "__main__":
    raise SystemExit(run())
