"""The global random states in every checkpoint, so that a resumed run draws what the
uninterrupted run drew."""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Keeps the global random states (torch CPU and CUDA, numpy, Python) in the checkpoint and
    restores them on resume, so that a resumed run draws what the uninterrupted run drew.

    Without it a resume restarts the global generators from ``seed_everything``: TD3's target
    policy noise (``torch.randn_like`` in ``policylab.losses.td3``) and anything else drawn from
    the global generator then differ from the uninterrupted run after the checkpoint's step
    (the batch sampler has its own generator, already in the checkpoint). policylab's CLI adds it
    to every run; under DDP the checkpoint holds rank 0's states."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
            "numpy_gauss": [int(has_gauss), float(gauss)],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        numpy = state_dict["numpy"]
        has_gauss, gauss = state_dict["numpy_gauss"]
        np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
