"""Reconstruction metrics. Images are in ``[-1, 1]``; errors are reported in ``[0, 1]`` pixel units."""
from __future__ import annotations

import torch


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item root-mean-square difference, shape ``(B,)``, in the tensors' own units."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a.float() - b.float()).pow(2).flatten(1).mean(1).sqrt()


def image_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RMSE in ``[0, 1]`` pixel units of two ``[-1, 1]`` images (half the [-1,1] RMSE)."""
    return rmse(a, b) / 2


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-image PSNR in dB for ``[-1, 1]`` images: ``20 log10(1 / RMSE_[0,1])``."""
    return 20 * torch.log10(1.0 / image_rmse(a, b).clamp_min(eps))
