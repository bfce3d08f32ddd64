"""Plain torch building blocks: MLPs, batched critic ensembles, policies, normalizers."""

from policylab.nn.ensemble import EnsembleCritic, EnsembleLinear
from policylab.nn.mlp import mlp
from policylab.nn.normalization import ObservationNormalizer
from policylab.nn.policies import DeterministicActor, TanhGaussianActor
from policylab.nn.target import frozen_copy, polyak_update

__all__ = [
    "DeterministicActor",
    "EnsembleCritic",
    "EnsembleLinear",
    "ObservationNormalizer",
    "TanhGaussianActor",
    "frozen_copy",
    "mlp",
    "polyak_update",
]
