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


def _write_task(module: str, out: Path, *flags: str) -> Path:
    """``python -m MODULE --out OUT FLAGS`` in this process (one import instead of a new
    interpreter), leaving the random states of the tests as they were."""
    import importlib
    import random

    state = random.getstate(), np.random.get_state()
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setattr(sys, "argv", [module, "--out", str(out), *flags])
        importlib.import_module(module).main()
    random.setstate(state[0])
    np.random.set_state(state[1])
    return out


@pytest.fixture(scope="session")
def arithmetic_task(tmp_path_factory) -> Path:
    """The addition task, small (tokenizer, initial model, 64 SFT rows, 256 pairs, 16 eval sums,
    64 held-out pairs), written once; tests copy it to ``data/arithmetic`` of their run folder."""
    pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
    out = tmp_path_factory.mktemp("task") / "arithmetic"
    flags = ("--sft-rows", "64", "--pairs", "256", "--eval-rows", "16", "--val-pairs", "64")
    return _write_task("policylab.tasks.arithmetic", out, *flags)


@pytest.fixture(scope="session")
def shapes_task(tmp_path_factory) -> Path:
    """The shapes task at 8x8 pixels (untrained model, 32 pretraining images, 32 pairs, 8 prompts,
    4 eval prompts), written once; tests copy it to ``data/shapes`` of their run folder."""
    pytest.importorskip("diffusers", reason="the diffusion extras (pip install -e '.[diffusion]')")
    out = tmp_path_factory.mktemp("task") / "shapes"
    flags = ("--size", "8", "--pretrain", "32", "--pairs", "32", "--prompts", "8", "--eval-prompts", "4")
    return _write_task("policylab.tasks.shapes", out, *flags)


class _ForkServer:
    """Client of tests/cli_forkserver.py: one server per test session, started at the first run."""

    def __init__(self) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_forkserver.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert self._answer(600).get("ready"), "tests/cli_forkserver.py did not start"

    def _answer(self, timeout: float) -> dict:
        import json
        import select

        if not select.select([self.process.stdout], [], [], timeout)[0]:
            return {}
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("tests/cli_forkserver.py ended; run with POLICYLAB_TEST_SUBPROCESS=1 to see why")
        return json.loads(line)

    def run(self, command: list[str], cwd: Path, env: dict, timeout: float):
        import json
        import signal
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory(prefix="policylab-cli-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"args": command[2:], "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            pid = self._answer(60)["pid"]
            done = self._answer(timeout)
            if not done:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
                raise subprocess.TimeoutExpired(command, timeout)
            stdout, stderr = (path.read_text(errors="replace") for path in (out, err))
            return subprocess.CompletedProcess(command, done["returncode"], stdout, stderr)


_FORK_SERVER: _ForkServer | None = None


def run_cli(*args: str, cwd: Path, timeout: int = 300):
    """Run ``python cli.py ARGS`` from the repository in ``cwd``; returns the CompletedProcess.

    Each run is a process of its own, forked from a server that imported the CLI's modules once
    (tests/cli_forkserver.py): the same code as a fresh ``python cli.py`` without its 4-8 s of
    imports. POLICYLAB_TEST_SUBPROCESS=1 starts a fresh interpreter for each run instead."""
    import subprocess

    global _FORK_SERVER
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("POLICYLAB_TEST_THREADS", "2")}
    command = [sys.executable, str(ROOT / "cli.py"), *args]
    if os.environ.get("POLICYLAB_TEST_SUBPROCESS"):
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if _FORK_SERVER is None or _FORK_SERVER.process.poll() is not None:
        _FORK_SERVER = _ForkServer()
    return _FORK_SERVER.run(command, cwd, env, timeout)
