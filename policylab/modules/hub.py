"""Small helpers for saving Hugging Face models (transformers, diffusers) next to checkpoints."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def quiet_progress_bars():
    """Within the block, transformers shows no progress bars (no "Writing model shards" bar at
    every checkpoint); the previous setting comes back afterwards."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
