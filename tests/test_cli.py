"""``python cli.py`` end to end as a user runs it: every config, TensorBoard output, resume, bad input."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
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
    """The scalar points TensorBoard shows for a run folder: all its event files in order, with the
    purges a resumed run writes applied."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _ok(result):
    assert result.returncode == 0, result.stderr[-4000:]
    return result


TASKS = {"arithmetic": "arithmetic_task", "shapes": "shapes_task"}  # task -> session fixture (conftest.py)


def tiny_overrides(config: Path) -> tuple[str | None, list[str]]:
    """What ``configs/tests/<name>.yaml`` declares for ``configs/<name>.yaml``: the tiny task data
    to write into the run folder (None or a key of TASKS) and command-line overrides, as flags.
    A config that runs tiny with TINY alone (on the bundled Hopper data, say) needs no such file."""
    tiny = config.parent / "tests" / config.name
    if not tiny.is_file():
        return None, []
    declared = yaml.safe_load(tiny.read_text())
    assert set(declared) == {"task", "overrides"}, f"{tiny}: expected the keys task and overrides, got {set(declared)}"
    assert declared["task"] is None or declared["task"] in TASKS, f"{tiny}: task must be null or one of {set(TASKS)}"
    flags = []
    for key, value in (declared["overrides"] or {}).items():
        flags += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return declared["task"], flags


def test_every_tiny_override_file_names_a_config():
    stale = {p.name for p in (ROOT / "configs/tests").glob("*.yaml")} - {c.name for c in CONFIGS}
    assert not stale, f"configs/tests/ has overrides for configs that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_tiny(config, tmp_path, request):
    task, overrides = tiny_overrides(config)
    if task is not None:
        shutil.copytree(request.getfixturevalue(TASKS[task]), tmp_path / "data" / task)
    _ok(run_cli("fit", "--config", str(config), "--trainer.max_steps", "100", *TINY, *overrides, cwd=tmp_path))
    assert list(tmp_path.glob(f"runs/{config.stem}/version_0/checkpoints/last.ckpt"))


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
    text = (ROOT / "configs/td3bc_hopper.yaml").read_text()
    text = text.replace("defaults: defaults/", f"defaults: {ROOT}/configs/defaults/")
    bad.write_text(text.replace("    dataset: hopper", "    bach_size: 256\n    dataset: hopper"))
    result = run_cli("fit", "--config", str(bad), cwd=tmp_path)
    assert result.returncode != 0 and "bach_size" in result.stderr
    assert not (tmp_path / "runs").exists()


def _printed(result) -> dict:
    return yaml.safe_load(_ok(result).stdout)


def test_config_fragments_are_read_first_and_the_run_is_named_after_the_config(tmp_path):
    """``defaults:`` names fragments (relative to the file, recursively) that count as earlier
    --config flags: the file's own values win, nested keys merge; printed and saved configs
    stand alone (defaults: null); the logger is named after the config file."""
    (tmp_path / "fragments").mkdir()
    (tmp_path / "fragments/base.yaml").write_text("trainer:\n  log_every_n_steps: 7\n  max_steps: 5\n")
    (tmp_path / "fragments/family.yaml").write_text(
        "defaults: base.yaml\ntrainer:\n  max_steps: 9\nevaluation:\n  n_episodes: 3\n  every_n_steps: 50\n"
    )
    method = (ROOT / "configs/td3bc_hopper.yaml").read_text().replace("defaults/control.yaml", "fragments/family.yaml")
    (tmp_path / "my_method.yaml").write_text(method + "evaluation:\n  n_episodes: 4\n")
    config = _printed(run_cli("fit", "--config", str(tmp_path / "my_method.yaml"), "--print_config", cwd=tmp_path))
    assert config["defaults"] is None
    assert config["trainer"]["log_every_n_steps"] == 7  # base.yaml, under family.yaml
    assert config["trainer"]["max_steps"] == 1000000  # the method's own value over both fragments
    assert config["evaluation"] == {**config["evaluation"], "n_episodes": 4, "every_n_steps": 50}  # merged
    assert config["trainer"]["logger"]["init_args"]["name"] == "my_method"
    assert config["model"]["class_path"] == "policylab.modules.offline.TD3BC"

    # the printed config is complete: it runs on its own from anywhere, under the same run name
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/printed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    again = _printed(run_cli("fit", "--config", "printed.yaml", "--print_config", cwd=tmp_path / "elsewhere"))
    assert again == config

    # a command-line flag after --config still wins over the file and its fragments
    flags = ("--config", str(tmp_path / "my_method.yaml"), "--trainer.log_every_n_steps", "3", "--print_config")
    assert _printed(run_cli("fit", *flags, cwd=tmp_path))["trainer"]["log_every_n_steps"] == 3


def test_a_missing_or_circular_fragment_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: nowhere/base.yaml\n")
    result = run_cli("fit", "--config", str(tmp_path / "a.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0].startswith("error: ") and len(result.stderr.strip().splitlines()) <= 2
    assert f"{tmp_path / 'a.yaml'}: defaults: nowhere/base.yaml not found" in result.stderr
    (tmp_path / "b.yaml").write_text("defaults: c.yaml\n")
    (tmp_path / "c.yaml").write_text("defaults: [b.yaml]\n")
    result = run_cli("fit", "--config", str(tmp_path / "b.yaml"), cwd=tmp_path)
    assert result.returncode != 0 and "defaults: b.yaml includes itself" in result.stderr
    (tmp_path / "d.yaml").write_text("defaults: {trainer: 1}\n")
    result = run_cli("fit", "--config", str(tmp_path / "d.yaml"), cwd=tmp_path)
    assert result.returncode != 0 and "d.yaml: defaults: expected a fragment path or a list of them" in result.stderr
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
