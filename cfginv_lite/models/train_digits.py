"""Train the embedded digits model reproducibly on CPU.

    python -m cfginv_lite.models.train_digits --steps 2500 --out cfginv_lite/models/weights

Epsilon-prediction objective (Ho et al. 2020, eq. 14) on the SD 1.x schedule: sample
``t ~ U{0..999}``, ``z_t = a_t x0 + b_t eps``, minimise ``|eps - eps_theta(z_t, t, c)|^2``.
Prompts are dropped (replaced by ``""``) with probability ``--dropout`` so that the same
network also learns the unconditional branch classifier-free guidance needs. An EMA of
the weights is what gets saved. Fixed seed; the run is deterministic on CPU.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from tqdm.auto import tqdm

from ..data import DIGIT_NAMES, load_digit_images
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config
from .digits import WEIGHTS_DIR, DigitsModel, build_networks

TEMPLATES = ("a handwritten digit {}", "the digit {}", "a handwritten {}", "the number {}")


def train(steps: int = 2500, batch: int = 128, lr: float = 1e-3, dropout: float = 0.12,
          ema_decay: float = 0.999, seed: int = 0, size: int = 8, progress: bool = True) -> tuple[DigitsModel, dict]:
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
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_text, text_encoder), (ema_unet, unet)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        losses.append(loss.item())
    seconds = time.time() - start
    info = {"train_steps": steps, "batch": batch, "lr": lr, "prompt_dropout": dropout, "ema_decay": ema_decay,
            "seed": seed, "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
            "final_loss_avg100": round(sum(losses[-100:]) / min(100, len(losses)), 4)}
    return DigitsModel(ema_text, ema_unet, size=size), info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    args = parser.parse_args(argv)
    model, info = train(args.steps, args.batch, args.lr, args.dropout, seed=args.seed)
    path = model.save(args.out, metadata=info)
    print(f"saved {path}: {info}")


if __name__ == "__main__":
    main()
