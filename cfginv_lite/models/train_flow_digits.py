"""Train the rectified-flow twin of the digits model (``load_model("digits-flow")``) reproducibly on CPU.

    python -m cfginv_lite.models.train_flow_digits --out my_flow_weights
    # then: load_flow_digits_model(weights_dir="my_flow_weights")

Conditional flow matching with the straight (rectified-flow) path, in the convention of Stable
Diffusion 3 (Esser et al. 2024, eq. 1-3; Lipman et al. 2022, "Flow Matching for Generative
Modeling", eq. 22-23; Liu et al. 2022, "Flow Straight and Fast", eq. 1)::

    t ~ U[0, 1],  noise ~ N(0, I),  z_t = (1 - t) x0 + t noise,  minimise |v_theta(z_t, t, c) - (noise - x0)|^2

Prompts are dropped with probability ``--dropout`` (the unconditional branch classifier-free
guidance needs), an EMA of the weights is saved, the seed is fixed. Only the **training side**
of the digits split is used (:func:`cfginv_lite.data.heldout_indices` ``(50)`` kept out), the same
1,297 images as ``load_model("digits-split")``, so its held-out digits are unseen by both twins.

The networks start from the digits-split epsilon model's weights (``--init split``, the default;
``--init scratch`` for random ones): the same architecture and training images, so the fine-tune
reuses features the twin would otherwise relearn, and it fits in minutes on one core. This is the
trainer of the shipped ``weights/digits_flow`` folder. Output safety is :mod:`.train_digits`'s
(nothing replaced without ``--force``, a lock on ``--out``, a rescue folder if saving fails).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import DIGIT_NAMES, HOLDOUT_SEED, heldout_indices, load_digit_images
from ..validation import check_choice
from .digits import SPLIT_WEIGHTS_DIR, WEIGHTS_DIR, build_networks, load_digits_model
from .flow_digits import FLOW_WEIGHT_FILES, TIME_LABEL_SCALE, FlowDigitsModel, flow_metadata
from .train_digits import TEMPLATES, TrainingDivergedError, check_train_args, ema_update, train_into_folder

DEFAULT_OUT = "digits_flow_weights"
HOLDOUT_PER_DIGIT = 50


def train_flow(steps: int = 800, batch: int = 128, lr: float = 5e-4, dropout: float = 0.12,
               ema_decay: float = 0.995, seed: int = 0, init: str = "split",
               progress: bool = True) -> tuple[FlowDigitsModel, dict[str, Any]]:
    """Train the flow twin on the training side of the split; returns it (EMA weights) and its metadata."""
    args = check_train_args(steps, batch, lr, dropout, ema_decay, seed, 8, HOLDOUT_PER_DIGIT)
    steps, batch, lr, dropout, ema_decay, seed = (args[k] for k in ("steps", "batch", "lr", "dropout",
                                                                     "ema_decay", "seed"))
    check_choice("init", init, ("split", "scratch"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digit_images(8)
    keep = np.ones(len(labels), dtype=bool)
    keep[heldout_indices(HOLDOUT_PER_DIGIT)] = False
    images, labels = images[torch.from_numpy(keep)], torch.from_numpy(labels[keep])
    if init == "split":
        base = load_digits_model(weights_dir=SPLIT_WEIGHTS_DIR)
        text_encoder, unet = base.text_encoder, base.unet
    else:
        text_encoder, unet = build_networks(8)
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    pct_start = 0.05 if 0.05 * steps != 1 else 0.06
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
    model = FlowDigitsModel(text_encoder, unet)  # for its tokenizer
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    text_encoder.train(); unet.train()
    text_encoder.requires_grad_(True); unet.requires_grad_(True)
    start, losses = time.time(), []
    for step in tqdm(range(steps), desc="training digits-flow", disable=not progress):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x0, y = images[idx], labels[idx]
        template = torch.randint(0, len(TEMPLATES), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < dropout
        prompts = ["" if d else TEMPLATES[k].format(DIGIT_NAMES[c]) for d, k, c in zip(drop, template, y)]
        t = torch.rand(batch, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        zt = (1 - tt) * x0 + tt * noise
        pred = unet(zt, t * TIME_LABEL_SCALE, encoder_hidden_states=text_encoder(model.tokenizer(prompts))).sample
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step()
        ema_update(((ema_text, text_encoder), (ema_unet, unet)), ema_decay, step)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TrainingDivergedError(f"training diverged: the loss became {losses[-1]} at step {step + 1}; "
                                        "nothing was saved; try a smaller --lr")
    info = flow_metadata({"train_steps": steps, "batch": batch, "lr": lr, "prompt_dropout": dropout,
                          "ema_decay": ema_decay, "seed": seed, "init": init,
                          "train_seconds": round(time.time() - start, 1), "torch_threads": torch.get_num_threads(),
                          "train_images": len(images), "holdout_per_digit": HOLDOUT_PER_DIGIT,
                          "holdout_seed": HOLDOUT_SEED,
                          "final_loss_avg100": round(sum(losses[-100:]) / min(100, len(losses)), 4)})
    return FlowDigitsModel(ema_text, ema_unet), info


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: check, claim ``--out``, train, save (exit 2 on a bad argument or a diverged run)."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite.models.train_flow_digits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="training steps (default 800, ~10 min on one core)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--init", default="split", choices=("split", "scratch"),
                        help="start from the digits-split epsilon weights (default) or from random weights")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="overwrite existing weights in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:  # everything that can be checked is checked before the (long) training starts
        settings = check_train_args(args.steps, args.batch, args.lr, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    code, _ = train_into_folder(parser, args.out, FLOW_WEIGHT_FILES, force=args.force,
                                protected=(WEIGHTS_DIR, WEIGHTS_DIR / "digits_flow"), prefix=DEFAULT_OUT,
                                train=lambda: train_flow(settings["steps"], settings["batch"], settings["lr"],
                                                         seed=settings["seed"], init=args.init,
                                                         progress=not args.no_progress))
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("train_flow_digits: interrupted; nothing was saved", file=sys.stderr)
        raise SystemExit(130)
