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


TRANSITION_FIELDS = ("obs", "action", "reward", "next_obs", "terminal", "timeout")


class TransitionBuffer:
    """Transitions in one ``[capacity, W]`` tensor on the training device; a batch is a single row gather.

    The fields are views into the gathered rows, so sampling costs one ``randint`` and one
    ``index_select`` on the device: no worker processes, no per-sample Python, no host copy.
    Online methods append with :meth:`add`; rows beyond ``capacity`` overwrite the oldest
    *appended* rows first (a ring over the appended part), so the initial (offline) rows stay.
    With ``online_only`` set, batches come from the appended rows alone once there are any
    (a finetuning buffer of its own, FIFO over ``capacity - initial rows``, as RO2O's).

    Args:
        transitions: the initial rows (arrays named as in :data:`TRANSITION_FIELDS`), or None.
        obs_dim, action_dim: needed when ``transitions`` is None.
        capacity: total rows the buffer can hold (default: just the initial rows).
    """

    def __init__(
        self,
        transitions: dict[str, np.ndarray] | None = None,
        obs_dim: int | None = None,
        action_dim: int | None = None,
        capacity: int | None = None,
    ) -> None:
        if transitions is not None:
            obs_dim, action_dim = transitions["obs"].shape[1], transitions["action"].shape[1]
        if obs_dim is None or action_dim is None:
            raise ValueError("TransitionBuffer needs initial transitions or obs_dim and action_dim")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self._widths = [self.obs_dim, self.action_dim, 1, self.obs_dim, 1, 1]
        initial = self.rows(**transitions) if transitions is not None else torch.zeros(0, sum(self._widths))
        self.initial_size = initial.shape[0]
        capacity = self.initial_size if capacity is None else int(capacity)
        if capacity < self.initial_size:
            raise ValueError(f"capacity {capacity} is smaller than the {self.initial_size} initial transitions")
        self.data = torch.empty(capacity, sum(self._widths))
        self.data[: self.initial_size] = initial
        self.size = self.initial_size  # rows in use
        self.appended = 0  # rows ever appended
        self.next_position = 0  # where the next appended row goes, counted from the first online row
        self.online_only = False  # sample only appended rows once there are any

    def rows(self, obs, action, reward, next_obs, terminal, timeout) -> Tensor:
        """Pack transitions (numpy or tensors, leading batch dimension) into buffer rows."""
        columns = [obs, action, reward, next_obs, terminal, timeout]
        columns = [torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in columns]
        n = columns[0].shape[0]
        return torch.cat([c.reshape(n, -1) for c in columns], dim=1)

    def __len__(self) -> int:
        return self.size

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device: torch.device | str) -> TransitionBuffer:
        self.data = self.data.to(device)
        return self

    def add(self, **transitions) -> None:
        """Append a batch of transitions (fields as keyword arrays with a leading batch dimension)."""
        rows = self.rows(**transitions).to(self.device)
        online_capacity = self.capacity - self.initial_size
        if online_capacity <= 0:
            raise ValueError(f"the buffer is full ({self.capacity} rows): give it a larger capacity")
        for row in rows:  # usually one row per call
            self.data[self.initial_size + self.next_position] = row
            self.next_position = (self.next_position + 1) % online_capacity
            self.appended += 1
            self.size = min(self.size + 1, self.capacity)

    def appended_rows(self) -> Tensor:
        """The appended rows as stored (the oldest at :attr:`next_position` once the ring has
        wrapped), on the CPU: what a checkpoint keeps, with ``appended`` and ``next_position``."""
        return self.data[self.initial_size : self.size].cpu()

    def restore_appended(self, rows: Tensor, appended: int, next_position: int | None = None) -> None:
        """Put back rows from :meth:`appended_rows`, the append counter and the ring position
        (None: a checkpoint from before it was saved, whose ring position followed the counter).

        Into a buffer of the same capacity the rows go back as they were stored; into another
        capacity they are laid out oldest first, and the newest that fit are kept."""
        n, room = rows.shape[0], self.capacity - self.initial_size
        if n == 0 or room <= 0 or rows.shape[1:] != self.data.shape[1:]:
            raise ValueError(
                f"cannot restore {tuple(rows.shape)} appended rows into a buffer of capacity {self.capacity} "
                f"with {self.initial_size} initial rows of width {self.data.shape[1]}"
            )
        if next_position is None:
            next_position = appended % n if appended > n else n
        if next_position % n == 0:
            next_position = n  # the oldest row is the first one
        if n > room or (next_position != n and room != n):
            rows = torch.cat([rows[next_position:], rows[:next_position]])[-room:]
            next_position = rows.shape[0]
        self.data[self.initial_size : self.initial_size + rows.shape[0]] = rows.to(self.device)
        self.appended = int(appended)
        self.next_position = next_position % room
        self.size = self.initial_size + rows.shape[0]

    def _split(self, rows: Tensor) -> TransitionBatch:
        obs, action, reward, next_obs, terminal, timeout = torch.split(rows, self._widths, dim=1)
        return TransitionBatch(obs, action, reward.squeeze(1), next_obs, terminal.squeeze(1), timeout.squeeze(1))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> TransitionBatch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty transition buffer: collect transitions first")
        low = self.initial_size if self.online_only and self.size > self.initial_size else 0
        index = torch.randint(low, self.size, (batch_size,), device=self.device, generator=generator)
        return self._split(self.data.index_select(0, index))

    def all(self) -> TransitionBatch:
        return self._split(self.data[: self.size])
