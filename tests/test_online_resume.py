"""A ``python cli.py fit`` run of online DPO on the addition task, SIGKILLed during generation and
then (after resuming) during training, resumed with ``--ckpt_path last``: it ends with the same
weights, the same stored pairs and the same logged points as a run that was never interrupted,
and its TensorBoard folder holds each point once.

The kill moments are set by the test's own wrapper script (``PAUSE``), not by library code: it
patches the sampler (the process stops inside ``HFSampler.sample`` of a chosen iteration, its
samples drawn but not stored) or the training step (the process stops after the forward of a
chosen step, before its backward and optimizer step), writes a marker file and sleeps; the test
kills it with SIGKILL when the marker appears. Iterations of 3 steps and a checkpoint every 2
steps put the last checkpoint of the first kill at an iteration boundary (step 2, so iteration 1
is sampled again) and that of the second kill inside an iteration (step 4, iteration 1's pairs
come from the checkpoint and must not be sampled again)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
from conftest import ROOT, run_cli, start_python  # noqa: E402

WRAPPER = '''
"""python cli.py ARGS, paused at a chosen moment: PAUSE=generation:I stops inside the sampling of
iteration I, PAUSE=training:S inside training step S (after its forward); a file "paused" says so."""
import os, runpy, sys, time
from pathlib import Path

from policylab.modules.preference import OnlineDPO
from policylab.sampling import HFSampler

where, at = os.environ["PAUSE"].split(":")
at = int(at)
state = {"iteration": None}


def pause():
    Path("paused").write_text(str(os.getpid()))
    time.sleep(600)


run_iteration, sample, training_step = OnlineDPO.run_iteration, HFSampler.sample, OnlineDPO.training_step


def run_iteration_(self, data, iteration):
    state["iteration"] = iteration
    return run_iteration(self, data, iteration)


def sample_(self, *args, **kwargs):
    out = sample(self, *args, **kwargs)
    if where == "generation" and state["iteration"] == at:
        pause()
    return out


def training_step_(self, batch, batch_idx):
    out = training_step(self, batch, batch_idx)
    if where == "training" and self.global_step == at:
        pause()
    return out


OnlineDPO.run_iteration, HFSampler.sample, OnlineDPO.training_step = (
    run_iteration_, sample_, training_step_
)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

STEPS = 8  # the last checkpoint (every 2 steps) is the end of the run
FLAGS = [
    "--config",
    str(ROOT / "configs/online_dpo_arithmetic.yaml"),
    "--model.init_args.model",
    "data/arithmetic/model",
    "--model.init_args.generate_every_n_steps",
    "3",
    "--model.init_args.reference_update",
    "previous_iterate",  # the reference changes at every iteration: it must be restored too
    "--model.init_args.temperature",
    "1.0",
    "--model.init_args.keep_ties",
    "true",  # the untrained model's answers are mostly all wrong: keep tied pairs so every step trains
    "--data.init_args.prompts_per_iteration",
    "8",
    "--data.init_args.batch_size",
    "4",
    "--trainer.max_steps",
    str(STEPS),
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.callbacks.init_args.every_n_steps",
    "100",
    "--checkpoint.every_n_train_steps",
    "2",
    "--checkpoint.monitor",
    "null",  # no evaluation in 9 steps: every checkpoint kept, as step=N.ckpt, beside last.ckpt
    "--checkpoint.save_top_k",
    "-1",
    "--checkpoint.filename",
    "step={step}",
    "--progress_bar.refresh_rate",
    "50",
]


def _folder(tmp_path: Path, name: str, task: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(task, folder / "data" / "arithmetic")
    return folder


def _run_killed(folder: Path, pause: str, *extra: str) -> None:
    """The wrapped CLI run in ``folder``, SIGKILLed once it reports the pause ``pause``."""
    import os

    (folder / "paused").unlink(missing_ok=True)
    (folder / "pause_cli.py").write_text(WRAPPER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PAUSE": pause}
    process = start_python(
        str(folder / "pause_cli.py"), str(ROOT / "cli.py"), "fit", *FLAGS, *extra, cwd=folder, env=env
    )
    deadline = time.monotonic() + 120
    while not (folder / "paused").is_file():
        if process.poll() is not None:
            result = process.result()
            pytest.fail(f"the run ended (rc {result.returncode}) before pausing at {pause}: {result.stderr[-3000:]}")
        assert time.monotonic() < deadline, f"no pause at {pause} within 120 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(60)
    assert process.result().returncode == -signal.SIGKILL


def _checkpoint(folder: Path, name: str = "last.ckpt") -> dict:
    return torch.load(folder / "runs/online_dpo_arithmetic/version_0/checkpoints" / name, weights_only=True)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard folder, read as TensorBoard reads it (all event
    files in order, the points a resumed run purged left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "runs/online_dpo_arithmetic/version_0"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _ok(result):
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_killed_in_generation_and_in_training_resumes_with_nothing_lost(tmp_path, arithmetic_task):
    straight = _folder(tmp_path, "straight", arithmetic_task)
    _ok(run_cli("fit", *FLAGS, cwd=straight))

    killed = _folder(tmp_path, "killed", arithmetic_task)
    # (a) killed while sampling iteration 1 (steps 3..5): the last checkpoint is step 2's (iteration 0).
    _run_killed(killed, "generation:1")
    first = _checkpoint(killed)
    assert first["global_step"] == 2 and first["OnlinePromptDataModule"]["iteration"] == 0
    # (b) resumed, then killed in step 5 after its forward: the last checkpoint is step 4's,
    # inside iteration 1, whose pairs it holds.
    _run_killed(killed, "training:5", "--ckpt_path", "last")
    second = _checkpoint(killed)
    assert second["global_step"] == 4 and second["OnlinePromptDataModule"]["iteration"] == 1
    _ok(run_cli("fit", *FLAGS, "--ckpt_path", "last", cwd=killed))

    want, got = _checkpoint(straight), _checkpoint(killed)
    assert got["global_step"] == want["global_step"] == STEPS
    # the same weights (policy and the previous-iterate reference) and optimizer state, bit for bit
    assert want["state_dict"].keys() == got["state_dict"].keys()
    for name, value in want["state_dict"].items():
        assert torch.equal(value, got["state_dict"][name]), name
    for a, b in zip(want["optimizer_states"][0]["state"].values(), got["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the same last iteration's pairs
    want_data, got_data = want["OnlinePromptDataModule"], got["OnlinePromptDataModule"]
    assert want_data["iteration"] == got_data["iteration"] == 2
    assert want_data["pairs"].keys() == got_data["pairs"].keys()
    assert all(torch.equal(v, got_data["pairs"][k]) for k, v in want_data["pairs"].items())
    # the step-4 checkpoint held iteration 1's pairs, the ones the straight run trained on
    pairs = _checkpoint(straight, "step=4.ckpt")["OnlinePromptDataModule"]["pairs"]
    assert all(torch.equal(v, second["OnlinePromptDataModule"]["pairs"][k]) for k, v in pairs.items())

    # TensorBoard: every point once, at the straight run's steps with its values; one point of
    # online/iteration per iteration (iteration 1 was logged once although sampled twice: the
    # first time by the run killed during its generation, which never logged it).
    want_scalars, got_scalars = _scalars(straight), _scalars(killed)
    assert want_scalars.keys() == got_scalars.keys() and "train/loss" in got_scalars
    for tag, points in got_scalars.items():  # the resumed runs' points (the last one at each step)
        last, want = dict(points), dict(want_scalars[tag])
        if tag.endswith("_per_s"):  # a speed: the same steps, values of their own
            assert last.keys() == want.keys(), tag
        else:
            assert last == want, tag
    assert [v for _, v in got_scalars["online/iteration"]] == [0.0, 1.0, 2.0]
    duplicates = {tag: steps for tag, p in got_scalars.items() if len(steps := [s for s, _ in p]) != len(set(steps))}
    assert not duplicates, f"TensorBoard points logged twice (tag: steps): {duplicates}"
