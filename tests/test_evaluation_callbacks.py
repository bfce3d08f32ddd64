"""Evaluation callbacks across a resume: the start scores come from the run's start."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from policylab.callbacks.generation import ScoredEvaluation


class WeightScores(ScoredEvaluation):
    """Scores that move with training: the first four weights of the module's layer."""

    def __init__(self) -> None:
        super().__init__(every_n_steps=2)
        self.calls = 0

    def evaluate(self, trainer, pl_module):
        self.calls += 1
        return pl_module.layer.weight.detach().flatten()[:4].clone()


class Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=generator)
        return DataLoader(TensorDataset(x, 3 * x + 1), batch_size=8)


def fit(folder, steps: int, evaluation: WeightScores, ckpt_path=None) -> None:
    trainer = L.Trainer(
        max_steps=steps,
        default_root_dir=folder,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[evaluation, L.pytorch.callbacks.ModelCheckpoint(folder, save_last=True)],
    )
    trainer.fit(Regression(), ckpt_path=ckpt_path)


def test_a_resumed_run_keeps_the_start_scores_of_its_first_fit(tmp_path):
    torch.manual_seed(0)
    first = WeightScores()
    fit(tmp_path, 2, first)
    start = first.start_scores.clone()
    weights_at_resume = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["layer.weight"].flatten()[
        :4
    ]
    assert not torch.allclose(weights_at_resume, start)  # re-evaluating at the resume would move the baseline

    resumed = WeightScores()
    fit(tmp_path, 4, resumed, ckpt_path=str(tmp_path / "last.ckpt"))
    assert torch.equal(resumed.start_scores, start)
    assert resumed.calls == 1  # the step-4 evaluation only, no new start evaluation

    fit(tmp_path / "fresh", 2, resumed)  # the same callback in a new run evaluates its new start
    assert resumed.calls == 3 and not torch.equal(resumed.start_scores, start)
