"""Bad input and faults at the command line (issue 17): each stops with one ``error:`` line that
names the file, key or value, runs nothing from a checkpoint, and leaves the run records as
they were. Most cases call ``policylab.cli.main`` in-process (they stop before training); one
tiny run made by ``python cli.py`` serves them all, and one subprocess resumes it."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import fsspec
import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from policylab.callbacks.checkpoint import AtomicCheckpoint, CheckpointWriteError
from policylab.cli import changed_hyperparameters, condense_parse_error, main

TD3BC = str(ROOT / "configs/td3bc_hopper.yaml")
A2PR = str(ROOT / "configs/a2pr_hopper.yaml")
TINY = [
    "--trainer.log_every_n_steps",
    "20",
    "--evaluation.every_n_steps",
    "50",
    "--evaluation.n_episodes",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]
RUN = Path("runs/td3bc_hopper/version_0")


def cli(*args: str) -> tuple[int, str]:
    """``python cli.py ARGS`` in-process: (exit code, the error line(s) it printed)."""
    try:
        main(list(args))
    except SystemExit as exit:
        if isinstance(exit.code, str):  # sys.exit("error: ...") prints the message at exit
            return 1, exit.code
        return exit.code or 0, ""
    return 0, ""


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def steps(run_dir: Path, tag: str) -> list[int]:
    """The steps TensorBoard shows for ``tag`` in a run folder (all its event files, purges applied)."""
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, hopper_hdf5) -> Path:
    """A TD3BC run "killed" after step 60: last.ckpt holds step 50, TensorBoard points go to 59."""
    folder = tmp_path_factory.mktemp("killed_run")
    data = ["--data.init_args.dataset", str(hopper_hdf5)]
    result = run_cli("fit", "--config", TD3BC, *data, "--trainer.max_steps", "60", *TINY, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(folder / RUN / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 50
    return folder


@pytest.fixture
def run_copy(killed_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the killed run, the working directory for the test."""
    shutil.copytree(killed_run / "runs", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- parse errors
def test_config_typos_and_wrong_types_are_one_line_naming_key_and_source(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(TD3BC).read_text().replace("defaults: defaults/", f"defaults: {ROOT}/configs/defaults/"))
    bad.write_text(bad.read_text().replace("dataset:", "datset:"))
    cases = [
        (["--config", TD3BC, "--model.init_args.alpah", "2.5"], "model.init_args.alpah: not an option of", "alpha"),
        (
            ["--config", str(bad)],
            "data.init_args.datset: not an option of",
            f"(did you mean dataset?); it is set in {bad}",
        ),
        (["--config", TD3BC, "--model.init_args.alpha", "abc"], "model.init_args.alpha:", "abc"),
        (["--config", TD3BC, "--trainer.max_stepz", "3"], "unrecognized arguments: --trainer.max_stepz", ""),
    ]
    for args, cause, detail in cases:
        code, _ = cli("fit", *args)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 2, err
        assert err[0].startswith(f"error: {cause}") and detail in err[0], err[0]
        assert err[1] == "(options: python cli.py fit --help)" or err[1].endswith("fit --help)"), err[1]
    assert not (tmp_path / "runs").exists()


def test_condensed_parse_error_keeps_an_unknown_layout_whole():
    assert condense_parse_error("something new: x", []) == "something new: x"
    nested = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Problem with given class_path 'policylab.modules.offline.TD3BC':\n"
        "        Parser key \"tau\":\n          Expected a <class 'float'>. Got value: x\n"
        "    - Expected a <class 'NoneType'>\n  Given value: NestedArg(key='tau', val='x')"
    )
    assert condense_parse_error(nested, ["--model.init_args.tau", "x"]) == (
        "model.init_args.tau: Expected a <class 'float'>. Got value: x; it is set on the command line"
    )


# ----------------------------------------------------------------------------- checkpoints
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_remote_and_code_carrying_checkpoints_are_refused_before_loading(run_copy, hopper_hdf5, monkeypatch):
    """URLs are refused whatever they hold (Lightning would load http with weights_only=False);
    a checkpoint naming a class outside policylab/lightning/torch is refused before the import."""
    data = ["--data.init_args.dataset", str(hopper_hdf5)]
    before = listing(run_copy / RUN)
    evil = run_copy / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Evil()}, evil)
    with fsspec.open("memory://evil.ckpt", "wb") as f:
        f.write(evil.read_bytes())
    for url in ("http://127.0.0.1:9/evil.ckpt", evil.as_uri(), "memory://evil.ckpt"):
        code, err = cli("validate", "--config", TD3BC, *data, "--ckpt_path", url, *TINY)
        assert code == 1 and err.startswith(f"error: refused to load {url}: policylab loads only local"), err
    code, err = cli("validate", "--config", TD3BC, *data, "--ckpt_path", str(evil), *TINY)
    assert code == 1 and "refused to load" in err and "evil.ckpt" in err and "GLOBAL" in err, err

    # a weights-only checkpoint whose class path (top level or nested) names another module
    (run_copy / "evil_module_17.py").write_text("open('imported', 'w').close()\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(run_copy))
    good = torch.load(run_copy / RUN / "checkpoints/last.ckpt", weights_only=True)
    for where in ("top", "nested"):
        ckpt = dict(good, hyper_parameters=dict(good["hyper_parameters"]))
        if where == "top":
            ckpt["hyper_parameters"]["_class_path"] = "evil_module_17.Model"
        else:
            ckpt["hyper_parameters"]["net"] = {"class_path": "evil_module_17.Model", "init_args": {}}
        torch.save(ckpt, run_copy / f"{where}.ckpt")
        code, err = cli("validate", "--config", TD3BC, *data, "--ckpt_path", f"{where}.ckpt", *TINY)
        assert code == 1 and err.startswith(f"error: refused to use {where}.ckpt: its hyperparameters name"), err
        assert "evil_module_17.Model" in err and "nothing of it was imported" in err
    code, err = cli("fit", "--config", TD3BC, *data, "--ckpt_path", "last", "--weights_only", "false", *TINY)
    assert code == 1 and "--weights_only false is refused" in err, err
    assert not (run_copy / "pwned").exists() and not (run_copy / "imported").exists()
    assert "evil_module_17" not in sys.modules
    assert listing(run_copy / RUN) == before


def test_a_resume_under_another_method_or_hyperparameters_is_refused(run_copy, hopper_hdf5, tmp_path):
    data = ["--data.init_args.dataset", str(hopper_hdf5)]
    last = str(RUN / "checkpoints/last.ckpt")
    before = listing(run_copy / RUN)
    code, err = cli("fit", "--config", A2PR, *data, "--ckpt_path", last, *TINY)
    assert code == 1 and err == (
        f"error: {last} is a policylab.modules.offline.TD3BC checkpoint but the config's model is "
        "policylab.modules.A2PR: use the config TD3BC was trained with, or drop --ckpt_path."
    ), err
    code, err = cli("fit", "--config", TD3BC, *data, "--ckpt_path", "last", "--model.init_args.actor_lr", "1e-3")
    assert code == 1 and err.startswith(f"error: resuming {last} with hyperparameters that differ"), err
    assert "actor_lr 0.0003 -> 0.001" in err and "critic_lr" not in err
    code, err = cli("fit", "--config", TD3BC, *data, "--ckpt_path", "best")
    assert code == 1 and err == "error: --ckpt_path best: policylab's CLI takes last or a checkpoint file", err
    # speed switches may change on resume; the refusal lists every changed value, nested ones by key
    assert changed_hyperparameters(
        {"tau": 0.005, "compile": False, "net": {"class_path": "a.B", "init_args": {"width": 64}}},
        {"tau": 0.005, "compile": True, "net": {"class_path": "a.B", "init_args": {"width": 32}}},
        skip=("compile",),
    ) == [("net.init_args.width", 64, 32)]

    walker = tmp_path / "walker.hdf5"
    from policylab.datamodules import write_d4rl_hdf5

    rng = np.random.default_rng(0)
    n = 200
    write_d4rl_hdf5(
        walker,
        {
            "observations": rng.normal(size=(n, 17)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, 6)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": (np.arange(n) % 100 == 99),
        },
        {"env_id": "Walker2d-v5"},
    )
    for command in ("validate", "fit"):
        code, err = cli(command, "--config", TD3BC, "--data.init_args.dataset", str(walker), "--ckpt_path", last, *TINY)
        assert code == 1 and err.startswith(f"error: {last} was trained on data with obs_dim 11, action_dim 3, "), err
        assert f"the data {walker} has obs_dim 17, action_dim 6" in err
    assert listing(run_copy / RUN) == before


def test_a_truncated_checkpoint_is_named(run_copy, hopper_hdf5):
    last = run_copy / RUN / "checkpoints/last.ckpt"
    cut = run_copy / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code, err = cli(
        "validate", "--config", TD3BC, "--data.init_args.dataset", str(hopper_hdf5), "--ckpt_path", "cut.ckpt"
    )
    assert code == 1 and err.startswith(f"error: cut.ckpt is truncated or corrupt ({cut.stat().st_size} bytes"), err
    assert "PytorchStreamReader" in err and "\n" not in err


def test_validate_takes_the_checkpoints_hyperparameters_and_keeps_config_yaml(run_copy, hopper_hdf5, capsys):
    config = (run_copy / RUN / "config.yaml").read_bytes()
    code, err = cli(
        "validate",
        "--config",
        TD3BC,
        "--data.init_args.dataset",
        str(hopper_hdf5),
        "--ckpt_path",
        "last",
        "--model.init_args.actor_lr",
        "1e-3",
        *TINY,
    )
    assert code == 0, err
    assert (
        f"note: validate uses the hyperparameters of {RUN / 'checkpoints/last.ckpt'}: actor_lr 0.0003 (config: 0.001)"
        in capsys.readouterr().err
    )
    assert (run_copy / RUN / "config.yaml").read_bytes() == config
    written = (run_copy / RUN / "config-validate-1.yaml").read_text()
    assert "actor_lr: 0.0003" in written


# ----------------------------------------------------------------------------- run records
def test_resume_keeps_config_yaml_and_purges_points_past_the_checkpoint(run_copy, hopper_hdf5):
    run = run_copy / RUN
    config = (run / "config.yaml").read_bytes()
    assert steps(run, "train/critic_loss") == [19, 39, 59]  # the killed run logged past its checkpoint (50)
    result = run_cli(
        "fit",
        "--config",
        TD3BC,
        "--data.init_args.dataset",
        str(hopper_hdf5),
        "--trainer.max_steps",
        "100",
        "--ckpt_path",
        "last",
        *TINY,
        cwd=run_copy,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "config.yaml").read_bytes() == config
    assert "ckpt_path: runs/td3bc_hopper/version_0/checkpoints/last.ckpt" in (run / "config-resume-1.yaml").read_text()
    # the resumed run logs step 59 again; without the purge TensorBoard shows 59 twice
    assert steps(run, "train/critic_loss") == [19, 39, 59, 79, 99]
    assert steps(run, "eval/normalized_score") == [50, 100]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 100


def test_a_run_failing_before_its_first_step_leaves_no_run_folder(run_copy, hopper_hdf5, monkeypatch):
    from policylab.datamodules import DatasetError, OfflineTransitionDataModule

    def broken_setup(self, stage=None):
        raise DatasetError("broken.hdf5 row 7: rewards is NaN; fix or drop that row")

    monkeypatch.setattr(OfflineTransitionDataModule, "setup", broken_setup)
    data = ["--data.init_args.dataset", str(hopper_hdf5)]
    before = listing(run_copy / RUN)
    code, err = cli("fit", "--config", TD3BC, *data, "--trainer.logger.init_args.name", "fresh", *TINY)
    assert code == 1 and err == "error: broken.hdf5 row 7: rewards is NaN; fix or drop that row"
    assert not (run_copy / "runs/fresh").exists()
    # a failed resume adds nothing to the run it resumes (no config, no event file)
    code, err = cli("fit", "--config", TD3BC, *data, "--ckpt_path", "last", "--trainer.max_steps", "100", *TINY)
    assert code == 1 and "broken.hdf5 row 7" in err
    assert listing(run_copy / RUN) == before
    # a folder that holds an earlier run's files is never removed
    code, err = cli("fit", "--config", TD3BC, *data, "--trainer.logger.init_args.version", "version_0", *TINY)
    assert code == 1 and "already holds checkpoints" in err
    assert listing(run_copy / RUN) == before


class _Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(64, 2), batch_size=8)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_previous(tmp_path, monkeypatch):
    def fit(steps: int, ckpt_path=None):
        trainer = L.Trainer(
            max_steps=steps,
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[AtomicCheckpoint(tmp_path / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=2)],
        )
        trainer.fit(_Regression(), ckpt_path=ckpt_path)

    fit(2)
    last = tmp_path / "ckpt/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2

    def full_disk(checkpoint, filepath):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", full_disk)
    with pytest.raises(CheckpointWriteError) as failure:
        fit(4, ckpt_path=last)
    assert str(failure.value).startswith(
        f"could not write checkpoint {last}: no space left on device (the previous one is kept)"
    )
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["last.ckpt"]


# ----------------------------------------------------------------------------- record
def test_record_refuses_zero_steps_and_removes_a_killed_writes_temporary_file(tmp_path, capsys):
    from policylab.datamodules import read_d4rl_hdf5
    from policylab.datasets.__main__ import main as datasets_main

    out = tmp_path / "rec.hdf5"
    for steps_arg in ("0", "-5"):
        with pytest.raises(SystemExit) as exit:
            datasets_main(["record", "--env", "Hopper-v5", "--steps", steps_arg, "--out", str(out)])
        assert exit.value.code == f"error: --steps must be a positive number of env steps, got {steps_arg}"
    assert list(tmp_path.iterdir()) == []

    stale = tmp_path / ".rec.hdf5.x1y2z3.tmp"  # what a write killed by SIGKILL leaves
    stale.write_bytes(b"\x89HDF half")
    other = tmp_path / ".other.hdf5.x1y2z3.tmp"  # another target's: not ours to remove
    other.write_bytes(b"")
    datasets_main(["record", "--env", "Hopper-v5", "--steps", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    assert f"removed {stale}, left by an interrupted write of rec.hdf5" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.hdf5.x1y2z3.tmp", "rec.hdf5"]
    assert len(read_d4rl_hdf5(out)[0]["rewards"]) == 30
