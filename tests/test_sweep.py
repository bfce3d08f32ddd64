"""``python -m policylab.sweep``: a tiny sweep run to its end, and the same sweep killed in the
middle and rerun (finished runs skipped, the interrupted one resumed, the same table)."""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_python, start_python

CONFIGS = [str(ROOT / "configs/td3bc_hopper.yaml"), str(ROOT / "configs/iql_hopper.yaml")]
STEPS = 60


def _sweep(hopper_hdf5: Path, out: Path) -> list[str]:
    return [
        "-m",
        "policylab.sweep",
        "--configs",
        *CONFIGS,
        "--datasets",
        str(hopper_hdf5),
        "--seeds",
        "0",
        "1",
        "--max-steps",
        str(STEPS),
        "--out",
        str(out),
        "--set",
        "evaluation.every_n_steps=20",
        "--set",
        "evaluation.n_episodes=1",
        "--set",
        "trainer.log_every_n_steps=20",
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _rows(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_sweep_table_and_resume_after_kill(tmp_path, hopper_hdf5):
    # 1. Uninterrupted: 2 configs x 1 dataset x 2 seeds, to the end.
    whole = tmp_path / "whole"
    result = run_python(*_sweep(hopper_hdf5, whole), cwd=tmp_path, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = _rows(whole / "table.csv")
    assert [(r["method"], r["dataset"], r["seeds"]) for r in rows] == [
        ("td3bc_hopper", "hopper_random-v5", "2"),
        ("iql_hopper", "hopper_random-v5", "2"),
    ]
    scores = _rows(whole / "scores.csv")
    assert sorted({int(r["step"]) for r in scores}) == [20, 40, 60] and len(scores) == 4 * 3
    # the table's statistics, recomputed here from every evaluation of every run
    for row in rows:
        per_seed = {}
        for r in scores:
            if r["method"] == row["method"]:
                per_seed.setdefault(r["seed"], {})[int(r["step"])] = float(r["normalized_score"])
        last = torch.tensor([s[60] for s in per_seed.values()], dtype=torch.float64)
        last3 = torch.tensor([(s[20] + s[40] + s[60]) / 3 for s in per_seed.values()], dtype=torch.float64)
        best = torch.tensor([max(s.values()) for s in per_seed.values()], dtype=torch.float64)
        for name, values in (("last", last), ("last3", last3), ("max", best)):
            assert float(row[f"{name}_mean"]) == pytest.approx(values.mean().item(), rel=1e-9)
            assert float(row[f"{name}_std"]) == pytest.approx(values.std(unbiased=False).item(), rel=1e-9, abs=1e-12)
    assert "| td3bc_hopper | hopper_random-v5 | 2 |" in (whole / "table.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:  # the optional extra 'sweep'
        assert (whole / "curves-hopper_random-v5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # 2. The same sweep, killed (SIGKILL) after its first run finished, while the second runs and
    # has a checkpoint before max_steps.
    cut = tmp_path / "cut"
    first = cut / "runs/td3bc_hopper/hopper_random-v5/seed0"
    second = cut / "runs/td3bc_hopper/hopper_random-v5/seed1"
    sweep = start_python(*_sweep(hopper_hdf5, cut), cwd=tmp_path, env=_env())
    deadline = time.time() + 240
    while not (second / "checkpoints/last.ckpt").is_file():
        assert sweep.poll() is None and time.time() < deadline, "the sweep ended before its second run checkpointed"
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait(60)
    sweep.result()
    assert (first / "finished.json").is_file() and not (second / "finished.json").exists()
    killed_at = torch.load(second / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    assert 0 < killed_at < STEPS
    first_files = sorted(p.name for p in first.rglob("*"))
    first_events = {p: p.stat().st_mtime_ns for p in first.glob("events.out.tfevents.*")}

    # 3. Rerun: the first run is skipped, the second resumed from its checkpoint, the rest trained.
    result = run_python(*_sweep(hopper_hdf5, cut), cwd=tmp_path, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"skip   {first} (finished)" in result.stdout
    assert f"resume {second} (from step {killed_at})" in result.stdout
    assert "config-resume-1.yaml" in {p.name for p in second.iterdir()}
    assert sorted(p.name for p in first.rglob("*")) == first_files
    assert {p: p.stat().st_mtime_ns for p in first.glob("events.out.tfevents.*")} == first_events
    # same seeds, same scores: every evaluation, and so the table, as in the uninterrupted sweep
    assert (cut / "scores.csv").read_text() == (whole / "scores.csv").read_text()
    assert (cut / "table.csv").read_text() == (whole / "table.csv").read_text()
    assert (cut / "table.md").read_text() == (whole / "table.md").read_text()


def test_sweep_refuses_bad_arguments(tmp_path):
    result = run_python(
        "-m", "policylab.sweep", "--configs", "nope.yaml", "--datasets", "x", "--max-steps", "1", "--out", "o",
        cwd=tmp_path, env=_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "nope.yaml is not a file" in result.stderr
    config = str(ROOT / "configs/td3bc_hopper.yaml")
    result = run_python(
        "-m", "policylab.sweep", "--configs", config, "--datasets", "x", "--max-steps", "1", "--out", "o",
        "--set", "evaluation.every_n_steps", cwd=tmp_path, env=_env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "expected KEY=VALUE" in result.stderr


def test_run_scores_is_the_sweep():
    spec = importlib.util.spec_from_file_location("run_scores", ROOT / "benchmarks/run_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--configs", "td3bc_hopper", "--seeds", "0", "1", "--steps", "500", "--out", "o"]
    argv += ["--", "--evaluation.every_n_steps", "100", "--trainer.log_every_n_steps=50"]
    assert module.sweep_args(argv) == [
        "--configs", str(ROOT / "configs/td3bc_hopper.yaml"), "--datasets", "hopper-medium-replay-v5",
        "--seeds", "0", "1", "--max-steps", "500", "--parallel", "2", "--out", "o",
        "--set", "evaluation.every_n_steps=100", "--set", "trainer.log_every_n_steps=50",
    ]  # fmt: skip
