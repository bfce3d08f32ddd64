"""The base of the modules that fine-tune a pretrained model (language models, diffusion models).

What every such method shares, so that a method file holds only its update:

- ``record_hyperparameters()``: ``save_hyperparameters`` of the calling ``__init__``'s
  arguments, leaving out model objects (only names, paths and plain values are recorded, so a
  checkpoint's hyperparameters hold no pickled model);
- ``frozen_parts``: the dotted names of submodules that never train (a reference model, a text
  encoder, an EMA teacher); :meth:`train` keeps them in eval mode (no dropout);
- ``configure_optimizers``: AdamW over the trainable parameters (``lr``, ``weight_decay``
  hyperparameters);
- ``export_folder``: at every checkpoint, :meth:`export` writes the model in its library's own
  layout to ``<run>/<export_folder>`` (``hf_model``, ``pipeline``) for a later stage or other tools;
- ``shared_step(batch) -> (loss, metrics)``: the method's loss and its diagnostics; the base logs
  them as ``train/<name>`` (on logging steps only, in the progress bar) and ``val/<name>``
  (averaged over processes), with :meth:`batch_size` as the batch size. A method that cannot
  validate (its step samples or changes state) sets ``validation_step = L.LightningModule.validation_step``.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from torch import Tensor, nn


def import_peft():
    """The ``peft`` package, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as err:
        raise ImportError("lora needs PEFT: pip install peft (or policylab's lm extras)") from err
    return peft


def _plain(value: Any) -> bool:
    """A value a config can hold: None, a bool, number or string, or a list/tuple/dict of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


@functools.cache
def accepted_arguments(cls: type) -> frozenset[str] | None:
    """The argument names ``cls(...)`` accepts when its ``__init__`` passes ``**kwargs`` on to a
    parent's: resolved as LightningCLI does (jsonargparse follows ``super().__init__(..., **kwargs)``
    and leaves out what the subclass fixes there). None when ``__init__`` takes no ``**kwargs``."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "init")
    return frozenset(a.dest.split(".", 1)[1] for a in parser._actions if a.dest.count(".") == 1)


class PretrainedModule(L.LightningModule):
    """Base of the pretrained-model families (see the module docstring for the contract)."""

    #: dotted names of submodules kept in eval mode (missing or None ones are skipped)
    frozen_parts: tuple[str, ...] = ()
    #: the folder under the run directory that :meth:`export` writes ("" for none)
    export_folder: str = ""

    # ----------------------------------------------------------------- construction
    def record_hyperparameters(self) -> None:
        """``save_hyperparameters()`` of the calling ``__init__`` (and the subclass ``__init__``
        calls above it), without arguments that are objects (a model passed as a module):
        those must be passed again to ``load_from_checkpoint``. A subclass that passes
        ``**kwargs`` on records what it accepts: a parent's argument that it fixes (SPPO's
        ``pair_rule``) is left out, so ``load_from_checkpoint`` can rebuild it."""
        frame = inspect.currentframe().f_back
        arguments: dict[str, Any] = {}
        for local in collect_init_args(frame, [], classes=(HyperparametersMixin,)):
            arguments.update(local)
        accepted = accepted_arguments(type(self))
        ignore = [k for k, v in arguments.items() if not _plain(v) or (accepted is not None and k not in accepted)]
        self.save_hyperparameters(ignore=ignore, frame=frame)

    def frozen_modules(self) -> list[nn.Module]:
        """The submodules named in ``frozen_parts`` that exist."""
        found = []
        for name in self.frozen_parts:
            module: Any = self
            for part in name.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if module is not None:
                found.append(module)
        return found

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # dropout and the like stay off in frozen parts
        return self

    def configure_optimizers(self):
        # Every trainable parameter (adapters only under LoRA, and any head); frozen parts are left out.
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # ----------------------------------------------------------------- export next to checkpoints
    def export_path(self) -> Path | None:
        """``<run>/<export_folder>`` when this process writes it (rank 0 of a run with a logger,
        whose folder is the run's), else None: without a logger Lightning's ``log_dir`` is the
        working directory, and a checkpoint saved there must not drop a model folder into it."""
        trainer = self._trainer
        log_dir = trainer.log_dir if trainer is not None and trainer.logger is not None else None
        if not (self.export_folder and log_dir and trainer.is_global_zero):
            return None
        return Path(log_dir) / self.export_folder

    @staticmethod
    def checkpoint_weights(checkpoint: dict, prefix: str) -> dict[str, Tensor] | None:
        """The weights under ``prefix`` (e.g. ``"policy."``) from the checkpoint being written,
        which holds full tensors under every strategy (FSDP gathers them on rank 0); None when
        the checkpoint has no such entries."""
        state = {k[len(prefix) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
        return state or None

    def export(self, folder: Path, checkpoint: dict) -> None:
        """Write the model to ``folder`` (weights from ``checkpoint["state_dict"]``)."""
        raise NotImplementedError(f"{type(self).__name__} names export_folder but has no export()")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if (folder := self.export_path()) is not None:
            self.export(folder, checkpoint)

    # ----------------------------------------------------------------- steps and logging
    def shared_step(self, batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, metrics)`` of one batch: the scalar loss to minimize and detached scalar
        diagnostics by name (logged beside the loss, without a prefix)."""
        raise NotImplementedError

    def batch_size(self, batch: Any) -> int:
        """How many samples ``batch`` holds (pairs for a pairwise method), for the logged means."""
        raise NotImplementedError

    def is_logging_step(self) -> bool:
        """Whether Lightning writes the training metrics of this step (every ``log_every_n_steps``;
        never outside a Trainer)."""
        if self._trainer is None:
            return False
        every = self.trainer.log_every_n_steps
        return bool(every) and (self.global_step + 1) % every == 0

    def log_step(self, prefix: str, loss: Tensor, metrics: dict[str, Any], batch_size: int) -> None:
        """Log ``<prefix>/loss`` and ``<prefix>/<name>`` of ``metrics``: training ones on logging
        steps only and in the progress bar, validation ones averaged over processes."""
        if prefix == "train" and not self.is_logging_step():
            return
        self.log_dict(
            {f"{prefix}/loss": loss, **{f"{prefix}/{k}": v for k, v in metrics.items()}},
            batch_size=batch_size,
            prog_bar=prefix == "train",
            sync_dist=prefix == "val",
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, metrics = self.shared_step(batch)
        self.log_step("train", loss, metrics, self.batch_size(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, metrics = self.shared_step(batch)
        self.log_step("val", loss, metrics, self.batch_size(batch))
