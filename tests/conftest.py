"""Shared fixtures: small but real datasets and tasks, written once per session; ``run_cli``,
``run_python``, ``start_python``: ``python cli.py`` and ``python -m`` runs forked from tests/cli_forkserver.py."""

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


def expert_action(obs: np.ndarray) -> np.ndarray:
    """The toy offline task's expert: ``tanh(s_0:2 - 0.5 s_2:4)``."""
    return np.tanh(obs[:, :2] - 0.5 * obs[:, 2:4])


def write_expert_toy(path: Path, rows: int) -> Path:
    """The toy offline task as an ``.npz``: observations N(0,1) in 6-D, actions = the expert's plus
    small noise, reward peaked at the expert's action (both a BC term and a Q term pull an actor
    toward the expert)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(rows, 6)).astype(np.float32)
    act = np.clip(expert_action(obs) + 0.05 * rng.normal(size=(rows, 2)), -1, 1).astype(np.float32)
    reward = (1.0 - ((act - expert_action(obs)) ** 2).sum(1) * 5).astype(np.float32)
    np.savez(
        path,
        observations=obs,
        actions=act,
        rewards=reward,
        next_observations=rng.normal(size=(rows, 6)).astype(np.float32),
        terminals=np.zeros(rows, bool),
        timeouts=np.zeros(rows, bool),
    )
    return path


def iteration_recorder():
    """A callback recording, after every training step of an online method, the datamodule's
    iteration and a copy of its stored pairs (``recorder.steps[global_step] = (iteration, pairs)``):
    what a resumed run must reproduce."""
    from lightning.pytorch.callbacks import Callback

    class IterationRecorder(Callback):
        def __init__(self):
            self.steps = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            dm = trainer.datamodule
            self.steps[trainer.global_step] = (dm.iteration, {k: v.clone() for k, v in dm.pairs.items()})

    return IterationRecorder()


def quiet_trainer(**kwargs):
    """A CPU Trainer without logger, checkpoints, progress bar, model summary or sanity check."""
    import lightning as L

    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="session")
def addition(tmp_path_factory):
    """The online methods' task: single-digit sums, 70 problems to train on and 30 held out; an SFT
    model of 30% right answers (the rest off by a little), trained once for 500 steps. Returns
    (folder with sft.jsonl and prompts.jsonl, tokenizer, SFT policy, held-out prompts); tests
    train copies of the policy."""
    import lightning as L

    from policylab.datamodules import SFTDataModule
    from policylab.modules.preference import SFT
    from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl

    folder = tmp_path_factory.mktemp("addition")
    tokenizer = build_tokenizer(folder / "tok")
    problems = [f"{a}+{b}=" for a in range(10) for b in range(10)]
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0)).tolist()
    train, held_out = [problems[i] for i in order[:70]], [problems[i] for i in order[70:]]
    task = AdditionTask(max_operand=9, seed=0)
    write_jsonl([r for r in task.sft_rows(4000, correct_fraction=0.3) if r["prompt"] in train], folder / "sft.jsonl")
    write_jsonl([{"prompt": p} for p in train], folder / "prompts.jsonl")
    L.seed_everything(0)
    sft = SFT(build_model(seed=0), lr=3e-3)
    dm = SFTDataModule(str(folder / "sft.jsonl"), tokenizer, batch_size=64, max_length=12, max_prompt_length=6)
    quiet_trainer(max_steps=500).fit(sft, dm)
    return folder, tokenizer, sft.policy, held_out


def mean_verifier_score(policy, tokenizer, prompts, samples=8, seed=123):
    """Mean verifier score of sampled answers (temperature 1, seeded) to ``prompts``."""
    from policylab.tasks.arithmetic import is_correct

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        tokens = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)
            out = policy.eval().generate(
                **tokens,
                do_sample=True,
                max_new_tokens=4,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(out[:, tokens["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    repeated = [p for p in prompts for _ in range(samples)]
    return sum(is_correct(p, t) for p, t in zip(repeated, texts)) / len(texts)


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
    """Client of tests/cli_forkserver.py: one server per test session, started at the first run;
    it runs one process at a time."""

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
        self.running: ForkedProcess | None = None
        try:
            self.ready = bool(self.answer(600).get("ready"))  # else fresh interpreters are used
        except RuntimeError:
            self.ready = False

    def answer(self, timeout: float) -> dict:
        """The server's next line, or {} after ``timeout`` seconds without one."""
        import json
        import select

        if not select.select([self.process.stdout], [], [], timeout)[0]:
            return {}
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("tests/cli_forkserver.py ended; run with POLICYLAB_TEST_SUBPROCESS=1 to see why")
        return json.loads(line)

    def start(self, command: list[str], cwd: Path, env: dict) -> ForkedProcess:
        import json

        if self.running is not None and self.running.poll() is None:  # left running by a failed test
            self.running.kill()
        self.running = ForkedProcess(self, command)
        request = {"args": command[1:], "cwd": str(cwd), "env": env, "out": self.running.out, "err": self.running.err}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        self.running.pid = self.answer(60)["pid"]
        return self.running


class ForkedProcess:
    """A ``python ARGS`` process forked by tests/cli_forkserver.py, used like a ``subprocess.Popen``
    (``pid``, ``poll``, ``wait``, ``kill``, ``returncode``); its output is in files until it ends."""

    def __init__(self, server: _ForkServer, command: list[str]) -> None:
        import tempfile

        self.server, self.args = server, command
        self.folder = tempfile.mkdtemp(prefix="policylab-run-")
        self.out, self.err = f"{self.folder}/stdout", f"{self.folder}/stderr"
        self.pid = -1
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None else self.wait(0, raise_timeout=False)

    def wait(self, timeout: float | None = None, raise_timeout: bool = True) -> int | None:
        import subprocess

        if self.returncode is None:
            done = self.server.answer(1e9 if timeout is None else timeout)
            if not done:
                if raise_timeout:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                return None
            self.returncode = done["returncode"]
        return self.returncode

    def kill(self) -> None:
        import signal

        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                pass
            self.wait(60)

    def result(self):
        """The ended process as a ``subprocess.CompletedProcess`` (text stdout and stderr)."""
        import shutil
        import subprocess

        read = [Path(path).read_text(errors="replace") for path in (self.out, self.err)]
        shutil.rmtree(self.folder, ignore_errors=True)
        return subprocess.CompletedProcess(self.args, self.returncode, *read)


class FreshProcess(ForkedProcess):
    """The same, as a fresh interpreter (``POLICYLAB_TEST_SUBPROCESS=1``)."""

    def __init__(self, command: list[str], cwd: Path, env: dict) -> None:
        import subprocess

        super().__init__(None, command)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        self.pid = self.popen.pid

    def wait(self, timeout: float | None = None, raise_timeout: bool = True) -> int | None:
        import subprocess

        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            if raise_timeout:
                raise
        return self.returncode

    def kill(self) -> None:
        self.popen.kill()
        self.wait()


_FORK_SERVER: _ForkServer | None = None


def start_python(*args: str, cwd: Path, env: dict | None = None) -> ForkedProcess:
    """``python ARGS`` (a script and its arguments, or ``-m MODULE ...``) started in ``cwd`` with
    ``env`` (default: this process's), forked from a server that imported policylab's modules
    once (tests/cli_forkserver.py): the same code as a fresh interpreter without its 4-8 s of
    imports. One at a time: wait for it (or kill it) before the next run. A fresh interpreter
    instead with POLICYLAB_TEST_SUBPROCESS=1, or when the server could not start or would hand
    its children an initialized CUDA."""
    global _FORK_SERVER
    command, env = [sys.executable, *args], dict(os.environ if env is None else env)
    if os.environ.get("POLICYLAB_TEST_SUBPROCESS"):
        return FreshProcess(command, cwd, env)
    if _FORK_SERVER is None or (_FORK_SERVER.ready and _FORK_SERVER.process.poll() is not None):
        _FORK_SERVER = _ForkServer()
    if not _FORK_SERVER.ready:
        return FreshProcess(command, cwd, env)
    return _FORK_SERVER.start(command, cwd, env)


def run_python(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """``python ARGS`` run to its end (see :func:`start_python`); returns the CompletedProcess
    (text stdout and stderr), or raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    import subprocess

    process = start_python(*args, cwd=cwd, env=env)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.result()
        raise
    return process.result()


def run_cli(*args: str, cwd: Path, timeout: int = 300):
    """Run ``python cli.py ARGS`` from the repository in ``cwd``; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("POLICYLAB_TEST_THREADS", "2")}
    return run_python(str(ROOT / "cli.py"), *args, cwd=cwd, env=env, timeout=timeout)
