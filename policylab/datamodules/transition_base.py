"""What the offline and online transition datamodules share: a device-resident buffer, the endless
sampler Lightning trains from, the fixed diagnostic batches, online appends and checkpoint state."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

from policylab.datamodules.transitions import TransitionBatch, TransitionBuffer


class _EndlessSampler:
    """An endless iterable of batches drawn from a device-resident buffer (Lightning's train loader)."""

    def __init__(self, buffer: TransitionBuffer, batch_size: int, generator: torch.Generator) -> None:
        self.buffer, self.batch_size, self.generator = buffer, batch_size, generator
        self.state_before_last: torch.Tensor | None = None

    def __iter__(self) -> Iterator[TransitionBatch]:
        while True:
            # Lightning fetches one batch ahead: a checkpoint after step k has drawn batch k + 1.
            # The checkpoint keeps the state before that draw, so a resume draws batch k + 1 again.
            self.state_before_last = self.generator.get_state()
            yield self.buffer.sample(self.batch_size, self.generator)


class _FixedBatches:
    """A finite, repeatable sequence of batches (one loader for Lightning, not a list of loaders)."""

    def __init__(self, batches: list[TransitionBatch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[TransitionBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TransitionDataModule(L.LightningDataModule):
    """Base of the transition datamodules. Subclasses implement :meth:`_prepare`, which returns a
    dict with ``buffer`` (a :class:`TransitionBuffer`), ``obs_mean``/``obs_std`` (float32 arrays),
    ``env_id``, ``ref_scores`` ((REF_MIN, REF_MAX) or None), ``max_action`` and ``reward_transform``
    ((factor, scale, bias): stored reward = raw * factor * scale + bias).

    Transitions collected online go through :meth:`add_transitions`, which applies the same
    observation and reward transforms as the stored data, so offline and online rows mix in one
    buffer. The appended rows and the sampler state are part of the checkpoint, unless
    ``checkpoint_rows`` is False.
    """

    checkpoint_rows = True  # save the appended rows in checkpoints

    def __init__(self, batch_size: int, val_batches: int, seed: int | None) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.val_batches, self.seed = batch_size, val_batches, seed
        self._data: dict | None = None
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None
        self._sampler: _EndlessSampler | None = None

    def _prepare(self) -> dict:
        raise NotImplementedError

    def load(self):
        """Read, check and prepare the data now (otherwise it happens on first use)."""
        if self._data is None:
            self._data = self._prepare()
        return self

    @property
    def _loaded(self) -> dict:
        return self.load()._data

    # ----------------------------------------------------------------- what models and callbacks read
    @property
    def buffer(self) -> TransitionBuffer:
        return self._loaded["buffer"]

    @property
    def obs_dim(self) -> int:
        return self.buffer.obs_dim

    @property
    def action_dim(self) -> int:
        return self.buffer.action_dim

    @property
    def max_action(self) -> float:
        return float(self._loaded["max_action"])

    @property
    def env_id(self) -> str | None:
        """The gymnasium env this data comes from (None when it cannot be told)."""
        return self._loaded["env_id"]

    @property
    def reference_scores(self) -> tuple[float, float] | None:
        """(REF_MIN, REF_MAX) returns for the normalized score, or None."""
        return self._loaded["ref_scores"]

    @property
    def observation_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self._loaded["obs_mean"]), torch.from_numpy(self._loaded["obs_std"])

    # ----------------------------------------------------------------- online appends
    def add_transitions(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """Append raw environment transitions (leading batch dimension): observations are
        normalized and rewards transformed exactly as the stored data was."""
        data = self._loaded
        mean, std = data["obs_mean"], data["obs_std"]
        factor, scale, bias = data["reward_transform"]
        self.buffer.add(
            obs=(np.asarray(obs, np.float32) - mean) / std,
            action=action,
            reward=np.asarray(reward, np.float32) * (factor * scale) + bias,
            next_obs=(np.asarray(next_obs, np.float32) - mean) / std,
            terminal=np.asarray(terminated, np.float32),
            timeout=np.asarray(truncated, np.float32),
        )

    # ----------------------------------------------------------------- Lightning hooks
    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def train_dataloader(self) -> _EndlessSampler:
        device = self._device()
        self.buffer.to(device)
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            rank = self.trainer.global_rank if self.trainer is not None else 0
            base = self.seed if self.seed is not None else torch.initial_seed()
            self._generator.manual_seed((base + 7919 * rank) % 2**63)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
        self._sampler = _EndlessSampler(self.buffer, self.batch_size, self._generator)
        return self._sampler

    def _diagnostic_batches(self, offset: int) -> _FixedBatches:
        buffer = self.buffer.to(self._device())
        generator = torch.Generator(device=buffer.device).manual_seed(offset)
        return _FixedBatches([buffer.sample(self.batch_size, generator) for _ in range(self.val_batches)])

    def val_dataloader(self) -> _FixedBatches:
        """Fixed batches of the buffer for the modules' diagnostics (TD error, action MSE)."""
        return self._diagnostic_batches(offset=1)

    def test_dataloader(self) -> _FixedBatches:
        return self._diagnostic_batches(offset=2)

    def state_dict(self) -> dict:
        state: dict = {}
        if self._generator is not None:
            drawn = self._sampler.state_before_last if self._sampler is not None else None
            state["generator"] = drawn if drawn is not None else self._generator.get_state()
        if self.checkpoint_rows and self._data is not None and self.buffer.appended:
            state["appended_rows"] = self.buffer.appended_rows()
            state["appended"] = self.buffer.appended
            state["next_position"] = self.buffer.next_position
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._generator_state = state_dict.get("generator")
        if self._generator is not None and self._generator_state is not None:
            self._generator.set_state(self._generator_state)
        if "appended_rows" in state_dict:
            self.buffer.restore_appended(
                state_dict["appended_rows"], state_dict["appended"], state_dict.get("next_position")
            )
