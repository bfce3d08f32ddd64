"""Checks of offline RL arrays (D4RL layout) before they become transitions.

Every check is vectorized numpy (the datasets hold millions of rows) and every error is a
:class:`DatasetError` naming the source, the key and the first offending row and value.

What is refused:
- missing keys, unequal lengths, wrong shapes (``rewards``, ``terminals`` and ``timeouts`` may be
  ``[N]`` or ``[N, 1]``; the trailing 1 is squeezed), non-numeric dtypes;
- NaN or inf, and float64 values beyond the float32 range (policylab trains in float32);
- ``terminals`` or ``timeouts`` other than 0/1 (or true/false): NaN or 2 is not a flag;
- an observation column whose float32 normalization loses its data (the *scale rule* below);
- actions outside the action bound (see :func:`check_actions`).

The scale rule: observation statistics are computed in float64, so one huge value no longer
overflows the standard deviation, but it still dominates it. For each column the central 98% of
rows (1st to 99th percentile) must keep at least :data:`MIN_FLOAT32_LEVELS` distinct float32
steps after ``(obs - mean) / std``; otherwise float32 rounds those rows to (nearly) one number
and the column carries no information (a single 1e30 among values of order 1 did this). A
column whose standard deviation is more than :data:`WARN_STD_TO_SPREAD` times the spread of its
central 98% still keeps its data in float32 but is dominated by a few rows: it loads with a
warning naming the row.
"""

from __future__ import annotations

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from policylab.datamodules.d4rl_format import OPTIONAL_KEYS, REQUIRED_KEYS, DatasetError

MIN_FLOAT32_LEVELS = 1024  # 10 bits: fewer distinct normalized values than this is data lost to rounding
WARN_STD_TO_SPREAD = 1000.0
ACTION_TOLERANCE = 1e-3  # relative to the bound: |a| may exceed it by this fraction (float noise)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def validate_arrays(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check keys, shapes, lengths, values and flags; return the arrays with ``rewards``,
    ``terminals`` and ``timeouts`` as 1-D ``[N]``. Every error names ``source`` and the key."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"{source} lacks the required key(s) {missing}; found {sorted(arrays)}")
    arrays = dict(arrays)
    n = len(arrays["observations"])
    if n == 0:
        raise DatasetError(f"{source} holds no transitions")
    for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
        if key in arrays and len(arrays[key]) != n:
            raise DatasetError(
                f"{source}: '{key}' has {len(arrays[key])} rows but 'observations' has {n}; "
                "the arrays must be equally long"
            )
    for key, ndim in (("observations", 2), ("actions", 2), ("next_observations", 2)):
        if key in arrays and arrays[key].ndim != ndim:
            raise DatasetError(f"{source}: '{key}' must be 2-D [N, dim], got shape {arrays[key].shape}")
    for key in ("rewards", "terminals", "timeouts"):
        if key in arrays:
            shape = arrays[key].shape
            if shape == (n, 1):
                arrays[key] = arrays[key][:, 0]
            elif shape != (n,):
                raise DatasetError(f"{source}: '{key}' must be 1-D [N] (or [N, 1]), got shape {shape}")
    if "next_observations" in arrays and arrays["next_observations"].shape != arrays["observations"].shape:
        raise DatasetError(
            f"{source}: 'next_observations' has shape {arrays['next_observations'].shape}, "
            f"'observations' {arrays['observations'].shape}"
        )
    for key in ("observations", "actions", "rewards", "next_observations"):
        if key in arrays:
            _check_numbers(arrays[key], key, source)
    for key in ("terminals", "timeouts"):
        if key in arrays:
            _check_flags(arrays[key], key, source)
    for key in ("observations", "next_observations"):
        if key in arrays:
            check_observation_scale(arrays[key], key, source)
    return arrays


def _check_numbers(values: np.ndarray, key: str, source: str) -> None:
    if not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{source}: '{key}' has non-numeric dtype {values.dtype}")
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise DatasetError(f"{source}: '{key}' holds NaN or inf ({int((~finite).sum())} rows, first at row {row})")
    if np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize > 4:
        large = (np.abs(values) > _FLOAT32_MAX).reshape(len(values), -1)
        if large.any():
            row, column = (int(i[0]) for i in np.nonzero(large))
            value = values.reshape(len(values), -1)[row, column]
            raise DatasetError(
                f"{source}: '{key}' row {row} holds {value:.4g}, beyond the float32 range (±{_FLOAT32_MAX:.4g}) "
                "policylab trains in; fix or remove the row"
            )


def _check_flags(values: np.ndarray, key: str, source: str) -> None:
    """``terminals``/``timeouts`` must be bool or numbers equal to 0 or 1."""
    if values.dtype == bool:
        return
    if not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{source}: '{key}' has dtype {values.dtype}; it must hold 0/1 or true/false")
    bad = ~((values == 0) | (values == 1))  # NaN compares unequal to both
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(
            f"{source}: '{key}' row {row} holds {values[row].item()}; it must be 0 or 1 (true/false) "
            f"({int(bad.sum())} of {len(values)} rows are not)"
        )


def check_observation_scale(values: np.ndarray, key: str, source: str) -> None:
    """The scale rule of the module docstring, for each column of ``values`` ``[N, dim]``."""
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        deviation = np.maximum(values.max(axis=0) - mean, mean - values.min(axis=0))
        z_max = deviation / std
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):  # unreachable after the float32-range check
        column = int(np.argmin(np.isfinite(mean) & np.isfinite(std)))
        row = int(np.argmax(np.abs(values[:, column])))
        raise DatasetError(
            f"{source}: '{key}' column {column} has a non-finite mean or std; largest value {values[row, column]:.4g} "
            f"at row {row}"
        )
    # If the central 98% spans less than std/1000, the other 2% carry the variance, so some row lies
    # more than ~6.9 std from the mean; columns without such a row need no percentiles.
    for column in np.flatnonzero(z_max > 6.0):
        data = values[:, column].astype(np.float64)
        low, high = np.percentile(data, [1, 99])
        spread = high - low
        if spread <= 0:
            continue  # a (nearly) constant column with rare other values: nothing to squeeze
        z_low, z_high = (low - mean[column]) / std[column], (high - mean[column]) / std[column]
        levels = (z_high - z_low) / float(np.spacing(np.float32(max(abs(z_low), abs(z_high)))))
        ratio = std[column] / spread
        if levels >= MIN_FLOAT32_LEVELS and ratio <= WARN_STD_TO_SPREAD:
            continue
        row = int(np.argmax(np.abs(data - np.median(data))))
        where = (
            f"{source}: '{key}' column {column} holds {data[row]:.4g} at row {row}, which dominates the column's "
            f"statistics (std {std[column]:.4g} against a spread of {spread:.4g} over its central 98% of rows)"
        )
        if levels < MIN_FLOAT32_LEVELS:
            raise DatasetError(
                f"{where}: float32 normalization would round the other rows to the same number. Fix or remove that row."
            )
        rank_zero_warn(f"{where}: normalized, the other rows differ by less than 1/{WARN_STD_TO_SPREAD:g} of a unit.")


def check_actions(
    actions: np.ndarray, low: np.ndarray, high: np.ndarray, source: str, bound_name: str, clip: bool
) -> tuple[np.ndarray, int]:
    """Refuse actions outside ``[low, high]`` (per dimension, with a tolerance of
    :data:`ACTION_TOLERANCE` times the bound), or with ``clip`` clip them to it.

    Returns ``(actions, number of values clipped)``; infinite bounds are not checked.
    """
    low = np.broadcast_to(np.asarray(low, np.float64), actions.shape[1:])
    high = np.broadcast_to(np.asarray(high, np.float64), actions.shape[1:])
    tolerance = ACTION_TOLERANCE * np.maximum(np.abs(low), np.abs(high))
    with np.errstate(invalid="ignore"):
        outside = (actions < low - tolerance) | (actions > high + tolerance)
    if not outside.any():
        return actions, 0
    if clip:
        beyond = (actions < low) | (actions > high)
        return np.clip(actions, low, high).astype(actions.dtype, copy=False), int(beyond.sum())
    rows = outside.any(axis=1)
    row = int(np.argmax(rows))
    column = int(np.argmax(outside[row]))
    raise DatasetError(
        f"{source}: 'actions' row {row} holds {actions[row, column]:.4g} in dimension {column}, outside {bound_name} "
        f"[{low[column]:.4g}, {high[column]:.4g}] ({int(rows.sum())} of {len(actions)} rows exceed it by more than "
        f"{ACTION_TOLERANCE:g} of the bound). Fix the data, or set clip_actions: true to clip them."
    )
