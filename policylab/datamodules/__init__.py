"""LightningDataModules: offline transitions (D4RL hdf5, Minari, npz) and the online replay buffer."""

from policylab.datamodules.d4rl_format import DatasetError, read_d4rl_hdf5, read_npz, write_d4rl_hdf5
from policylab.datamodules.offline import OfflineTransitionDataModule
from policylab.datamodules.replay import ReplayBufferDataModule
from policylab.datamodules.transition_base import TransitionDataModule
from policylab.datamodules.transitions import TransitionBatch, TransitionBuffer, build_transitions, episode_returns

__all__ = [
    "DatasetError",
    "OfflineTransitionDataModule",
    "ReplayBufferDataModule",
    "TransitionBatch",
    "TransitionBuffer",
    "TransitionDataModule",
    "build_transitions",
    "episode_returns",
    "read_d4rl_hdf5",
    "read_npz",
    "write_d4rl_hdf5",
]
