"""policylab's command line: ``python cli.py {fit,validate,test} --config configs/<method>_<task>.yaml``.

A ``LightningCLI`` in subclass mode (``model: {class_path, init_args}``, same for ``data``) with
policylab's defaults: a TensorBoard logger under ``runs/``, checkpoints that keep ``last.ckpt``
and the best ``eval/normalized_score``, environment evaluation every K steps, a step progress
bar, and dimensions and action bounds linked from the datamodule into the model.
``--ckpt_path last`` resumes the latest run with the same logger name.
"""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from policylab.callbacks import EnvEvaluation, RolloutVideo, StepProgressBar
from policylab.config_layers import ConfigLayers, run_name
from policylab.datamodules.d4rl_format import DatasetError

# Lightning warns that manual-optimization checkpoints hold post-step weights: that is what we want.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

# datamodule attribute -> model init argument, passed at instantiation
LINKED_FROM_DATA = ("obs_dim", "action_dim", "max_action")


class PolicylabCLI(ConfigLayers, LightningCLI):
    """Config files may name fragments under ``defaults:`` (policylab.config_layers); the logger is
    named after the config file: ``runs/<config stem>/version_N``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault(
            "trainer_defaults",
            {
                "logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "runs", "name": run_name(kwargs.get("args")), "default_hp_metric": False},
                },
                "enable_progress_bar": True,
            },
        )
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "eval/normalized_score",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-{step}",
                "checkpoint.auto_insert_metric_name": False,
                # A resumed run writes last.ckpt again rather than last-v1.ckpt beside it.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(EnvEvaluation, "evaluation")
        parser.add_lightning_class_args(StepProgressBar, "progress_bar")
        parser.add_lightning_class_args(RolloutVideo, "video")
        for name in LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """``--trainer.enable_progress_bar false`` also removes policylab's progress bar."""
        if config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, StepProgressBar)]
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        """Without ``checkpoint.every_n_train_steps``, checkpoint right after each evaluation
        (``evaluation.every_n_steps``), so that the best checkpoint is chosen on fresh scores.
        With ``--ckpt_path last`` and no explicit logger version, continue in the newest run
        directory of the logger's name, where ``last.ckpt`` lives."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        if config.get("checkpoint") is not None and config.checkpoint.every_n_train_steps is None:
            config.checkpoint.every_n_train_steps = config.evaluation.every_n_steps or None
        if config.get("ckpt_path") != "last":
            return
        logger = config.trainer.logger
        init_args = getattr(logger, "init_args", None)
        if init_args is None or getattr(init_args, "version", None) is not None:
            return
        root = Path(init_args.save_dir) / (init_args.name or "")
        versions = sorted(
            (int(m.group(1)), p.name)
            for p in (root.iterdir() if root.is_dir() else [])
            if (m := re.fullmatch(r"version_(\d+)", p.name)) and (p / "checkpoints" / "last.ckpt").is_file()
        )
        if not versions:
            sys.exit(f"error: --ckpt_path last, but no run under {root} has checkpoints/last.ckpt to resume")
        init_args.version = versions[-1][1]

    def before_fit(self) -> None:
        """Refuse to start a fresh run into a checkpoint folder that already holds checkpoints."""
        if self.config[self.subcommand].get("ckpt_path") is not None:
            return
        callback = self.trainer.checkpoint_callback
        folder = (
            Path(callback.dirpath)
            if callback and callback.dirpath
            else Path(self.trainer.log_dir or ".") / "checkpoints"
        )
        if folder.is_dir() and any(folder.glob("*.ckpt")):
            sys.exit(
                f"error: {folder} already holds checkpoints of an earlier run. Resume it with --ckpt_path last "
                "(or a checkpoint file), or start a new run with another logger name/version or checkpoint.dirpath."
            )


def main(args: list[str] | None = None) -> None:
    try:
        PolicylabCLI(args=args)
    except (DatasetError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    except pickle.UnpicklingError as err:
        ckpt = next((a for a in (args or sys.argv) if a.endswith(".ckpt")), "the checkpoint")
        sys.exit(
            f"error: refused to load {ckpt}: it needs unpickling of arbitrary Python objects "
            f"(torch.load(weights_only=True) failed: {str(err).splitlines()[0]}). Load only checkpoints you trust."
        )


if __name__ == "__main__":
    main()
