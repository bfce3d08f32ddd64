"""A pairwise loss of the registry as a submodule: its hyperparameters checked once and its state
(BCO's reward shift) kept as buffers, so that checkpoints hold it with the weights. The offline
:class:`~policylab.modules.preference.DPO` holds one; online methods can hold one the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from policylab.losses.pairwise import PairStats, get_pairwise_loss


class PairwiseObjective(nn.Module):
    """``loss_type`` of :data:`~policylab.losses.pairwise.PAIRWISE_LOSSES` with ``loss_kwargs``
    (an unknown key or a bad value stops here, naming it). ``forward(stats, beta)`` gives the
    per-pair loss ``[B]``; in training mode a stateful loss also advances its buffers."""

    def __init__(self, loss_type: str, loss_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.loss_type = loss_type
        self.hyperparameters = self.entry.resolve(loss_kwargs)
        for name, value in self.entry.initial_state().items():
            self.register_buffer(name, value)

    @property
    def entry(self):
        """The registry entry (looked up by name, not stored: entries hold lambdas, and a module
        sent to ``ddp_spawn`` processes must pickle)."""
        return get_pairwise_loss(self.loss_type)

    @property
    def needs_reference(self) -> bool:
        return self.entry.reference

    def state(self) -> dict[str, Tensor]:
        return dict(self.named_buffers(recurse=False))

    def forward(self, stats: PairStats, beta: float) -> Tensor:
        loss, state = self.entry(stats, beta, self.hyperparameters, self.state() or None, update=self.training)
        if self.training:
            with torch.no_grad():
                for name, value in state.items():
                    getattr(self, name).copy_(value)
        return loss

    def extra_repr(self) -> str:
        return f"{self.loss_type}, {self.hyperparameters}"
