"""Small policy snapshots during training: the actor's weights with its evaluated score."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from policylab.callbacks.evaluation import EnvEvaluation
from policylab.callbacks.interaction import EnvInteraction


class PolicySnapshots(Callback):
    """Every ``every_n_steps`` training steps, save ``pl_module.actor`` to
    ``<dirpath>/step_<step>.pt``: ``{"actor": state_dict, "actor_config": constructor args, "step",
    "env_steps", "score"}``, where ``score`` is the latest ``EnvEvaluation`` result (put this
    callback after it) and ``env_steps`` the ``EnvInteraction`` count. A few hundred kB each,
    loadable with ``torch.load(weights_only=True)``; written atomically."""

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int = 5000) -> None:
        super().__init__()
        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.dirpath, self.every_n_steps = Path(dirpath), every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps != 0 or trainer.global_rank != 0:
            return
        evaluation = next((c for c in trainer.callbacks if isinstance(c, EnvEvaluation)), None)
        interaction = next((c for c in trainer.callbacks if isinstance(c, EnvInteraction)), None)
        actor = pl_module.actor
        snapshot = {
            "actor": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
            "actor_config": dict(getattr(actor, "config", {})),
            "step": step,
            "env_steps": interaction.env_steps if interaction is not None else 0,
            "score": float("nan")
            if evaluation is None or evaluation.last_score is None
            else float(evaluation.last_score),
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dirpath, prefix=".snapshot.", suffix=".tmp")
        os.close(fd)
        torch.save(snapshot, tmp)
        os.replace(tmp, self.dirpath / f"step_{step:07d}.pt")
