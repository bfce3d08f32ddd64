"""Checkpoints written whole or not at all, and a write failure that names its file."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the file and what to do (``errno``
    is the cause's)."""

    def __init__(self, message: str, cause_errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = cause_errno


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes each checkpoint under a hidden temporary name beside its
    target (``.<name>.partial``) and renames it over the target once complete, so that a full
    disk or a killed run never leaves a truncated ``last.ckpt`` and the previous one is kept.
    A failed write raises :class:`CheckpointWriteError` naming the file (``No space left on
    device`` alone names none). A ``.partial`` left by a killed run is replaced by the next save."""

    @staticmethod
    def partial_path(filepath: str | os.PathLike) -> Path:
        path = Path(filepath)
        return path.with_name(f".{path.name}.partial")

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        partial = self.partial_path(filepath)
        try:
            super()._save_checkpoint(trainer, str(partial))
        except OSError as err:
            if trainer.is_global_zero:
                _remove(partial)
            kept = "the previous one is kept" if Path(filepath).exists() else "nothing was written under that name"
            reason = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise CheckpointWriteError(
                f"could not write checkpoint {filepath}: {reason} ({kept}). "
                "Free space or set --checkpoint.dirpath to another disk, then resume with --ckpt_path last.",
                err.errno,
            ) from None
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            if Path(filepath).is_dir() and not Path(filepath).is_symlink():  # a sharded checkpoint is a folder
                shutil.rmtree(filepath)
            os.replace(partial, filepath)
        trainer.strategy.barrier("AtomicCheckpoint.replace")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
