"""DDP on two CPU processes through ``python cli.py``: DPO trains, checkpoints once, and its
validation metrics, gathered from both processes, equal those of one process on the same pairs."""

import re
import shutil

import pytest
from conftest import ROOT, run_cli

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")

DDP = ["--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp"]


def _metric(stdout: str, name: str) -> float:
    match = re.search(re.escape(name) + r"\s*[│|]\s*([-0-9.e]+)", stdout)
    assert match, f"{name} not in the printed metrics:\n{stdout[-3000:]}"
    return float(match.group(1))


def test_dpo_under_ddp_on_two_cpu_processes(tmp_path, arithmetic_task):
    shutil.copytree(arithmetic_task, tmp_path / "data/arithmetic")
    config = [
        "--config",
        str(ROOT / "configs/dpo_arithmetic.yaml"),
        "--model.init_args.model",
        "data/arithmetic/model",
        "--model.init_args.lr",
        "1e-3",
        "--data.init_args.val_file",
        "data/arithmetic/pairs.jsonl",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "5",
        "--trainer.callbacks.init_args.every_n_steps",
        "10",
        "--checkpoint.every_n_train_steps",
        "10",
    ]
    fit = run_cli("fit", *config, "--trainer.max_steps", "20", *DDP, cwd=tmp_path, timeout=400)
    assert fit.returncode == 0, fit.stderr[-4000:]
    run = tmp_path / "runs/dpo_arithmetic/version_0"
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "hf_model/config.json").is_file()
    assert not (tmp_path / "runs/dpo_arithmetic/version_1").exists()  # one run folder for both processes

    ckpt = ["--ckpt_path", str(run / "checkpoints/last.ckpt"), "--trainer.logger", "false"]
    two = run_cli("validate", *config, *ckpt, *DDP, cwd=tmp_path, timeout=400)
    one = run_cli(
        "validate", *config, *ckpt, "--trainer.devices", "1", "--trainer.accelerator", "cpu", cwd=tmp_path, timeout=400
    )
    assert two.returncode == 0 and one.returncode == 0, (two.stderr[-3000:], one.stderr[-3000:])
    for name in ("val/reward_accuracy", "val/ranking_accuracy", "val/reward_margin", "val/loss"):
        assert _metric(two.stdout, name) == pytest.approx(_metric(one.stdout, name), abs=1e-4), name
    assert _metric(one.stdout, "val/reward_accuracy") > 0.5  # 20 steps at lr 1e-3 learn something


FSDP = ROOT / "configs/trainer/fsdp_gpu.yaml"


def test_the_fsdp_config_builds_its_strategy():
    """configs/trainer/fsdp_gpu.yaml as the CLI reads it: FSDP wrapping each Llama decoder layer
    (the strategy itself needs GPUs, so here it is only built)."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate(
        parser.parse_object({"strategy": yaml.safe_load(FSDP.read_text())["trainer"]["strategy"]})
    ).strategy
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}


def test_dpo_with_fsdp_on_gpus(tmp_path, arithmetic_task):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("FSDP runs on GPUs only (Lightning's FSDPStrategy); checked on a lent GPU")
    shutil.copytree(arithmetic_task, tmp_path / "data/arithmetic")
    fit = run_cli(
        "fit",
        "--config",
        str(ROOT / "configs/dpo_arithmetic.yaml"),
        "--config",
        str(FSDP),
        "--model.init_args.model",
        "data/arithmetic/model",
        "--trainer.max_steps",
        "20",
        "--trainer.callbacks.init_args.every_n_steps",
        "10",
        "--checkpoint.every_n_train_steps",
        "10",
        "--trainer.enable_progress_bar",
        "false",
        cwd=tmp_path,
        timeout=400,
    )
    assert fit.returncode == 0, fit.stderr[-4000:]
    run = tmp_path / "runs/dpo_arithmetic/version_0"
    assert (run / "checkpoints/last.ckpt").is_file()
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(str(run / "hf_model"))  # full weights, not shards
    assert sum(p.numel() for p in saved.parameters()) > 50_000
