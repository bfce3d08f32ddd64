"""The offline transition datamodule: D4RL hdf5 files and names, Minari ids and ``.npz`` files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch

from policylab.datamodules.d4rl_format import (
    DatasetError,
    d4rl_file_candidates,
    is_d4rl_name,
    read_d4rl_hdf5,
    read_npz,
    validate_arrays,
)
from policylab.datamodules.minari_source import read_minari
from policylab.datamodules.transitions import TransitionBatch, TransitionBuffer, build_transitions, episode_returns
from policylab.envs.make import GYMNASIUM_ENV_OF_FAMILY, make_env
from policylab.envs.scores import env_family, reference_scores


class _EndlessSampler:
    """An endless iterable of batches drawn from a device-resident buffer (Lightning's train loader)."""

    def __init__(self, buffer: TransitionBuffer, batch_size: int, generator: torch.Generator) -> None:
        self.buffer, self.batch_size, self.generator = buffer, batch_size, generator

    def __iter__(self) -> Iterator[TransitionBatch]:
        while True:
            yield self.buffer.sample(self.batch_size, self.generator)


class _FixedBatches:
    """A finite, repeatable sequence of batches (one loader for Lightning, not a list of loaders)."""

    def __init__(self, batches: list[TransitionBatch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[TransitionBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class OfflineTransitionDataModule(L.LightningDataModule):
    """Offline RL transitions, sampled uniformly with replacement from a tensor on the module's device.

    Args:
        dataset: a path to a D4RL ``.hdf5`` file or an ``.npz`` of the same arrays, a D4RL name
            (``hopper-medium-replay-v2``, looked up in ``$D4RL_DATASET_DIR``, default
            ``~/.d4rl/datasets``), or a Minari id (``mujoco/hopper/medium-v0``).
        source: ``auto`` decides from ``dataset``; or force ``d4rl``, ``npz`` or ``minari``.
        batch_size: transitions per gradient step.
        normalize_observations: standardize observations with the data's mean and ``std + eps``
            (TD3+BC); the statistics go into the model, its checkpoint and the evaluation env.
        observation_eps: the ``eps`` added to the standard deviation.
        reward_normalization: ``returns`` divides rewards by the spread of episode returns and
            multiplies by ``max_episode_steps`` (CORL's ``normalize_reward`` for MuJoCo).
        reward_scale, reward_bias: then ``r <- r * reward_scale + reward_bias`` (CORL's IQL
            settings; AntMaze uses bias -1).
        env_id: gymnasium env to evaluate in; inferred from the dataset when omitted.
        action_bound: the model's ``max_action``; from the env's action space when omitted.
        download: allow Minari to download a dataset that is not on disk.
        max_episode_steps: episode length used where the data has no ``timeouts``.
        val_batches: batches the ``validate``/``test`` loops draw for offline diagnostics.
        seed: seed of the sampling generator (default: derived from the global seed and rank).
    """

    def __init__(
        self,
        dataset: str,
        source: Literal["auto", "d4rl", "npz", "minari"] = "auto",
        batch_size: int = 256,
        normalize_observations: bool = True,
        observation_eps: float = 1e-3,
        reward_normalization: Literal["none", "returns"] = "none",
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        env_id: str | None = None,
        action_bound: float | None = None,
        download: bool = False,
        max_episode_steps: int = 1000,
        val_batches: int = 10,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.save_hyperparameters()
        self.dataset, self.source, self.batch_size = dataset, source, batch_size
        self.normalize_observations, self.observation_eps = normalize_observations, observation_eps
        self.reward_normalization, self.reward_scale, self.reward_bias = reward_normalization, reward_scale, reward_bias
        self._env_id, self._action_bound, self.download = env_id, action_bound, download
        self.max_episode_steps, self.val_batches, self.seed = max_episode_steps, val_batches, seed
        self._data: dict | None = None
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    # ----------------------------------------------------------------- loading
    def _resolve_source(self) -> tuple[str, str]:
        """(kind, location) of ``self.dataset``."""
        name, source = self.dataset, self.source
        path = Path(name).expanduser()
        if source == "npz" or (source == "auto" and path.suffix == ".npz"):
            return "npz", str(path)
        if source == "minari":
            return "minari", name
        if path.suffix in (".hdf5", ".h5"):
            return "d4rl", str(path)
        if is_d4rl_name(name):
            candidates = d4rl_file_candidates(name)
            for candidate in candidates:
                if candidate.is_file():
                    return "d4rl", str(candidate)
            raise FileNotFoundError(
                f"D4RL dataset {name!r} not found; looked for {', '.join(map(str, candidates))} "
                "(set D4RL_DATASET_DIR or give the file's path)"
            )
        if source == "d4rl":
            raise FileNotFoundError(f"dataset file not found: {path}")
        if "/" in name and not path.exists():
            return "minari", name
        raise DatasetError(
            f"cannot tell what dataset {name!r} is: give a .hdf5 or .npz path, a D4RL name like "
            "'hopper-medium-v2' or a Minari id like 'mujoco/hopper/medium-v0'"
        )

    def _prepare(self) -> dict:
        """Read the source, check it, build transitions, statistics and the buffer."""
        kind, location = self._resolve_source()
        info: dict = {}
        if kind == "d4rl":
            arrays, attrs = read_d4rl_hdf5(location)
            info = {k: attrs[k] for k in ("env_id", "ref_min_score", "ref_max_score") if k in attrs}
            info.setdefault("env_id", _env_from_name(Path(location).stem))
        elif kind == "npz":
            arrays = read_npz(location)
            info = {"env_id": _env_from_name(Path(location).stem)}
        else:
            arrays, info = read_minari(location, download=self.download)
        validate_arrays(arrays, location)
        transitions = build_transitions(arrays, self.max_episode_steps)
        returns = episode_returns(
            np.asarray(arrays["rewards"]).reshape(-1),
            np.asarray(arrays["terminals"]).reshape(-1),
            np.asarray(arrays.get("timeouts", np.zeros(len(arrays["rewards"])))).reshape(-1),
        )
        obs = transitions["obs"]
        mean, std = obs.mean(0), obs.std(0) + self.observation_eps
        if not self.normalize_observations:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        transitions["obs"] = (obs - mean) / std
        transitions["next_obs"] = (transitions["next_obs"] - mean) / std
        reward = transitions["reward"]
        if self.reward_normalization == "returns":
            spread = returns.max() - returns.min()
            if spread <= 0:
                raise DatasetError(f"{location}: all episode returns are equal; reward_normalization='returns' needs a spread")
            reward = reward / spread * self.max_episode_steps
        transitions["reward"] = (reward * self.reward_scale + self.reward_bias).astype(np.float32)
        env_id = self._env_id or info.get("env_id")
        return {
            "location": location,
            "buffer": TransitionBuffer(transitions),
            "obs_mean": mean.astype(np.float32),
            "obs_std": std.astype(np.float32),
            "episode_returns": returns,
            "env_id": env_id,
            "ref_scores": (
                (float(info["ref_min_score"]), float(info["ref_max_score"]))
                if "ref_min_score" in info and "ref_max_score" in info
                else (reference_scores(env_id) if env_id else None)
            ),
            "max_action": float(np.abs(arrays["actions"]).max()),
        }

    def load(self) -> "OfflineTransitionDataModule":
        """Read, check and prepare the dataset now (otherwise it happens on first use)."""
        if self._data is None:
            self._data = self._prepare()
        return self

    @property
    def _loaded(self) -> dict:
        return self.load()._data

    # ----------------------------------------------------------------- what the model and callbacks read
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
        """``action_bound`` if given, else the env's action-space bound, else the data's max |a|."""
        if self._action_bound is not None:
            return float(self._action_bound)
        if self.env_id is not None:
            env = make_env(self.env_id)
            bound = float(np.max(env.action_space.high))
            env.close()
            return bound
        return self._loaded["max_action"]

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

    @property
    def episode_returns(self) -> np.ndarray:
        return self._loaded["episode_returns"]

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
        return _EndlessSampler(self.buffer, self.batch_size, self._generator)

    def _diagnostic_batches(self, offset: int) -> _FixedBatches:
        buffer = self.buffer.to(self._device())
        generator = torch.Generator(device=buffer.device).manual_seed(offset)
        return _FixedBatches([buffer.sample(self.batch_size, generator) for _ in range(self.val_batches)])

    def val_dataloader(self) -> _FixedBatches:
        """Fixed dataset batches for the modules' offline diagnostics (TD error, action MSE)."""
        return self._diagnostic_batches(offset=1)

    def test_dataloader(self) -> _FixedBatches:
        return self._diagnostic_batches(offset=2)

    def state_dict(self) -> dict:
        return {"generator": self._generator.get_state()} if self._generator is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._generator_state = state_dict.get("generator")
        if self._generator is not None and self._generator_state is not None:
            self._generator.set_state(self._generator_state)


def _env_from_name(stem: str) -> str | None:
    family = env_family(stem)
    return GYMNASIUM_ENV_OF_FAMILY.get(family) if family else None
