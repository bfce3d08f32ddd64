"""The online replay buffer: an empty transition buffer filled by interacting with a gymnasium env."""

from __future__ import annotations

import numpy as np

from policylab.datamodules.transition_base import TransitionDataModule
from policylab.datamodules.transitions import TransitionBuffer
from policylab.envs.make import make_env
from policylab.envs.scores import reference_scores


class ReplayBufferDataModule(TransitionDataModule):
    """A replay buffer for online RL (SAC), empty at the start and filled by the
    :class:`~policylab.callbacks.EnvInteraction` callback; batches are sampled uniformly from
    what has been collected. Observations and rewards are stored raw. The collected rows are
    saved in every checkpoint, so a resumed run continues with its buffer.

    Args:
        env_id: the gymnasium env to learn in (``Hopper-v5``).
        capacity: rows kept; older rows are overwritten beyond it (SAC's 1M).
        batch_size: transitions per gradient step.
        val_batches: batches drawn for ``validate``/``test`` diagnostics.
        seed: seed of the sampling generator (default: derived from the global seed and rank).
        checkpoint_rows: save the collected rows in checkpoints. False keeps a checkpoint to the
            networks, optimizers and counters (a few MB however long the run, small enough to carry
            between machines); a run resumed from one refills the buffer with its current policy
            (:class:`~policylab.callbacks.EnvInteraction`).
    """

    def __init__(
        self,
        env_id: str,
        capacity: int = 1_000_000,
        batch_size: int = 256,
        val_batches: int = 10,
        seed: int | None = None,
        checkpoint_rows: bool = True,
    ) -> None:
        super().__init__(batch_size, val_batches, seed)
        self.checkpoint_rows = checkpoint_rows
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.save_hyperparameters()
        self._env_id, self.capacity = env_id, capacity

    def _prepare(self) -> dict:
        env = make_env(self._env_id)
        obs_dim = int(np.prod(env.observation_space.shape))
        action_dim = int(np.prod(env.action_space.shape))
        max_action = float(np.max(env.action_space.high))
        env.close()
        return {
            "buffer": TransitionBuffer(obs_dim=obs_dim, action_dim=action_dim, capacity=self.capacity),
            "obs_mean": np.zeros(obs_dim, np.float32),
            "obs_std": np.ones(obs_dim, np.float32),
            "env_id": self._env_id,
            "ref_scores": reference_scores(self._env_id),
            "max_action": max_action,
            "reward_transform": (1.0, 1.0, 0.0),
        }
