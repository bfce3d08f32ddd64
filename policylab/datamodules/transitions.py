"""From stored arrays to (s, a, r, s', terminal, timeout) transitions, and the tensor-resident buffer."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class TransitionBatch(NamedTuple):
    """A batch of transitions; ``terminal`` is 1 for true terminations only (no bootstrap)."""

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminal: Tensor
    timeout: Tensor


def build_transitions(arrays: dict[str, np.ndarray], max_episode_steps: int = 1000) -> dict[str, np.ndarray]:
    """Transitions from D4RL-layout arrays.

    With ``next_observations`` in the data every row is a transition. Without them, D4RL's
    ``qlearning_dataset`` rule applies: ``s'_i = s_{i+1}``, the row at a timeout (whose next row
    starts a new episode) and the last row are dropped. Files without ``timeouts`` mark an episode
    end every ``max_episode_steps`` steps since the last terminal, as D4RL does. Terminals and
    timeouts stay distinct: a timeout never stops bootstrapping.
    """
    n = len(arrays["observations"])
    terminals = np.asarray(arrays["terminals"]).astype(bool).reshape(n)
    if "timeouts" in arrays:
        timeouts = np.asarray(arrays["timeouts"]).astype(bool).reshape(n)
    else:
        # step index inside the current terminal-delimited segment; every max_episode_steps-th is a timeout
        starts = np.zeros(n, dtype=np.int64)
        starts[1:] = np.where(terminals[:-1], np.arange(1, n), 0)
        step = np.arange(n) - np.maximum.accumulate(starts)
        timeouts = (step % max_episode_steps) == max_episode_steps - 1
    obs = np.asarray(arrays["observations"], dtype=np.float32)
    if "next_observations" in arrays:
        keep = np.arange(n)
        next_obs = np.asarray(arrays["next_observations"], dtype=np.float32)
    else:
        keep = np.flatnonzero(~timeouts[:-1])
        next_obs = obs[keep + 1]
    return {
        "obs": obs[keep],
        "action": np.asarray(arrays["actions"], dtype=np.float32)[keep],
        "reward": np.asarray(arrays["rewards"], dtype=np.float32).reshape(n)[keep],
        "next_obs": next_obs,
        "terminal": terminals[keep].astype(np.float32),
        "timeout": timeouts[keep].astype(np.float32),
    }


def episode_returns(rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Undiscounted return of each episode (an episode ends at a terminal or a timeout; a last,
    unfinished episode counts too)."""
    ends = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool))
    if len(ends) == 0 or ends[-1] != len(rewards) - 1:
        ends = np.append(ends, len(rewards) - 1)
    cumulative = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
    return cumulative[ends + 1] - cumulative[np.concatenate([[0], ends[:-1] + 1])]


class TransitionBuffer:
    """Transitions in one ``[N, W]`` tensor on the training device; a batch is a single row gather.

    The fields are views into the gathered rows, so sampling costs one ``randint`` and one
    ``index_select`` on the device: no worker processes, no per-sample Python, no host copy.
    """

    def __init__(self, transitions: dict[str, np.ndarray]) -> None:
        obs, action = transitions["obs"], transitions["action"]
        self.obs_dim, self.action_dim = obs.shape[1], action.shape[1]
        columns = [
            obs,
            action,
            transitions["reward"][:, None],
            transitions["next_obs"],
            transitions["terminal"][:, None],
            transitions["timeout"][:, None],
        ]
        self.data = torch.from_numpy(np.concatenate(columns, axis=1).astype(np.float32))
        self._widths = [self.obs_dim, self.action_dim, 1, self.obs_dim, 1, 1]

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str) -> "TransitionBuffer":
        self.data = self.data.to(device)
        return self

    def _split(self, rows: Tensor) -> TransitionBatch:
        obs, action, reward, next_obs, terminal, timeout = torch.split(rows, self._widths, dim=1)
        return TransitionBatch(obs, action, reward.squeeze(1), next_obs, terminal.squeeze(1), timeout.squeeze(1))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TransitionBatch:
        index = torch.randint(len(self), (batch_size,), device=self.device, generator=generator)
        return self._split(self.data.index_select(0, index))

    def all(self) -> TransitionBatch:
        return self._split(self.data)
