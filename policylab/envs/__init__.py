"""gymnasium environments: construction, vectorized evaluation, D4RL normalized scores."""

from policylab.envs.evaluation import evaluate_policy
from policylab.envs.make import GYMNASIUM_ENV_OF_FAMILY, check_env_id, make_env, normalize_observation_wrapper
from policylab.envs.scores import D4RL_REFERENCE_SCORES, env_family, normalized_score, reference_scores

__all__ = [
    "D4RL_REFERENCE_SCORES",
    "GYMNASIUM_ENV_OF_FAMILY",
    "check_env_id",
    "env_family",
    "evaluate_policy",
    "make_env",
    "normalize_observation_wrapper",
    "normalized_score",
    "reference_scores",
]
