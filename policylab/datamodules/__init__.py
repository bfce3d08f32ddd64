"""LightningDataModules: offline transitions (D4RL hdf5, Minari, npz), the online replay buffer,
text rows (SFT, preference pairs) for language models, and prompts, images and image pairs for
diffusion models, and prompts with the generated pairs of online preference methods."""

from policylab.datamodules.d4rl_format import DatasetError, read_d4rl_hdf5, read_npz, write_d4rl_hdf5
from policylab.datamodules.diffusion import ImageDataError, ImageDataModule, ImagePairDataModule, PromptDataModule
from policylab.datamodules.offline import OfflineTransitionDataModule
from policylab.datamodules.online import OnlinePromptDataModule
from policylab.datamodules.preference import PreferenceDataModule
from policylab.datamodules.replay import ReplayBufferDataModule
from policylab.datamodules.self_improvement import SelfImprovementDataModule
from policylab.datamodules.sft import SFTDataModule
from policylab.datamodules.text import TextDataError, read_rows
from policylab.datamodules.transition_base import TransitionDataModule
from policylab.datamodules.transitions import TransitionBatch, TransitionBuffer, build_transitions, episode_returns

__all__ = [
    "DatasetError",
    "ImageDataError",
    "ImageDataModule",
    "ImagePairDataModule",
    "OfflineTransitionDataModule",
    "OnlinePromptDataModule",
    "PreferenceDataModule",
    "PromptDataModule",
    "SFTDataModule",
    "TextDataError",
    "ReplayBufferDataModule",
    "SelfImprovementDataModule",
    "TransitionBatch",
    "TransitionBuffer",
    "TransitionDataModule",
    "build_transitions",
    "episode_returns",
    "read_d4rl_hdf5",
    "read_npz",
    "read_rows",
    "write_d4rl_hdf5",
]
