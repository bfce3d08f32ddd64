"""Evaluation of the current policy in its gymnasium environment."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from policylab.envs.evaluation import evaluate_policy
from policylab.envs.make import check_env_id
from policylab.envs.scores import normalized_score, reference_scores


def log_evaluation(
    trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float], prog_bar: bool = False
) -> None:
    """Log the metrics of an evaluation made during training: into ``callback_metrics`` (which
    feed ModelCheckpoint and the progress bar) and to every logger at this step, whatever
    ``Trainer(log_every_n_steps)`` is."""
    for name, value in metrics.items():
        pl_module.log(name, value, on_step=True, on_epoch=False, logger=False, prog_bar=prog_bar)
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


class EnvEvaluation(Callback):
    """Every ``every_n_steps`` training steps, run ``n_episodes`` deterministic episodes and log
    ``eval/return``, ``eval/return_std`` and ``eval/normalized_score`` (D4RL formula).

    The env is the datamodule's ``env_id`` unless ``env_id`` is given; observations are normalized
    with the statistics stored in the model. Under DDP every rank runs its own episodes (seed
    offset by rank) and the means are averaged. ``validate`` and ``test`` evaluate once at the end.
    Set ``every_n_steps: 0`` to switch evaluation off.
    """

    def __init__(
        self, every_n_steps: int = 5000, n_episodes: int = 10, seed: int = 10_000, env_id: str | None = None
    ) -> None:
        super().__init__()
        if every_n_steps < 0 or n_episodes <= 0:
            raise ValueError(f"every_n_steps must be >= 0 and n_episodes > 0, got {every_n_steps}, {n_episodes}")
        self.every_n_steps, self.n_episodes, self.seed, self.env_id = every_n_steps, n_episodes, seed, env_id
        self.last_score: float | None = None
        self._active = True

    def _resolve(self, trainer: L.Trainer) -> tuple[str, tuple[float, float] | None]:
        datamodule = trainer.datamodule
        env_id = self.env_id or getattr(datamodule, "env_id", None)
        if env_id is None:
            raise ValueError("EnvEvaluation: no env_id given and the datamodule does not name its environment")
        check_env_id(env_id)
        refs = getattr(datamodule, "reference_scores", None) if self.env_id is None else None
        return env_id, refs or reference_scores(env_id)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Only modules that act in an environment are evaluated in one (the CLI adds this
        # callback to every run; a language-model run leaves it inactive).
        self._active = hasattr(pl_module, "act") and hasattr(pl_module, "obs_normalizer")
        if self._active and (self.every_n_steps or stage != TrainerFn.FITTING):
            self._env_id, self._refs = self._resolve(trainer)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        was_training = pl_module.training
        pl_module.eval()
        normalizer = pl_module.obs_normalizer
        returns = evaluate_policy(
            pl_module.act,
            self._env_id,
            self.n_episodes,
            seed=self.seed + 1000 * trainer.global_rank,
            obs_mean=normalizer.mean.cpu().numpy(),
            obs_std=normalizer.std.cpu().numpy(),
        )
        pl_module.train(was_training)
        metrics = {"eval/return": float(returns.mean()), "eval/return_std": float(returns.std())}
        if self._refs is not None:
            metrics["eval/normalized_score"] = float(normalized_score(returns, *self._refs).mean())
        if trainer.world_size > 1:
            stacked = torch.tensor(list(metrics.values()), device=pl_module.device)
            stacked = trainer.strategy.reduce(stacked, reduce_op="mean")
            metrics = dict(zip(metrics, stacked.tolist()))
        self.last_score = metrics.get("eval/normalized_score", metrics["eval/return"])
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._active or not self.every_n_steps or trainer.global_step % self.every_n_steps != 0:
            return
        log_evaluation(trainer, pl_module, self.evaluate(trainer, pl_module))

    def _evaluate_once(self, trainer, pl_module) -> None:
        for name, value in self.evaluate(trainer, pl_module).items():
            pl_module.log(name, value, on_epoch=True)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._active and trainer.state.fn == TrainerFn.VALIDATING:
            self._evaluate_once(trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self._active:
            self._evaluate_once(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"last_score": self.last_score}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_score = state_dict.get("last_score")
