"""Dataset files written whole, and the temporary files of interrupted writes removed.

:func:`~policylab.datamodules.write_d4rl_hdf5` writes under a hidden temporary name
(``.<name>.<random>.tmp``) and renames at the end; a process killed mid-write (SIGKILL, SIGTERM,
power loss) leaves that temporary file behind. :func:`write_dataset` takes an exclusive lock of
the folder while it writes, so any temporary file of the same target it finds under that lock
belongs to no running writer: it removes those first and says so.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from policylab.datamodules.d4rl_format import write_d4rl_hdf5

try:
    import fcntl
except ImportError:  # not POSIX: no lock, and stale files are left alone
    fcntl = None


def stale_temporary_files(path: str | os.PathLike) -> list[Path]:
    """The temporary files that writes of ``path`` make (``.<name>.*.tmp`` beside it)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def write_dataset(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict | None = None, log: Callable = print
) -> Path:
    """``write_d4rl_hdf5(path, arrays, attrs)`` under an exclusive lock of the folder, after
    removing the temporary files that interrupted writes of ``path`` left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return write_d4rl_hdf5(path, arrays, attrs)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        for stale in stale_temporary_files(path):
            stale.unlink(missing_ok=True)
            log(f"removed {stale}, left by an interrupted write of {path.name}")
        return write_d4rl_hdf5(path, arrays, attrs)
    finally:
        os.close(folder)  # releases the lock
