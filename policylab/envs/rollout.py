"""Recording a policy's interaction with an environment in the D4RL layout."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from policylab.envs.make import make_env


def record_steps(
    env_id: str,
    n_steps: int,
    policy: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Step ``env_id`` for ``n_steps`` with ``policy`` (uniform random when None), resetting at
    episode ends, and return D4RL-layout arrays: observations, actions, rewards, terminals,
    timeouts, next_observations, and ``infos/qpos``, ``infos/qvel`` for MuJoCo envs."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    mujoco_data = getattr(env.unwrapped, "data", None)
    keys = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
    out: dict[str, list] = {k: [] for k in keys}
    qpos, qvel = [], []
    for _ in tqdm(range(n_steps), desc=f"recording {env_id}", unit="step", disable=not progress):
        if mujoco_data is not None:
            qpos.append(mujoco_data.qpos.copy())
            qvel.append(mujoco_data.qvel.copy())
        action = env.action_space.sample() if policy is None else np.asarray(policy(obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(keys, (obs, action, reward, terminated, truncated, next_obs)):
            out[key].append(value)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    arrays = {
        "observations": np.asarray(out["observations"], dtype=np.float32),
        "actions": np.asarray(out["actions"], dtype=np.float32),
        "rewards": np.asarray(out["rewards"], dtype=np.float32),
        "terminals": np.asarray(out["terminals"], dtype=bool),
        "timeouts": np.asarray(out["timeouts"], dtype=bool),
        "next_observations": np.asarray(out["next_observations"], dtype=np.float32),
    }
    if qpos:
        arrays["infos/qpos"] = np.asarray(qpos, dtype=np.float32)
        arrays["infos/qvel"] = np.asarray(qvel, dtype=np.float32)
    return arrays
