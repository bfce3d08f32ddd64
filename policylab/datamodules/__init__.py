"""LightningDataModules: offline transitions (D4RL hdf5, Minari, npz)."""

from policylab.datamodules.d4rl_format import DatasetError, read_d4rl_hdf5, read_npz, write_d4rl_hdf5
from policylab.datamodules.offline import OfflineTransitionDataModule
from policylab.datamodules.transitions import TransitionBatch, TransitionBuffer, build_transitions, episode_returns

__all__ = [
    "DatasetError",
    "OfflineTransitionDataModule",
    "TransitionBatch",
    "TransitionBuffer",
    "build_transitions",
    "episode_returns",
    "read_d4rl_hdf5",
    "read_npz",
    "write_d4rl_hdf5",
]
