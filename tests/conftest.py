"""Shared fixtures: small but real datasets written to tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# POLICYLAB_TEST_THREADS=1 keeps the suite from oversubscribing cores that other jobs use
torch.set_num_threads(int(os.environ.get("POLICYLAB_TEST_THREADS", max(1, min(2, os.cpu_count() or 1)))))


@pytest.fixture(scope="session")
def hopper_arrays() -> dict[str, np.ndarray]:
    """3000 uniformly random steps of Hopper-v5 in the D4RL layout (real env, real episodes)."""
    from policylab.envs.rollout import record_steps

    return record_steps("Hopper-v5", 3000, seed=0, progress=False)


@pytest.fixture(scope="session")
def hopper_hdf5(tmp_path_factory, hopper_arrays) -> Path:
    from policylab.datamodules import write_d4rl_hdf5

    path = tmp_path_factory.mktemp("d4rl") / "hopper_random-v5.hdf5"
    arrays = {k: v for k, v in hopper_arrays.items() if k != "next_observations"}
    write_d4rl_hdf5(path, arrays, {"env_id": "Hopper-v5"})
    return path


def run_cli(*args: str, cwd: Path, timeout: int = 300):
    """Run ``python cli.py ARGS`` from the repository in ``cwd``; returns the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("POLICYLAB_TEST_THREADS", "2")}
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
