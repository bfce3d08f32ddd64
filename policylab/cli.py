"""policylab's command line: ``python cli.py {fit,validate,test} --config configs/<method>_<task>.yaml``.

A ``LightningCLI`` in subclass mode (``model: {class_path, init_args}``, same for ``data``) with
policylab's defaults: a TensorBoard logger under ``runs/``, checkpoints that keep ``last.ckpt``
and the best ``eval/normalized_score``, environment evaluation every K steps, a step progress
bar, and dimensions and action bounds linked from the datamodule into the model.
``--ckpt_path last`` resumes the latest run with the same logger name.

What it refuses, each with one ``error:`` line (``POLICYLAB_TRACEBACK=1`` shows the traceback):

- checkpoints that are not local files (``http://``, ``s3://``, ``memory://`` ...), checkpoints
  that need unpickling of Python objects, and checkpoints whose recorded class path lies outside
  ``policylab``, ``lightning`` and ``torch`` (nothing from a checkpoint is imported or run);
- resuming (``fit --ckpt_path``) with another method than the checkpoint's or with
  hyperparameters that differ from the checkpoint's (the restored optimizers would keep the old
  ones); ``validate``/``test`` use the checkpoint's hyperparameters and say which they replaced;
- a checkpoint on data of other dimensions (``obs_dim``, ``action_dim``, ``max_action``).

Run records: a resume never rewrites the run's ``config.yaml``; its config goes to
``config-resume-N.yaml`` (``config-validate-N.yaml`` ...). A resumed run purges TensorBoard points
logged after the checkpoint's step by the run it resumes. A run that fails before its first
training step removes what it added to the run folder (the folder itself when it made it).
"""

from __future__ import annotations

import difflib
import errno
import importlib
import inspect
import math
import os
import pickle
import re
import shutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from policylab.callbacks import EnvEvaluation, RandomState, RolloutVideo, StepProgressBar
from policylab.callbacks.checkpoint import AtomicCheckpoint, CheckpointWriteError
from policylab.config_layers import ConfigLayers, config_values, run_name, with_config_layers

# Lightning warns that manual-optimization checkpoints hold post-step weights: that is what we want.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

# datamodule attribute -> model init argument, passed at instantiation
LINKED_FROM_DATA = ("obs_dim", "action_dim", "max_action")
# modules a checkpoint's recorded class paths may name (the CLI imports them to rebuild the model)
TRUSTED_MODULES = ("policylab", "lightning", "torch")
# speed switches that leave the math unchanged: a resume may change them
RESUMABLE_CHANGES = ("compile", "compile_mode", "cuda_graph")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and what to do."""


def is_remote(path: str) -> bool:
    """A URL (``http://``, ``s3://``, ``file://``, ``memory://`` ...) rather than a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a local checkpoint weights-only (nothing in it runs), or raise a
    :class:`CheckpointError` that names the file: remote, missing, truncated or corrupt, needing
    code, or not a Lightning checkpoint."""
    if is_remote(str(path)):
        raise CheckpointError(
            f"refused to load {path}: policylab loads only local checkpoint files. "
            "Download it from a source you trust and pass the local path."
        )
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"{path} is corrupt, not a checkpoint ({lines[0] if lines else err!r})") from None
        cause = next((line.strip() for line in lines if "GLOBAL" in line), lines[0])
        raise CheckpointError(
            f"refused to load {path}: it needs unpickling of arbitrary Python objects ({cause}). "
            "Load only checkpoints you trust, saved by policylab."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as err:
        detail = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt ({path.stat().st_size} bytes; torch: {detail[:160]}). "
            "Use another checkpoint of the run (e.g. best-*.ckpt beside it)."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return checkpoint


def untrusted_class_paths(value: Any) -> list[str]:
    """Class paths in checkpoint hyperparameters (``_class_path``/``class_path`` keys, nested)
    whose module lies outside :data:`TRUSTED_MODULES`."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("_class_path", "class_path", "_instantiator") and isinstance(item, str):
                if item.split(".")[0] not in TRUSTED_MODULES:
                    found.append(item)
            else:
                found += untrusted_class_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found += untrusted_class_paths(item)
    return found


def _same_class(a: str, b: str) -> bool:
    """Two class paths that name the same class (``policylab.modules.TD3BC`` and
    ``policylab.modules.offline.td3bc.TD3BC``); only trusted modules are imported to tell."""
    if a == b:
        return True
    classes = []
    for path in (a, b):
        module, _, name = path.rpartition(".")
        if module.split(".")[0] not in TRUSTED_MODULES:
            return False
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            return False
    return classes[0] is classes[1]


def _plain(value: Any) -> Any:
    """Namespaces, tuples and paths as the dicts, lists and strings a checkpoint stores."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0) or (a != a and b != b)
        except (TypeError, ValueError):
            return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def changed_hyperparameters(saved: dict, configured: dict, skip=()) -> list[tuple[str, Any, Any]]:
    """``(key, checkpoint value, config value)`` for the keys both hold with different values;
    nested class configs are compared key by key (``net.init_args.width``)."""
    out = []
    for key in sorted(set(saved) & set(configured)):
        if key in skip:
            continue
        old, new = saved[key], configured[key]
        if isinstance(old, dict) and isinstance(new, dict) and not _same(old, new):
            inner = changed_hyperparameters(old, new)
            if inner and set(old) == set(new):
                out += [(f"{key}.{k}", o, n) for k, o, n in inner]
                continue
        if not _same(old, new):
            out.append((key, old, new))
    return out


def _listing(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)


class PolicylabArgumentParser(LightningArgumentParser):
    """Parse errors as one or two lines, the cause first, instead of a usage dump."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("POLICYLAB_TRACEBACK"):
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        argv = getattr(self, "argv", None)
        sys.stderr.write(f"error: {condense_parse_error(message, argv)}\n(options: python {prog} --help)\n")
        sys.exit(2)


def _accepted_options(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    if module.split(".")[0] not in TRUSTED_MODULES or module not in sys.modules:
        return []
    cls = getattr(sys.modules[module], name, None)
    try:
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def condense_parse_error(message: str, argv: list[str] | None = None) -> str:
    """jsonargparse's nested union report reduced to the key, the class, the problem and where
    the value came from, e.g. ``model.init_args.alpah: not an option of policylab.modules.TD3BC
    (did you mean alpha?); it is set in configs/x.yaml``."""
    argv = sys.argv[1:] if argv is None else argv
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return message
    section = re.match(r'Parser key "([^"]+)"', lines[0])
    section = section.group(1) if section else None
    class_path = next((m.group(1) for line in lines if (m := re.search(r"given class_path '([^']+)'", line))), None)
    noise = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Given value:")
    detail = [
        line.lstrip("- ")
        for line in lines[1:]
        if not line.startswith(noise) and "given class_path" not in line and "<class 'NoneType'>" not in line
    ]
    if section is None or not detail:
        first = lines[0]
        return first if len(lines) == 1 else f"{first} {' '.join(detail or lines[1:])}"[:400]
    key, problem = section, " ".join(detail)
    option = re.search(r"Option '([^']+)' is not accepted", problem) or re.search(
        r"Key '([^']+)' is not expected", problem
    )
    nested = re.match(r'Parser key "([^"]+)": (.*)', problem)
    hint = ""
    if option:
        name = option.group(1)
        key = f"{section}.init_args.{name}" if class_path else f"{section}.{name}"
        problem = f"not an option of {class_path}" if class_path else "not an option"
        close = difflib.get_close_matches(name, _accepted_options(class_path or ""), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
    elif nested:
        key = f"{section}.init_args.{nested.group(1)}" if class_path else f"{section}.{nested.group(1)}"
        problem = nested.group(2)
    where = ""
    leaf = key.rsplit(".", 1)[-1]
    if any(arg.split("=")[0] == f"--{key}" or arg.split("=")[0].endswith(f".{leaf}") for arg in argv):
        where = "; it is set on the command line"
    try:  # the config files and the fragments they name, in the order they are read
        files = [] if where else config_values(with_config_layers(argv))
    except (OSError, ValueError):
        files = config_values(argv)
    for file in files:  # the last file that sets the key is the one whose value counts
        try:
            if re.search(rf"\b{re.escape(leaf)}\s*:", Path(file).read_text()):
                where = f"; it is set in {file}"
        except OSError:
            pass
    return f"{key}: {problem}{hint}{where}"


class RunConfig(SaveConfigCallback):
    """Saves the config as ``config.yaml`` in the run folder, and never over an existing one:
    a resume writes ``config-resume-N.yaml``, a ``validate``/``test`` into the run folder
    ``config-validate-N.yaml``/``config-test-N.yaml``."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved or not self.save_to_log_dir:
            return super().setup(trainer, pl_module, stage)
        log_dir = Path(trainer.log_dir)
        name = "config.yaml"
        if trainer.is_global_zero and (log_dir / name).exists():
            stage = getattr(stage, "value", stage)
            label = "resume" if stage == "fit" and self.config.get("ckpt_path") else stage
            n = 1
            while (log_dir / f"config-{label}-{n}.yaml").exists():
                n += 1
            name = f"config-{label}-{n}.yaml"
        self.config_filename = trainer.strategy.broadcast(name)
        self.overwrite = True
        super().setup(trainer, pl_module, stage)


class PolicylabCLI(ConfigLayers, LightningCLI):
    """Config files may name fragments under ``defaults:`` (policylab.config_layers); the logger is
    named after the config file: ``runs/<config stem>/version_N``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("parser_class", PolicylabArgumentParser)
        kwargs.setdefault("save_config_callback", RunConfig)
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
        self.checkpoint_file: Path | None = None
        self.checkpoint_hparams: dict = {}
        self.checkpoint_step = 0
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(AtomicCheckpoint, "checkpoint")
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
        """``--trainer.enable_progress_bar false`` also removes policylab's progress bar. Every run
        keeps the global random states in its checkpoints (:class:`RandomState`), so that a resume
        draws what the uninterrupted run drew."""
        if config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, StepProgressBar)]
        configured = config.get("callbacks") or []
        if not any(isinstance(c, RandomState) for c in [*callbacks, *configured]):
            callbacks = [*callbacks, RandomState()]
        return super()._instantiate_trainer(config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Keeps the arguments for the parse-error message (which file or flag set the key)."""
        argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]
        for each in (parser, *getattr(self, "_subcommand_parsers", {}).values()):
            each.argv = argv
        super().parse_arguments(parser, args)

    # ------------------------------------------------------------------ checkpoints
    def _resolve_last(self, config) -> Path:
        """``--ckpt_path last``: ``last.ckpt`` of ``checkpoint.dirpath``, or of the logger's
        version folder; without an explicit version, the newest run of the logger's name that has
        one (the logger then continues in that folder)."""
        if config.get("checkpoint") is not None and config.checkpoint.dirpath:
            return Path(config.checkpoint.dirpath) / "last.ckpt"
        init_args = getattr(config.trainer.logger, "init_args", None)
        if init_args is None or getattr(init_args, "save_dir", None) is None:
            raise CheckpointError(
                "--ckpt_path last needs a logger folder or checkpoint.dirpath; pass a checkpoint file"
            )
        root = Path(init_args.save_dir) / (init_args.name or "")
        version = getattr(init_args, "version", None)
        if version is not None:
            folder = version if isinstance(version, str) else f"version_{version}"
            return root / folder / "checkpoints" / "last.ckpt"
        versions = sorted(
            (int(m.group(1)), p.name)
            for p in (root.iterdir() if root.is_dir() else [])
            if (m := re.fullmatch(r"version_(\d+)", p.name)) and (p / "checkpoints" / "last.ckpt").is_file()
        )
        if not versions:
            raise CheckpointError(f"--ckpt_path last, but no run under {root} has checkpoints/last.ckpt to resume")
        init_args.version = versions[-1][1]
        return root / versions[-1][1] / "checkpoints" / "last.ckpt"

    def _parse_ckpt_path(self) -> None:
        """Replaces Lightning's: load the checkpoint weights-only and only from a local file, check
        its class paths and method, and for ``fit`` refuse hyperparameters that differ from it
        (``validate``/``test`` take the checkpoint's). Nothing is imported from the checkpoint."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("weights_only") is False:
            raise CheckpointError("--weights_only false is refused: policylab loads checkpoints weights-only")
        if "weights_only" in config:
            config.weights_only = True
        if not config.get("ckpt_path"):
            return
        if config.ckpt_path in ("best", "hpc", "registry"):
            raise CheckpointError(f"--ckpt_path {config.ckpt_path}: policylab's CLI takes last or a checkpoint file")
        path = self._resolve_last(config) if config.ckpt_path == "last" else config.ckpt_path
        checkpoint = load_checkpoint(path)
        config.ckpt_path = str(path)
        self.checkpoint_file, self.checkpoint_step = Path(path), int(checkpoint.get("global_step", 0))
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        untrusted = untrusted_class_paths(hparams)
        if untrusted:
            raise CheckpointError(
                f"refused to use {path}: its hyperparameters name {', '.join(sorted(set(untrusted)))}, "
                f"outside {', '.join(TRUSTED_MODULES)}; nothing of it was imported. Use checkpoints saved by policylab."
            )
        hparams.pop("_instantiator", None)
        saved_class = hparams.pop("_class_path", None)
        self.checkpoint_hparams = hparams
        model = config.get("model")
        configured_class = getattr(model, "class_path", None)
        if saved_class and configured_class and not _same_class(saved_class, configured_class):
            raise CheckpointError(
                f"{path} is a {saved_class} checkpoint but the config's model is {configured_class}: "
                f"use the config {saved_class.rsplit('.', 1)[-1]} was trained with, or drop --ckpt_path."
            )
        init_args = _plain(getattr(model, "init_args", None) or {})
        changes = changed_hyperparameters(hparams, init_args, skip=LINKED_FROM_DATA + RESUMABLE_CHANGES)
        if changes and subcommand == "fit":
            raise CheckpointError(
                f"resuming {path} with hyperparameters that differ from the checkpoint's: {_listing(changes)}. "
                "The restored optimizers and state would keep the checkpoint's values: resume with them, "
                "or start a new run (without --ckpt_path)."
            )
        if changes:
            top = {key.split(".")[0] for key, _, _ in changes}
            kept = ", ".join(f"{key} {old!r} (config: {new!r})" for key, old, new in changes)
            sys.stderr.write(f"note: {subcommand} uses the hyperparameters of {path}: {kept[:300]}\n")
            self.config = self.parser.parse_object(
                {subcommand: {"model": {"class_path": configured_class, "init_args": {k: hparams[k] for k in top}}}},
                self.config,
            )
        if subcommand == "fit":
            self._purge_tensorboard_after(self.checkpoint_step)

    def _purge_tensorboard_after(self, step: int) -> None:
        """A resumed run hides the TensorBoard points that the run it resumes logged at and after the
        checkpoint's step (TensorBoard's ``purge_step``): the training metrics of the step after a
        checkpoint carry the checkpoint's step number, and the resumed run logs them again. The
        points of that step written *before* the checkpoint (evaluations) are logged again by
        :meth:`_relog_points_before_checkpoint`."""
        logger = self.config.fit.trainer.get("logger")
        if not getattr(logger, "class_path", "").endswith("TensorBoardLogger"):
            return
        init_args = logger.get("init_args")
        if init_args is not None and "purge_step" in init_args:  # jsonargparse exposes SummaryWriter's kwargs
            if init_args.purge_step is None:
                init_args.purge_step = step
        else:
            logger.dict_kwargs = {"purge_step": step, **(logger.get("dict_kwargs") or {})}

    def _relog_points_before_checkpoint(self) -> None:
        """The scalars the interrupted run logged at the checkpoint's step before writing the
        checkpoint (evaluations at that step), written again after the purge with their wall times."""
        logger = self.trainer.logger
        if not isinstance(logger, TensorBoardLogger) or self.checkpoint_file is None or not logger.log_dir:
            return
        saved_at = self.checkpoint_file.stat().st_mtime
        points = [
            point
            for events in sorted(Path(logger.log_dir).glob("events.out.tfevents.*"))
            for point in _scalars_at(events, self.checkpoint_step)
            if point[2] <= saved_at
        ]
        for tag, value, wall_time in points:
            logger.experiment.add_scalar(tag, value, self.checkpoint_step, walltime=wall_time)

    def before_instantiate_classes(self) -> None:
        """Without ``checkpoint.every_n_train_steps``, checkpoint right after each evaluation
        (``evaluation.every_n_steps``), so that the best checkpoint is chosen on fresh scores."""
        if self.subcommand is None:
            return
        config = self.config[self.subcommand]
        if config.get("checkpoint") is not None and config.checkpoint.every_n_train_steps is None:
            config.checkpoint.every_n_train_steps = config.evaluation.every_n_steps or None

    def after_instantiate_classes(self) -> None:
        """A checkpoint trained on data of other dimensions stops here, before anything is written."""
        if self.checkpoint_file is None or self.model is None:
            return
        hparams = getattr(self.model, "hparams", {})
        changes = [
            (key, self.checkpoint_hparams[key], hparams[key])
            for key in LINKED_FROM_DATA
            if key in self.checkpoint_hparams
            and key in hparams
            and not _same(self.checkpoint_hparams[key], hparams[key])
        ]
        if changes:
            data = self.config[self.subcommand].get("data")
            init_args = getattr(data, "init_args", None)
            dataset = next((str(init_args[k]) for k in ("dataset", "env_id") if init_args and init_args.get(k)), None)
            found = ", ".join(f"{key} {new}" for key, _, new in changes)
            trained = ", ".join(f"{key} {old}" for key, old, _ in changes)
            raise CheckpointError(
                f"{self.checkpoint_file} was trained on data with {trained}, but the data "
                f"{dataset or '(config)'} has {found}: use the dataset and env the checkpoint was trained on, "
                "or train a new run on this data (without --ckpt_path)."
            )

    def before_fit(self) -> None:
        """Refuse to start a fresh run into a checkpoint folder that already holds checkpoints."""
        if self.config[self.subcommand].get("ckpt_path") is not None:
            self._relog_points_before_checkpoint()
            return
        callback = self.trainer.checkpoint_callback
        folder = (
            Path(callback.dirpath)
            if callback and callback.dirpath
            else Path(self.trainer.log_dir or ".") / "checkpoints"
        )
        if folder.is_dir() and any(folder.glob("*.ckpt")):
            raise CheckpointError(
                f"{folder} already holds checkpoints of an earlier run. Resume it with --ckpt_path last "
                "(or a checkpoint file), or start a new run with another logger name/version or checkpoint.dirpath."
            )

    # ------------------------------------------------------------------ run folders
    def _run_subcommand(self, subcommand: str) -> None:
        """Run; if it fails before a training step of this process, remove what it added to the
        run folder (the folder itself, and the parents it made, when it made them)."""
        logger = self.trainer.logger
        run_dir = Path(logger.log_dir) if logger is not None and getattr(logger, "log_dir", None) else None
        if run_dir is None or os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
            return super()._run_subcommand(subcommand)
        made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        before = {p for p in run_dir.rglob("*")} if run_dir.exists() else set()
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.global_step <= self.checkpoint_step and run_dir.exists():
                self._remove_leftovers(run_dir, before, made)
            raise

    @staticmethod
    def _remove_leftovers(run_dir: Path, before: set[Path], made: list[Path]) -> None:
        if run_dir in made:
            if not any(run_dir.rglob("*.ckpt")):
                shutil.rmtree(run_dir, ignore_errors=True)
        else:
            added = sorted((p for p in run_dir.rglob("*") if p not in before), key=lambda p: -len(p.parts))
            for path in added:
                if path.is_file() and path.suffix != ".ckpt":
                    path.unlink(missing_ok=True)
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        for parent in made[1:]:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def _scalars_at(events: Path, step: int) -> list[tuple[str, float, float]]:
    """``(tag, value, wall time)`` of the scalar points at ``step`` in one TensorBoard event file
    (an unreadable or truncated file gives what could be read)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    points = []
    try:
        for event in LegacyEventFileLoader(str(events)).Load():
            if event.step == step and event.HasField("summary"):
                points += [
                    (v.tag, v.simple_value, event.wall_time) for v in event.summary.value if v.HasField("simple_value")
                ]
    except Exception:  # noqa: BLE001 - a damaged event file must not stop the resume
        pass
    return points


def _raised_in_policylab(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    package = str(Path(__file__).resolve().parent)
    return bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(package)


def _stated_cause(err: BaseException) -> BaseException | None:
    """The error to print alone: a checkpoint or file error, a full disk, or a ValueError raised
    in policylab (DatasetError, TextDataError ...: they name the file, key, row or value), also
    when jsonargparse or Lightning re-raised it as another exception."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (CheckpointError, CheckpointWriteError, FileNotFoundError)):
            return err
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return err
        if isinstance(err, ValueError) and (type(err).__module__.startswith("policylab.") or _raised_in_policylab(err)):
            return err
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    if os.environ.get("POLICYLAB_TRACEBACK"):
        PolicylabCLI(args=args)
        return
    try:
        PolicylabCLI(args=args)
    except Exception as err:
        cause = _stated_cause(err)
        if cause is None:
            raise
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC and not isinstance(cause, CheckpointWriteError):
            sys.exit(f"error: no space left on device{f' writing {cause.filename}' if cause.filename else ''}")
        sys.exit(f"error: {cause}")


if __name__ == "__main__":
    main()
