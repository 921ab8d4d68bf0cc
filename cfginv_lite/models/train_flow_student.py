"""Distil the guidance-embedded student of the flow twin (``load_model("digits-flow-student")``), on CPU, seeded.

    python -m cfginv_lite.models.train_flow_student --out my_student
    # then: load_flow_student_model(weights_dir="my_student")

Meng et al. 2023, "On Distillation of Guided Diffusion Models", stage one (eq. 4-5): for each
training sample draw ``w ~ U[1, 8]``, ``t ~ U[0, 1]``, ``noise ~ N(0, I)``, a training-side digit
``x0`` and one of its prompts ``c``; form ``z_t = (1 - t) x0 + t noise`` (SD3 convention) and
minimise ``|v_s(z_t, t, c, w) - (v_u + w (v_c - v_u))|^2``, the teacher's two branches (prompt
``c`` and ``""``) evaluated in one batched call without gradients. The teacher is the shipped
``digits-flow``; the student starts from its weights (:func:`.flow_student.student_from_teacher`).
Only the **training side** of the digits split is used, so the held-out digits stay unseen. An
EMA of the weights is saved; output safety is :mod:`.train_digits`'s (nothing replaced without
``--force``, a lock on ``--out``, a rescue folder if saving fails).
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
from .digits import WEIGHTS_DIR
from .flow_digits import FLOW_WEIGHT_FILES, TIME_LABEL_SCALE, flow_metadata, load_flow_digits_model
from .flow_student import GUIDANCE_LABEL_SCALE, GUIDANCE_RANGE, FlowStudentModel, student_forward, student_from_teacher
from .train_digits import TEMPLATES, TrainingDivergedError, check_train_args, ema_update, train_into_folder

DEFAULT_OUT = "digits_flow_student_weights"
HOLDOUT_PER_DIGIT = 50


def distil_student(steps: int = 900, batch: int = 96, lr: float = 5e-4, ema_decay: float = 0.995, seed: int = 0,
                   progress: bool = True) -> tuple[FlowStudentModel, dict[str, Any]]:
    """Distil the student from the shipped digits-flow teacher; returns it (EMA weights) and its metadata."""
    args = check_train_args(steps, batch, lr, 0.0, ema_decay, seed, 8, HOLDOUT_PER_DIGIT)
    steps, batch, lr, ema_decay, seed = (args[k] for k in ("steps", "batch", "lr", "ema_decay", "seed"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_digit_images(8)
    keep = np.ones(len(labels), dtype=bool)
    keep[heldout_indices(HOLDOUT_PER_DIGIT)] = False
    images, labels = images[torch.from_numpy(keep)], torch.from_numpy(labels[keep])
    teacher = load_flow_digits_model()
    text_encoder, unet = student_from_teacher(teacher)
    text_encoder.requires_grad_(False)  # the prompt embeddings stay the teacher's; only the UNet learns w
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.06)
    ema_unet = copy.deepcopy(unet)
    null = teacher.encode_prompt([""])
    unet.train()
    unet.requires_grad_(True)
    start, losses = time.time(), []
    low, high = GUIDANCE_RANGE
    for step in tqdm(range(steps), desc="distilling digits-flow-student", disable=not progress):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x0, y = images[idx], labels[idx]
        template = torch.randint(0, len(TEMPLATES), (batch,), generator=gen)
        w = low + (high - low) * torch.rand(batch, generator=gen)
        t = torch.rand(batch, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        zt = (1 - tt) * x0 + tt * noise
        with torch.no_grad():
            cond = teacher.encode_prompt([TEMPLATES[k].format(DIGIT_NAMES[c]) for k, c in zip(template, y)])
            v = teacher.unet(torch.cat([zt, zt]), torch.cat([t, t]) * TIME_LABEL_SCALE,
                             encoder_hidden_states=torch.cat([null.expand_as(cond), cond])).sample
            v_u, v_c = v.chunk(2)
            target = v_u + w.view(-1, 1, 1, 1) * (v_c - v_u)
        loss = torch.nn.functional.mse_loss(student_forward(unet, zt, t, cond, w), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step()
        ema_update(((ema_unet, unet),), ema_decay, step)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise TrainingDivergedError(f"distillation diverged: the loss became {losses[-1]} at step {step + 1}; "
                                        "nothing was saved; try a smaller --lr")
    info = flow_metadata({"guidance_embedded": True, "guidance_range": list(GUIDANCE_RANGE),
                          "guidance_label_scale": GUIDANCE_LABEL_SCALE, "teacher": "digits-flow",
                          "objective": "Meng et al. 2023 stage one: |v_s(z,t,c,w) - (v_u + w (v_c - v_u))|^2",
                          "train_steps": steps, "batch": batch, "lr": lr, "ema_decay": ema_decay, "seed": seed,
                          "train_seconds": round(time.time() - start, 1), "torch_threads": torch.get_num_threads(),
                          "train_images": len(images), "holdout_per_digit": HOLDOUT_PER_DIGIT,
                          "holdout_seed": HOLDOUT_SEED,
                          "final_loss_avg50": round(sum(losses[-50:]) / min(50, len(losses)), 4)})
    return FlowStudentModel(text_encoder, ema_unet), info


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: check, claim ``--out``, distil, save (exit 2 on a bad argument or a diverged run)."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite.models.train_flow_student", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=900, help="distillation steps (default 900, ~6 min on one core)")
    parser.add_argument("--batch", type=int, default=96, help="batch size (default 96)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="overwrite existing weights in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:  # everything that can be checked is checked before the (long) training starts
        settings = check_train_args(args.steps, args.batch, args.lr, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    protected = (WEIGHTS_DIR, WEIGHTS_DIR / "digits_flow", WEIGHTS_DIR / "digits_flow_student")
    code, _ = train_into_folder(parser, args.out, FLOW_WEIGHT_FILES, force=args.force, protected=protected,
                                prefix=DEFAULT_OUT, train=lambda: distil_student(
                                    settings["steps"], settings["batch"], settings["lr"], seed=settings["seed"],
                                    progress=not args.no_progress))
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("train_flow_student: interrupted; nothing was saved", file=sys.stderr)
        raise SystemExit(130)
