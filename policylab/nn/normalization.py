"""Observation normalization kept as module buffers, so it travels inside checkpoints."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ObservationNormalizer(nn.Module):
    """``(obs - mean) / std`` with statistics stored as buffers (identity until set)."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @torch.no_grad()
    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"observation statistics have shape {tuple(mean.shape)}/{tuple(std.shape)}, "
                f"the model expects ({self.mean.numel()},)"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            column = int(torch.argmin((torch.isfinite(mean) & torch.isfinite(std) & (std > 0)).int()))
            raise ValueError(
                f"observation statistics of dimension {column} are unusable (mean {mean[column].item():.4g}, "
                f"std {std[column].item():.4g}): the mean must be finite and the std finite and positive"
            )
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, obs: Tensor) -> Tensor:
        return (obs - self.mean) / self.std
