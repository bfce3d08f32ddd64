"""Construction of gymnasium environments, with the fixed observation normalization used in training."""

from __future__ import annotations

import ctypes.util
import difflib
import os

import gymnasium as gym
import numpy as np


def _default_mujoco_gl() -> None:
    """Render offscreen with EGL on machines without a display (servers, CI), where MuJoCo's
    default GLFW backend cannot open a window. Must run before ``mujoco`` is imported; an explicit
    ``MUJOCO_GL`` is kept."""
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and ctypes.util.find_library("EGL"):
        os.environ["MUJOCO_GL"] = "egl"


_default_mujoco_gl()

# D4RL env family -> the gymnasium MuJoCo env policylab evaluates in.
GYMNASIUM_ENV_OF_FAMILY = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming ``env_id`` and the closest registered ids when it is unknown."""
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown gymnasium environment id {env_id!r}.{hint}")


def normalize_observation_wrapper(env: gym.Env, mean: np.ndarray, std: np.ndarray) -> gym.Env:
    """Wrap ``env`` so that it returns ``(obs - mean) / std`` with fixed statistics from the dataset."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    if mean.shape != env.observation_space.shape:
        raise ValueError(
            f"observation statistics have shape {mean.shape} but {env.spec.id if env.spec else env} "
            f"observes {env.observation_space.shape}: the dataset does not match this environment"
        )
    space = gym.spaces.Box(-np.inf, np.inf, shape=mean.shape, dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: ((obs - mean) / std).astype(np.float32), space)


def make_env(
    env_id: str,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    render_mode: str | None = None,
    **kwargs,
) -> gym.Env:
    """``gym.make(env_id)``, optionally with fixed observation normalization."""
    check_env_id(env_id)
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    if obs_mean is not None:
        env = normalize_observation_wrapper(env, obs_mean, obs_std if obs_std is not None else np.ones_like(obs_mean))
    return env
