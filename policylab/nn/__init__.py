"""Plain torch building blocks: MLPs, batched critic ensembles, policies, a conditional VAE, normalizers."""

from policylab.nn.ensemble import EnsembleCritic, EnsembleLinear
from policylab.nn.mlp import mlp
from policylab.nn.normalization import ObservationNormalizer
from policylab.nn.policies import DeterministicActor, GaussianActor, TanhGaussianActor
from policylab.nn.target import frozen_copy, polyak_update
from policylab.nn.vae import ConditionalVAE

__all__ = [
    "ConditionalVAE",
    "DeterministicActor",
    "EnsembleCritic",
    "EnsembleLinear",
    "GaussianActor",
    "ObservationNormalizer",
    "TanhGaussianActor",
    "frozen_copy",
    "mlp",
    "polyak_update",
]
