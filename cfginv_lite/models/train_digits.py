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
checked before training starts, and a model whose folder became unwritable during training
is saved to a new folder instead of being lost.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..validation import check_int, check_real, check_seed
from ..data import DIGIT_NAMES, load_digit_images
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config
from ..outputs import check_output_dir
from .digits import WEIGHT_FILES, WEIGHTS_DIR, DigitsModel, build_networks

TEMPLATES = ("a handwritten digit {}", "the digit {}", "a handwritten {}", "the number {}")
DEFAULT_OUT = "digits_weights"  # relative: a new folder in the working directory, never the package's


def check_train_args(steps: Any = 2500, batch: Any = 128, lr: Any = 1e-3, dropout: Any = 0.12,
                     ema_decay: Any = 0.999, seed: Any = 0, size: Any = 8) -> dict[str, Any]:
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
    )


def _check_size(size: Any) -> int:
    size = check_int("size", size, minimum=4, maximum=64)
    if size % 2:  # the UNet halves the side once
        raise ValueError(f"size must be an even integer in [4, 64], got {size}")
    return size


def train(steps: int = 2500, batch: int = 128, lr: float = 1e-3, dropout: float = 0.12,
          ema_decay: float = 0.999, seed: int = 0, size: int = 8, progress: bool = True) -> tuple[DigitsModel, dict]:
    """Train a digits model; returns it (EMA weights) and the run's metadata. Arguments: :func:`check_train_args`."""
    args = check_train_args(steps, batch, lr, dropout, ema_decay, seed, size)
    steps, batch, lr, dropout, ema_decay, seed, size = (args[k] for k in (
        "steps", "batch", "lr", "dropout", "ema_decay", "seed", "size"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digit_images(size)
    labels = torch.from_numpy(labels)
    text_encoder, unet = build_networks(size)
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
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
    seconds = time.time() - start
    info = {"train_steps": steps, "batch": batch, "lr": lr, "prompt_dropout": dropout, "ema_decay": ema_decay,
            "seed": seed, "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
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
    """Command line: validate everything, train, save; a clean message and exit code 2 for a bad argument."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite.models.train_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="training steps, >= 1 (default 2500)")
    parser.add_argument("--batch", type=int, default=128, help="batch size, 1..65536 (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, in (0, 1] (default 1e-3)")
    parser.add_argument("--dropout", type=float, default=0.12,
                        help="probability of dropping the prompt, in [0, 1) (default 0.12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, 0..2**64-1 (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder to write digits.safetensors and digits.json to (default: ./{DEFAULT_OUT} in "
                             "the current directory; load it with load_model('digits', weights_dir=DIR)). "
                             f"The shipped weights ({WEIGHTS_DIR}) are used only with --out pointing there and --force")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing weights in --out (including the package's shipped weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:  # everything that can be checked is checked before the (long) training starts
        settings = check_train_args(args.steps, args.batch, args.lr, args.dropout, seed=args.seed)
        out = check_output_dir(args.out, WEIGHT_FILES, what="--out folder", force=args.force,
                               protected=(WEIGHTS_DIR,))
    except (ValueError, OSError) as err:
        parser.error(str(err))
    model, info = train(**settings, progress=not args.no_progress)
    path = _save_or_rescue(model, out, info, args.force)
    print(f"saved {path}: {info}")
    if out.resolve() != WEIGHTS_DIR.resolve():
        print(f"load it with: load_model('digits', weights_dir={str(path.parent)!r})", file=sys.stderr)
    return 0


def _save_or_rescue(model: Any, out: Path, info: dict[str, Any], force: bool, prefix: str = DEFAULT_OUT) -> Path:
    """Save to ``out``; if that fails now (folder removed, disk full, file created meanwhile), save elsewhere.

    ``model`` is anything with ``save(directory, metadata=, overwrite=)`` (the mini-sd trainer reuses this).
    """
    try:
        return model.save(out, metadata=info, overwrite=force)
    except (OSError, ValueError) as err:
        print(f"could not save to {str(out)!r} ({err}); saving to a new folder instead", file=sys.stderr)
    for parent in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            rescue = Path(tempfile.mkdtemp(prefix=f"{prefix}-rescued-", dir=parent))
            return model.save(rescue, metadata=info)
        except (OSError, ValueError):
            continue
    raise OSError("could not save the trained model anywhere (working directory and temp folder both failed)")


if __name__ == "__main__":
    raise SystemExit(main())
