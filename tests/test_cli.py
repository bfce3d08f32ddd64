"""``python cli.py`` end to end as a user runs it: every config, TensorBoard output, resume, bad input."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TINY = [
    "--trainer.log_every_n_steps",
    "20",
    "--evaluation.every_n_steps",
    "100",
    "--evaluation.n_episodes",
    "2",
    "--progress_bar.refresh_rate",
    "50",
]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def _ok(result):
    assert result.returncode == 0, result.stderr[-4000:]
    return result


_WRITTEN: dict[str, Path] = {}


def tiny_overrides(config: Path, folder: Path) -> list[str]:
    """What makes a config small besides TINY: online methods collect little before learning;
    language-model and diffusion configs get a small task (addition, shapes at 8x8 pixels) written
    into the run folder (their paths are relative to it), and second stages (DPO, reward models,
    the diffusion methods) start from the initial model instead of a first-stage run."""
    text = config.read_text()
    overrides = []
    if "EnvInteraction" in text:
        overrides += ["--trainer.callbacks.init_args.random_steps", "200"]
    if "ReplayBufferDataModule" in text:
        overrides += ["--data.init_args.capacity", "5000"]
    if "data/arithmetic" in text:
        pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
        import subprocess
        import sys

        subprocess.run(
            [
                sys.executable,
                "-m",
                "policylab.tasks.arithmetic",
                "--out",
                "data/arithmetic",
                "--sft-rows",
                "256",
                "--pairs",
                "256",
                "--eval-rows",
                "16",
                "--val-pairs",
                "64",
            ],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        if "GreedyAccuracy" in text:
            overrides += ["--trainer.callbacks.init_args.every_n_steps", "50"]
        overrides += ["--checkpoint.every_n_train_steps", "50"]
        if "runs/sft_arithmetic" in text:  # a second stage: start from the initial model instead
            overrides += ["--model.init_args.model", "data/arithmetic/model"]
    if "data/shapes" in text:
        pytest.importorskip("diffusers", reason="the diffusion extras (pip install -e '.[diffusion]')")
        import subprocess
        import sys

        if "shapes" not in _WRITTEN:  # written once, copied into each run folder
            _WRITTEN["shapes"] = Path(tempfile.mkdtemp(prefix="policylab-shapes-")) / "shapes"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "policylab.tasks.shapes",
                    "--out",
                    str(_WRITTEN["shapes"]),
                    "--size",
                    "8",
                    "--pretrain",
                    "32",
                    "--pairs",
                    "32",
                    "--prompts",
                    "8",
                    "--eval-prompts",
                    "4",
                ],
                check=True,
                capture_output=True,
            )
        shutil.copytree(_WRITTEN["shapes"], folder / "data/shapes")
        overrides += [
            "--trainer.max_steps",
            "4",
            "--trainer.callbacks.init_args.every_n_steps",
            "2",
            "--trainer.callbacks.init_args.num_inference_steps",
            "2",
            "--checkpoint.every_n_train_steps",
            "2",
            "--data.init_args.resolution",
            "8",
            "--data.init_args.batch_size",
            "4",
        ]
        if "num_inference_steps" in text:  # the methods that sample while they train
            overrides += ["--model.init_args.num_inference_steps", "2"]
        if "runs/shapes_pretrain" in text:  # a second stage: start from the untrained model instead
            overrides += ["--model.init_args.model", "data/shapes/model"]
        if "model_pairs.parquet" in text:  # the untrained model's samples would all tie: drawn pairs
            overrides += ["--data.init_args.train_file", "data/shapes/pairs.parquet"]
    return overrides


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_tiny(config, tmp_path):
    _ok(
        run_cli(
            "fit",
            "--config",
            str(config),
            "--trainer.max_steps",
            "100",
            *tiny_overrides(config, tmp_path),
            *TINY,
            cwd=tmp_path,
        )
    )
    assert list(tmp_path.glob("runs/*/version_0/checkpoints/last.ckpt"))


@pytest.mark.slow
def test_fit_writes_scores_resumes_validates_and_tests(tmp_path, hopper_hdf5):
    config = str(ROOT / "configs/td3bc_hopper.yaml")
    data = ["--data.init_args.dataset", str(hopper_hdf5)]
    _ok(run_cli("fit", "--config", config, *data, "--trainer.max_steps", "200", *TINY, cwd=tmp_path))
    run = tmp_path / "runs/td3bc_hopper/version_0"
    scalars = _scalars(run)
    assert [s for s, _ in scalars["eval/normalized_score"]] == [100, 200]
    assert {"eval/return", "train/critic_loss", "train/actor_loss", "train/lambda"} <= set(scalars)
    assert (run / "checkpoints/last.ckpt").is_file() and list(run.glob("checkpoints/best-*.ckpt"))

    # Checkpoints load with weights_only=True and carry the observation statistics.
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 200
    assert ckpt["state_dict"]["obs_normalizer.std"].shape == (11,)
    assert ckpt["state_dict"]["obs_normalizer.std"].min() > 1e-3

    # A fresh run must not overwrite those checkpoints.
    again = run_cli(
        "fit",
        "--config",
        config,
        *data,
        "--trainer.max_steps",
        "200",
        "--trainer.logger.init_args.version",
        "version_0",
        *TINY,
        cwd=tmp_path,
    )
    assert again.returncode != 0 and "already holds checkpoints" in again.stderr
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 200

    # Resume the latest run with --ckpt_path last: same directory, the step count goes on, and
    # last.ckpt is rewritten (no last-v1.ckpt) even with another checkpoint interval.
    _ok(
        run_cli(
            "fit",
            "--config",
            config,
            *data,
            "--trainer.max_steps",
            "300",
            "--ckpt_path",
            "last",
            "--checkpoint.every_n_train_steps",
            "50",
            *TINY,
            cwd=tmp_path,
        )
    )
    assert not (tmp_path / "runs/td3bc_hopper/version_1").exists()
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 300
    assert sorted(p.name for p in (run / "checkpoints").glob("last*")) == ["last.ckpt"]
    steps = [s for s, _ in _scalars(run)["eval/normalized_score"]]
    assert steps == [100, 200, 300]

    for command in ("validate", "test"):
        result = _ok(
            run_cli(
                command,
                "--config",
                config,
                *data,
                "--ckpt_path",
                "last",
                "--trainer.enable_progress_bar",
                "false",
                *TINY,
                cwd=tmp_path,
            )
        )
        assert (
            "eval/normalized_score" in result.stdout
            and f"{'val' if command == 'validate' else 'test'}/td_loss" in result.stdout
        )


def test_config_typo_is_named(tmp_path):
    result = run_cli(
        "fit", "--config", str(ROOT / "configs/td3bc_hopper.yaml"), "--model.init_args.alpah", "2.5", cwd=tmp_path
    )
    assert result.returncode != 0 and "alpah" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs/td3bc_hopper.yaml").read_text().replace("batch_size:", "bach_size:"))
    result = run_cli("fit", "--config", str(bad), cwd=tmp_path)
    assert result.returncode != 0 and "bach_size" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_dataset_is_named_and_nothing_written(tmp_path):
    result = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs/td3bc_hopper.yaml"),
        "--data.init_args.dataset",
        "missing/file.hdf5",
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "missing/file.hdf5" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_env_id_is_named(tmp_path, hopper_hdf5):
    result = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs/td3bc_hopper.yaml"),
        "--data.init_args.dataset",
        str(hopper_hdf5),
        "--data.init_args.env_id",
        "Hoppr-v5",
        "--trainer.max_steps",
        "5",
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "'Hoppr-v5'" in result.stderr


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, hopper_hdf5):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil()}, evil)
    result = run_cli(
        "validate",
        "--config",
        str(ROOT / "configs/td3bc_hopper.yaml"),
        "--data.init_args.dataset",
        str(hopper_hdf5),
        "--ckpt_path",
        str(evil),
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "refused to load" in result.stderr and "evil.ckpt" in result.stderr
    assert not (tmp_path / "pwned").exists()
