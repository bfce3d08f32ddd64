"""D4RL normalized scores: ``100 * (return - REF_MIN) / (REF_MAX - REF_MIN)``.

Reference returns (random and expert policies) from ``d4rl/infos.py``; the MuJoCo v5 envs of
gymnasium share the observation and reward definitions of the v2/v3 envs D4RL was recorded in.
"""

from __future__ import annotations

import numpy as np

# env family -> (REF_MIN_SCORE, REF_MAX_SCORE)
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

# gymnasium env name (without version) -> env family used by D4RL
_FAMILY_OF_ENV = {"Hopper": "hopper", "HalfCheetah": "halfcheetah", "Walker2d": "walker2d", "Ant": "ant"}


def env_family(env_id_or_dataset: str) -> str | None:
    """``"Hopper-v5"`` or ``"hopper-medium-v2"`` -> ``"hopper"``; None when unknown."""
    name = env_id_or_dataset.split("/")[-1].split("-")[0]
    if name in _FAMILY_OF_ENV:
        return _FAMILY_OF_ENV[name]
    lowered = name.lower().split("_")[0]
    return lowered if lowered in D4RL_REFERENCE_SCORES else None


def reference_scores(env_id_or_dataset: str) -> tuple[float, float] | None:
    """The D4RL (REF_MIN, REF_MAX) returns for an env id or dataset name, or None."""
    family = env_family(env_id_or_dataset)
    return None if family is None else D4RL_REFERENCE_SCORES[family]


def normalized_score(returns, ref_min: float, ref_max: float):
    """``100 * (return - ref_min) / (ref_max - ref_min)``, elementwise for arrays."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
