"""Inversion on a guidance-distilled student (``digits-flow-student``) vs its CFG teacher (``digits-flow``).

Measured the same way by ``benchmarks/flow_student.py``, ``tests/test_flow_student.py`` and notebook 05b:

* :func:`velocity_match`: how closely the student (Meng et al. 2023, "On Distillation of Guided Diffusion
  Models", stage one) reproduces the teacher's guided velocity ``v_u + w (v_c - v_u)`` (Ho & Salimans
  2022, eq. 6) on held-out ``z_t``; per-image relative error, next to the untrained baseline (the
  student's starting point, the teacher's conditional branch ``v_c`` alone).
* :func:`student_round_trips`: reversed Euler inversion + Euler regeneration of held-out digits
  (:func:`cfginv_lite.flow.invert_euler`) on the student at embedded ``w`` and on the teacher at CFG ``w``;
  the student's only analogue of negative-prompt inversion (Miyake et al. 2023, "Negative-prompt
  Inversion", arXiv:2305.16807: invert at CFG 1, regenerate at CFG ``w`` with the source prompt as the
  negative prompt, which on a CFG model makes the regeneration velocity ``v_c``): invert at embedded 1,
  regenerate at embedded ``w``; and negative-prompt inversion on the teacher itself.
* :func:`ignores_unconditional`: null-text inversion (Mokady et al. 2023, eq. 3-4) optimises the
  unconditional embedding; the student's guided velocity does not read it (no unconditional branch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .data import digit_prompt, split_digit_set
from .flow import flow_grid, guided_velocity, invert_euler, sample_euler
from .guidance import Guidance, make_guidance
from .methods import NFECounter
from .metrics import image_rmse
from .validation import check_int


def _rel(v: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    return ((v - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1).clamp_min(1e-12)).numpy()


@torch.no_grad()
def velocity_match(student: Any, teacher: Any, images: torch.Tensor, labels: Sequence[int],
                   scales: Sequence[float] = (1.0, 3.0, 7.5), seed: int = 0) -> dict[float, dict[str, np.ndarray]]:
    """Per image, at seeded ``t ~ U(0, 1)`` and noise: ``|v_s - v_w| / |v_w|`` (``"student"``) and
    ``|v_c - v_w| / |v_w|`` (``"baseline"``, the untrained student), for each scale ``w``."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(len(images), generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    zt = (1 - t.view(-1, 1, 1, 1)) * images + t.view(-1, 1, 1, 1) * noise
    prompts = [digit_prompt(d) for d in labels]
    cond, null = teacher.encode_prompt(prompts), teacher.encode_prompt([""] * len(prompts))
    v = teacher.predict_velocity(torch.cat([zt, zt]), torch.cat([t, t]), torch.cat([null, cond]))
    v_u, v_c = v.chunk(2)
    out = {}
    for w in scales:
        target = v_u + w * (v_c - v_u)
        v_s = student.predict_velocity(zt, t, student.encode_prompt(prompts), torch.full((len(zt),), float(w)))
        out[float(w)] = {"student": _rel(v_s, target), "baseline": _rel(v_c, target)}
    return out


def _round_trip(model: Any, images: torch.Tensor, times: list[float], g_inv: Guidance, g_gen: Guidance
                ) -> tuple[np.ndarray, int]:
    count = NFECounter()
    z = invert_euler(model, images, times, g_inv, progress=False, callback=count)
    back = model.decode(sample_euler(model, z, times, g_gen, progress=False))
    return image_rmse(back, images).numpy(), count.nfe


@dataclass(frozen=True)
class StudentRoundTrips:
    """Per-image errors (RMSE of the regenerated image) and inversion NFE per image, keyed by scale."""

    teacher: dict[float, np.ndarray]       # CFG w for inversion and regeneration
    student: dict[float, np.ndarray]       # embedded w for both
    student_from1: dict[float, np.ndarray]  # embedded 1 for inversion, embedded w for regeneration
    teacher_npi: dict[float, np.ndarray]   # negative-prompt inversion on the teacher
    nfe: dict[str, int]                    # inversion NFE per image: "teacher", "student"
    steps: int


@torch.no_grad()
def student_round_trips(student: Any, teacher: Any, *, per_digit: int = 10, steps: int = 10,
                        scales: Sequence[float] = (1.0, 3.0, 7.5), seed: int = 0) -> StudentRoundTrips:
    """Invert ``10 * per_digit`` held-out digits on both models at each scale (see the module docstring)."""
    images, labels = split_digit_set("heldout", check_int("per_digit", per_digit, minimum=1), seed=seed)
    prompts, times = [digit_prompt(d) for d in labels], flow_grid(check_int("steps", steps, minimum=1))
    res: dict[str, dict[float, np.ndarray]] = {k: {} for k in ("teacher", "student", "student_from1", "teacher_npi")}
    nfe = {}
    s1 = make_guidance(student, prompts, 1.0)
    t1 = make_guidance(teacher, prompts, 1.0)
    for w in (float(s) for s in scales):
        gs, gt = make_guidance(student, prompts, w), make_guidance(teacher, prompts, w)
        res["teacher"][w], nfe["teacher"] = _round_trip(teacher, images, times, gt, gt)
        res["student"][w], nfe["student"] = _round_trip(student, images, times, gs, gs)
        res["student_from1"][w], _ = _round_trip(student, images, times, s1, gs)
        npi = make_guidance(teacher, prompts, w, negative_prompts=prompts)  # the source prompt as the negative
        res["teacher_npi"][w], _ = _round_trip(teacher, images, times, t1, npi)
    return StudentRoundTrips(**res, nfe=nfe, steps=steps)


@torch.no_grad()
def ignores_unconditional(student: Any, images: torch.Tensor, labels: Sequence[int], scale: float = 7.5,
                          seed: int = 0) -> float:
    """Largest change of the student's guided velocity when the unconditional embedding is replaced by
    random noise (0.0: nothing for null-text inversion to optimise)."""
    prompts = [digit_prompt(d) for d in labels]
    g = make_guidance(student, prompts, scale)
    noise = torch.randn(g.uncond.shape, generator=torch.Generator().manual_seed(seed))
    other = Guidance(cond=g.cond, uncond=noise * 10, scale=g.scale)
    v1, v2 = guided_velocity(student, images, 0.5, g), guided_velocity(student, images, 0.5, other)
    return float((v1 - v2).abs().max())


__all__ = ["StudentRoundTrips", "ignores_unconditional", "student_round_trips", "velocity_match"]
