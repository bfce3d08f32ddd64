"""A progress bar for step-based training: gradient steps out of ``max_steps``, steps/s, latest score."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """TQDM bar counted in gradient steps (``step/s``), showing the latest ``eval/normalized_score``.

    Offline RL trains one endless epoch, so the bar's total is ``max_steps`` rather than an epoch
    length. Redraws every ``refresh_rate`` steps (default 20) to keep the terminal out of the hot loop.
    """

    def __init__(self, refresh_rate: int = 20, leave: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_steps and trainer.max_steps > 0:
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = trainer.global_step
            self.train_progress_bar.set_description(f"{type(trainer.lightning_module).__name__}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        if self._should_update(n, self.train_progress_bar.total):
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self.train_progress_bar.refresh()

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        score = trainer.callback_metrics.get("eval/normalized_score")
        if score is not None:
            metrics["score"] = f"{float(score):.1f}"
        return metrics
