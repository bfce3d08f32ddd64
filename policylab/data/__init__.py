"""Datasets and policies shipped inside policylab, each folder with a card (``README.md``) that
says how it was made. Bundled datasets are found by name, so configs need no path or download."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent

# dataset name -> file inside this package
BUNDLED_DATASETS = {
    "hopper-medium-replay-v5": "hopper/hopper_medium_replay-v5.hdf5",
    "halfcheetah-medium-replay-v5": "halfcheetah/halfcheetah_medium_replay-v5.hdf5",
    "walker2d-medium-replay-v5": "walker2d/walker2d_medium_replay-v5.hdf5",  # without next_observations (card)
}


def bundle_dir(family: str) -> Path:
    """The folder of a family's shipped datasets, policies and card (``policylab/data/hopper``)."""
    return DATA_DIR / family


def bundled_dataset(name: str) -> Path | None:
    """The shipped file of dataset ``name``, or None when policylab does not ship it."""
    relative = BUNDLED_DATASETS.get(name)
    return None if relative is None else DATA_DIR / relative
