"""Target networks."""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False``: a target network."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``theta_target <- (1 - tau) * theta_target + tau * theta`` as one fused ``_foreach_lerp_``."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
