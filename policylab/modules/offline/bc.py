"""Behaviour cloning (BC) and filtered behaviour cloning (%BC), the imitation baselines of offline RL.

- BC (Pomerleau, "Efficient Training of Artificial Neural Networks for Autonomous Navigation",
  Neural Computation 1991): a deterministic actor ``max_action * tanh(MLP(s))`` regressed onto
  the dataset's actions, ``min mean (pi(s) - a)^2``.
- %BC (Chen et al., "Decision Transformer: Reinforcement Learning via Sequence Modeling",
  NeurIPS 2021, who report 10%BC; settings of CORL's ``any_percent_bc.py`` and its ``bc_10``
  configs): the same regression on the trajectories with the highest returns only,
  ``top_fraction`` of them (0.1).

The filter is part of the method, applied once when training is set up: :func:`top_trajectory_rows`
splits the datamodule's buffer into trajectories and ranks them by return, and the buffer keeps
only their rows (so the datamodule's batches and diagnostics come from them).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.losses.bc import bc_mse_loss
from policylab.modules.base import RLModule, adam
from policylab.nn import DeterministicActor

_FILTERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # buffer -> (top_fraction, return_discount)


def top_trajectory_rows(
    obs: Tensor,
    next_obs: Tensor,
    reward: Tensor,
    terminal: Tensor,
    timeout: Tensor,
    top_fraction: float,
    return_discount: float = 1.0,
) -> Tensor:
    """Row indices (in data order) of the ``max(1, int(top_fraction * N))`` trajectories with the
    highest return ``sum_t return_discount^t * r_t`` among the ``N`` trajectories of the rows.

    A trajectory ends at a row with ``terminal`` or ``timeout`` set, at a row whose ``next_obs`` is
    not the next row's ``obs`` (an episode cut where the data dropped its time-limit row), and at
    the last row. Ties keep the earlier trajectory. ``return_discount=1`` ranks by the episode
    return, as the Decision Transformer paper and CORL's 10%BC configs do (CORL's script default
    discounts with 0.99).
    """
    n = reward.shape[0]
    ends = (terminal > 0) | (timeout > 0)
    if n > 1:
        ends[:-1] |= ~torch.isclose(next_obs[:-1], obs[1:], rtol=1e-5, atol=1e-6).all(dim=1)
    ends[-1] = True
    trajectory = torch.cumsum(ends.long(), 0) - ends.long()  # id of each row's trajectory
    count = int(trajectory[-1]) + 1
    starts = torch.zeros(count, dtype=torch.long, device=reward.device)
    starts[1:] = torch.nonzero(ends[:-1]).squeeze(1) + 1
    position = torch.arange(n, device=reward.device) - starts[trajectory]
    weights = torch.full((n,), float(return_discount), dtype=torch.float64, device=reward.device).pow(position)
    returns = torch.zeros(count, dtype=torch.float64, device=reward.device)
    returns.index_add_(0, trajectory, weights * reward.double())
    keep = torch.argsort(-returns, stable=True)[: max(1, int(top_fraction * count))]
    return torch.nonzero(torch.isin(trajectory, keep)).squeeze(1)


class BC(RLModule):
    """BC with CORL's settings (actor 256-256 with tanh, Adam lr 3e-4, batch 256 in the config);
    ``top_fraction < 1`` makes it %BC (CORL's ``frac``, 0.1 in ``configs/filtered_bc_hopper.yaml``).

    The filter changes the datamodule's buffer in place when training is set up; the observation
    statistics stay those of the whole dataset (CORL computes them on the kept trajectories).

    One training step: the actor, the only (counted) optimizer.
    """

    counted_optimizer = "actor"
    compiled_losses = ("actor_loss",)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        top_fraction: float = 1.0,
        return_discount: float = 1.0,
        actor_lr: float = 3e-4,
        actor_hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must lie in (0, 1] (1 is plain BC), got {top_fraction}")
        super().__init__(obs_dim, max_action, 1, compile, compile_mode, cuda_graph)
        self.actor = DeterministicActor(obs_dim, action_dim, max_action, actor_hidden_dims)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.top_fraction < 1.0:
            self.keep_top_trajectories(getattr(self.trainer.datamodule, "buffer", None))

    def keep_top_trajectories(self, buffer) -> None:
        """%BC's data filter: reduce ``buffer`` (a :class:`~policylab.datamodules.TransitionBuffer`
        of offline rows) to the rows of :func:`top_trajectory_rows`, once per buffer."""
        hp = self.hparams
        settings = (hp.top_fraction, hp.return_discount)
        if buffer is None or not hasattr(buffer, "initial_size"):
            raise TypeError("BC with top_fraction < 1 needs a datamodule with a transition buffer (an offline dataset)")
        if buffer in _FILTERED:
            if _FILTERED[buffer] != settings:
                raise ValueError(
                    f"this datamodule's data was already filtered with (top_fraction, return_discount) "
                    f"{_FILTERED[buffer]}; give the model a fresh datamodule for {settings}"
                )
            return
        if buffer.appended:
            raise ValueError("BC filters offline data only; this buffer already holds transitions collected online")
        data = buffer.all()
        rows = top_trajectory_rows(
            data.obs, data.next_obs, data.reward, data.terminal, data.timeout, hp.top_fraction, hp.return_discount
        ).to(buffer.device)
        buffer.data[: len(rows)] = buffer.data[rows]
        buffer.size = buffer.initial_size = len(rows)
        _FILTERED[buffer] = settings

    def named_optimizers(self):
        return {"actor": adam(self.actor.parameters(), self.hparams.actor_lr)}

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs)

    def actor_loss(self, obs: Tensor, action: Tensor) -> Tensor:
        return bc_mse_loss(self.actor(obs), action)

    def update(self, batch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        actor_loss = self.actor_loss(batch.obs, batch.action)
        self.step("actor", actor_loss)
        return {"train/actor_loss": actor_loss} if log else {}
