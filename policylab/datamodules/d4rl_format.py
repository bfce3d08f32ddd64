"""Reading and writing offline RL datasets in the D4RL hdf5 layout (and the same arrays as ``.npz``).

The ``d4rl`` package itself needs mujoco-py and the old gym, so policylab reads its files with
h5py. Layout (one file per dataset): ``observations [N, obs]``, ``actions [N, act]``,
``rewards [N]``, ``terminals [N]``, optionally ``timeouts [N]``, ``next_observations [N, obs]``,
``infos/qpos``, ``infos/qvel`` and ``metadata/*``.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations")
_D4RL_NAME = re.compile(r"^(?P<env>[a-z0-9]+)-(?P<kind>[a-z][a-z-]*?)-v(?P<version>\d+)$")


class DatasetError(ValueError):
    """A dataset file or id that cannot be used; the message names the file or id and the problem."""


def d4rl_dataset_dir() -> Path:
    """``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``, as D4RL itself uses."""
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def is_d4rl_name(name: str) -> bool:
    return _D4RL_NAME.match(name) is not None


def d4rl_file_candidates(name: str) -> list[Path]:
    """Files a D4RL dataset name may be stored as: ``hopper-medium-replay-v2`` is downloaded by
    D4RL to ``hopper_medium_replay-v2.hdf5`` (v0 files carry no version suffix)."""
    match = _D4RL_NAME.match(name)
    if match is None:
        raise DatasetError(f"{name!r} is not a D4RL dataset name like 'hopper-medium-replay-v2'")
    env, kind, version = match["env"], match["kind"].replace("-", "_"), match["version"]
    root = d4rl_dataset_dir()
    stems = [f"{env}_{kind}-v{version}", f"{env}_{kind}" if version == "0" else None, name]
    return [root / f"{stem}.hdf5" for stem in stems if stem]


def _read_group(group: h5py.Group, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out.update(_read_group(item, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = item[()]
    return out


def read_d4rl_hdf5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """All datasets of a D4RL hdf5 file as numpy arrays, plus the file's root attributes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            arrays = _read_group(f)
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    except OSError as err:
        raise DatasetError(f"cannot read hdf5 file {path}: {err} (the file may be truncated or corrupt)") from err
    return arrays, attrs


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, refusing pickled objects (``allow_pickle=False``).

    A file that is not a zip archive (a renamed ``.npy``, a text file) or a truncated one is
    named as such rather than left to numpy's guesses (which call a non-zip file pickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise DatasetError(
            f"{path} is a single .npy array, not an .npz archive of named arrays; save the dataset with "
            "numpy.savez(path, observations=..., actions=..., rewards=..., terminals=...)"
        )
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DatasetError(
            f"{path} is not an .npz file (a zip archive of .npy arrays, as numpy.savez writes); "
            f"it starts with {magic!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DatasetError(
                f"{path} holds pickled Python objects; policylab refuses to load them because unpickling "
                "can run arbitrary code. Save plain numeric arrays instead."
            ) from err
        raise DatasetError(f"cannot read {path}: {err} (the file may be truncated or corrupt)") from err
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DatasetError(f"cannot read {path}: the .npz file is truncated or corrupt ({err})") from err


def write_d4rl_hdf5(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write ``arrays`` (keys with ``/`` become groups) to ``path`` atomically.

    The file is written under a temporary name in the same folder and renamed at the end, so an
    interrupted write never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                big = np.asarray(value).size > 1024  # byte shuffling makes float arrays compress much better
                f.create_dataset(key, data=value, compression="gzip" if big else None, shuffle=big)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
