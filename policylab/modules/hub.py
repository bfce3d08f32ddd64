"""Small helpers for loading and saving Hugging Face models (transformers, diffusers): local
folders checked before loading, and quiet saving next to checkpoints."""

from __future__ import annotations

import contextlib
import importlib.util
import re
from pathlib import Path

# A Hugging Face hub id: "name" or "owner/name" of word characters, '-' and '.' (huggingface_hub's rule).
_HUB_ID = re.compile(r"[\w\-.]{1,96}(/[\w\-.]{1,96})?")


def _looks_like_hub_id(name: str) -> bool:
    return (
        bool(_HUB_ID.fullmatch(name))
        and "--" not in name
        and ".." not in name
        and not name.startswith((".", "-"))
        and not name.endswith((".", "-"))
    )


def pretrained_source(name_or_path: str | Path, what: str = "model") -> str:
    """``name_or_path`` as ``from_pretrained`` takes it, after checking that a local folder exists.

    A file instead of a folder is refused. A string counts as a local path when it exists, is a
    ``Path``, starts with '.' or '~', has more than one '/' (or any '\\\\'), or its parent
    folder exists here (``data/tokenizr`` beside ``data/``); otherwise it is left to the hub as
    an ``owner/name`` id. A local path that does not exist stops with a FileNotFoundError naming
    it (``what``: "model", "tokenizer", ...) and saying what writes it: for
    ``<save_dir>/<name>/version_<n>/<folder>`` (a run's ``hf_model`` or ``pipeline``) the run of
    ``configs/<name>.yaml`` when that config exists, for ``data/<task>/...`` the task's
    ``policylab.tasks.<task>`` writer.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        raise FileNotFoundError(f"{what} folder expected, but {text} is a file: give the folder that holds it")
    if path.exists():
        return str(path)
    parent = path.parent
    local = (
        isinstance(name_or_path, Path)
        or text.startswith((".", "~", "/"))
        or "\\" in text
        or text.count("/") > 1
        or (str(parent) not in ("", ".") and parent.is_dir())
        or not _looks_like_hub_id(text)
    )
    if not local:
        return text
    raise FileNotFoundError(f"{what} folder not found: {text}. {_what_writes(path)}")


def _what_writes(path: Path) -> str:
    parts = path.parts
    for i in range(len(parts) - 2):
        if re.fullmatch(r"version_\d+", parts[i + 1]) and i + 2 < len(parts):
            name, folder = parts[i], parts[i + 2]
            config = Path("configs") / f"{name}.yaml"
            if config.is_file():
                return f"A run writes it ({folder}): run `python cli.py fit --config {config}` first, or fix the path."
            return f"A training run writes it (<run>/{folder}): run the earlier stage first, or fix the path."
    if len(parts) > 2 and parts[0] == "data" and importlib.util.find_spec(f"policylab.tasks.{parts[1]}") is not None:
        writer = f"python -m policylab.tasks.{parts[1]} --out data/{parts[1]}"
        return f"The task writes it: run `{writer}` first, or fix the path."
    return "Check the path (relative paths start at the current folder), or give a Hugging Face hub id."


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
