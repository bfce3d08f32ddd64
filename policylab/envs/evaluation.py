"""Vectorized evaluation of a policy for N episodes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np

from policylab.envs.make import make_env


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    n_episodes: int = 10,
    seed: int = 0,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
) -> np.ndarray:
    """Run ``n_episodes`` in parallel sub-environments, one episode each, and return their returns.

    ``policy`` maps a batch of (normalized) observations ``[n, obs_dim]`` to actions ``[n, act_dim]``,
    so the network runs once per time step for all episodes. Episode ``i`` is seeded with
    ``seed + i``, which makes the result a deterministic function of the policy and ``seed``.
    """
    envs = gym.vector.SyncVectorEnv(
        [partial(make_env, env_id, obs_mean, obs_std) for _ in range(n_episodes)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(n_episodes)])
        returns = np.zeros(n_episodes)
        running = np.ones(n_episodes, dtype=bool)
        while running.any():
            action = np.asarray(policy(obs), dtype=envs.single_action_space.dtype)
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
        return returns
    finally:
        envs.close()
