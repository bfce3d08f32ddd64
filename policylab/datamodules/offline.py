"""The offline transition datamodule: D4RL hdf5 files and names, Minari ids and ``.npz`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from policylab.data import bundle_dir, bundled_dataset
from policylab.datamodules.d4rl_format import DatasetError, d4rl_file_candidates, is_d4rl_name, read_d4rl_hdf5, read_npz
from policylab.datamodules.minari_source import read_minari
from policylab.datamodules.transition_base import TransitionDataModule
from policylab.datamodules.transitions import TransitionBuffer, build_transitions, episode_returns
from policylab.datamodules.validation import check_actions, validate_arrays
from policylab.envs.make import GYMNASIUM_ENV_OF_FAMILY, make_env
from policylab.envs.scores import env_family, reference_scores


class OfflineTransitionDataModule(TransitionDataModule):
    """Offline RL transitions, sampled uniformly with replacement from a tensor on the module's device.

    Args:
        dataset: a dataset policylab ships (``hopper-medium-replay-v5``), a path to a D4RL
            ``.hdf5`` file or an ``.npz`` of the same arrays, a D4RL name (``hopper-medium-replay-v2``,
            looked up in ``$D4RL_DATASET_DIR``, default ``~/.d4rl/datasets``), or a Minari id
            (``mujoco/hopper/medium-v0``).
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
            Dataset actions must lie within it (or the env's action space), up to a tolerance of
            1e-3 of the bound.
        download: allow Minari to download a dataset that is not on disk.
        max_episode_steps: episode length used where the data has no ``timeouts``.
        val_batches: batches the ``validate``/``test`` loops draw for offline diagnostics.
        online_capacity: rows reserved for transitions collected online (offline-to-online
            finetuning appends them next to the dataset; see ``EnvInteraction``); beyond it the
            oldest collected rows are overwritten (FIFO), never the dataset's.
        online_only: once online collection has begun, batches come from the collected rows
            alone (RO2O's finetuning: a fresh FIFO buffer of ``online_capacity`` rows, the
            offline data left out); default: dataset and collected rows mixed in one buffer.
        seed: seed of the sampling generator (default: derived from the global seed and rank).
        clip_actions: clip dataset actions outside the bound to it (the count is reported)
            instead of refusing the data.

    Loading checks the data (see :mod:`policylab.datamodules.validation`): NaNs, flags other
    than 0/1, an observation value large enough to wipe out float32 normalization, actions
    outside the bound, and observation/action dimensions that differ from the env's spaces all
    stop with a :class:`DatasetError` naming the file, key, row and value. Statistics are
    computed in float64.
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
        online_capacity: int = 0,
        online_only: bool = False,
        seed: int | None = None,
        clip_actions: bool = False,
    ) -> None:
        super().__init__(batch_size, val_batches, seed)
        self.save_hyperparameters()
        self.dataset, self.source = dataset, source
        self.normalize_observations, self.observation_eps = normalize_observations, observation_eps
        self.reward_normalization, self.reward_scale, self.reward_bias = reward_normalization, reward_scale, reward_bias
        self._env_id, self._action_bound, self.download = env_id, action_bound, download
        self.max_episode_steps, self.online_capacity = max_episode_steps, online_capacity
        if online_only and online_capacity <= 0:
            raise ValueError("online_only trains on the rows collected online: give online_capacity > 0 rows for them")
        self.online_only = online_only
        self.clip_actions = clip_actions

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
        bundled = bundled_dataset(name)
        if bundled is not None:
            return "d4rl", str(bundled)
        if is_d4rl_name(name):
            candidates = d4rl_file_candidates(name)
            for candidate in candidates:
                if candidate.is_file():
                    return "d4rl", str(candidate)
            family = env_family(name)
            card = bundle_dir(family) / "README.md" if family else None
            own = name.endswith("-v5") and card is not None and card.is_file()  # policylab's own sets are -v5
            build = f"; policylab's SAC builds it: {card} gives the command" if own else ""
            raise FileNotFoundError(
                f"D4RL dataset {name!r} not found; looked for {', '.join(map(str, candidates))} "
                f"(set D4RL_DATASET_DIR or give the file's path){build}"
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
        arrays = validate_arrays(arrays, location)
        env_id = self._env_id or info.get("env_id")
        arrays["actions"], max_action = self._check_env_fit(env_id, arrays, location)
        transitions = build_transitions(arrays, self.max_episode_steps)
        if len(transitions["obs"]) == 0:
            raise DatasetError(_no_transition_message(location, arrays))
        returns = episode_returns(
            arrays["rewards"], arrays["terminals"], arrays.get("timeouts", np.zeros(len(arrays["rewards"])))
        )
        obs = transitions["obs"]
        mean, std = obs.mean(0, dtype=np.float64), obs.std(0, dtype=np.float64) + self.observation_eps
        if not self.normalize_observations:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        mean, std = mean.astype(np.float32), std.astype(np.float32)
        transitions["obs"] = (obs - mean) / std
        transitions["next_obs"] = (transitions["next_obs"] - mean) / std
        factor = 1.0
        if self.reward_normalization == "returns":
            spread = returns.max() - returns.min()
            if spread <= 0:
                raise DatasetError(
                    f"{location}: all episode returns are equal; reward_normalization='returns' needs a spread"
                )
            factor = self.max_episode_steps / float(spread)
        transitions["reward"] = (transitions["reward"] * (factor * self.reward_scale) + self.reward_bias).astype(
            np.float32
        )
        buffer = TransitionBuffer(transitions, capacity=len(transitions["obs"]) + self.online_capacity)
        buffer.online_only = self.online_only
        return {
            "location": location,
            "buffer": buffer,
            "obs_mean": mean,
            "obs_std": std,
            "episode_returns": returns,
            "env_id": env_id,
            "ref_scores": (
                (float(info["ref_min_score"]), float(info["ref_max_score"]))
                if "ref_min_score" in info and "ref_max_score" in info
                else (reference_scores(env_id) if env_id else None)
            ),
            "max_action": max_action,
            "reward_transform": (factor, self.reward_scale, self.reward_bias),
        }

    def _check_env_fit(self, env_id: str | None, arrays: dict, location: str) -> tuple[np.ndarray, float]:
        """Compare the data's dimensions with ``env_id``'s spaces and its actions with the bound
        (``action_bound``, else the env's action space); returns ``(actions, max_action)``.
        Without an env and an ``action_bound`` the bound is the data's largest ``|a|``."""
        actions = arrays["actions"]
        low = high = None
        if env_id is not None:
            try:
                env = make_env(env_id)
            except ValueError as err:
                raise DatasetError(
                    f"{location}: {err} Set data.init_args.env_id to the env the data comes from."
                ) from err
            obs_space, action_space = env.observation_space, env.action_space
            env.close()
            data_obs, data_act = arrays["observations"].shape[1:], actions.shape[1:]
            if obs_space.shape != data_obs or action_space.shape != data_act:
                raise DatasetError(
                    f"{location}: the data has observations {list(arrays['observations'].shape)} and actions "
                    f"{list(actions.shape)}, but {env_id} observes {obs_space.shape} and acts in {action_space.shape}: "
                    "the dataset does not match the evaluation env. Set data.init_args.env_id to the env the data "
                    "was recorded in."
                )
            if hasattr(action_space, "high"):
                low, high = action_space.low, action_space.high
                bound_name = f"the action space of {env_id}"
        if self._action_bound is not None:
            low, high = -float(self._action_bound), float(self._action_bound)
            bound_name = "action_bound"
        if low is None:
            return actions, float(np.abs(actions).max())
        actions, clipped = check_actions(actions, low, high, location, bound_name, self.clip_actions)
        if clipped:
            rank_zero_info(f"{location}: clipped {clipped} action values to {bound_name} (clip_actions: true)")
        return actions, float(np.max(high))

    @property
    def episode_returns(self) -> np.ndarray:
        return self._loaded["episode_returns"]


def _no_transition_message(location: str, arrays: dict) -> str:
    """Why data without ``next_observations`` gave no transition (D4RL's rule drops the last row
    and each row at a timeout, whose successor starts another episode)."""
    n = len(arrays["observations"])
    why = (
        "it holds a single row"
        if n == 1
        else f"every row before its last ({n - 1} of {n}) ends an episode by timeout (episodes of one step)"
    )
    return (
        f"{location}: no transition can be built: {why}, and without 'next_observations' a row's successor is "
        "the next row of the same episode. Store 'next_observations' (then every row is a transition) or "
        "record longer episodes."
    )


def _env_from_name(stem: str) -> str | None:
    family = env_family(stem)
    return GYMNASIUM_ENV_OF_FAMILY.get(family) if family else None
