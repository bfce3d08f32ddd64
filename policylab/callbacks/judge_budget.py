"""Stop an online run at a budget of judged completions, so that methods are compared at an equal
number of labels (issue 18's equal-budget table, ``benchmarks/online_table.py``).

The unit is one **judged completion**: the judge read one (prompt, completion) row and gave its
verdict. Judges count differently (``judge.calls``), so :func:`judged_completions` converts:

- a :class:`~policylab.judges.ScalarJudge` (a verifier, a reward model): its ``calls``, one per
  scored row;
- a :class:`~policylab.judges.PairwiseJudge` that wraps a scalar judge
  (:class:`~policylab.judges.PreferenceModelJudge` over a verifier or reward model, SPPO's default):
  the wrapped judge's ``calls``, the rows it actually scored (SPPO's ``K x K`` win rates of ``K``
  samples cost ``K`` judged completions, not ``K (K - 1) / 2`` pairs);
- any other pairwise judge (a GPM, a judge LM comparing two texts): ``2 * calls``, each comparison
  reading two completions.

An offline method's labels are counted the same way by whoever sets its steps: a preference pair
is two judged completions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from policylab.callbacks.evaluation import log_evaluation
from policylab.judges import PairwiseJudge, ScalarJudge

#: written into the run folder when fit ends: the budget, what was spent, where it stopped
RECORD = "judge_budget.json"


def judged_completions(judge: Any) -> int:
    """The judged completions ``judge`` has spent so far (see the module docstring for the unit)."""
    inner = getattr(judge, "reward", None)
    if isinstance(judge, PairwiseJudge):
        return int(inner.calls) if isinstance(inner, ScalarJudge) else 2 * int(judge.calls)
    if isinstance(judge, ScalarJudge) or hasattr(judge, "calls"):
        return int(judge.calls)
    raise TypeError(f"{type(judge).__name__} counts no calls: a judge needs a calls attribute to be budgeted")


class JudgeBudget(Callback):
    """Stops ``fit`` once the module's judge has spent ``budget`` judged completions
    (:func:`judged_completions` of ``pl_module.judge``), at the end of an iteration.

    An online module (:class:`~policylab.modules.preference.OnlineDPO` and its subclasses) judges
    its samples at the first step of each iteration of ``settings.generate_every_n_steps`` steps and
    then trains on them; the run stops at an iteration's end, so every judged sample is trained on.
    It stops there when the budget is spent, or when one more iteration costing what the last one
    cost would pass it: with iterations of equal cost the run never spends more than ``budget``.
    Only a first iteration that alone costs more than ``budget`` passes it (its cost is unknown
    before it runs); ``judge_budget.json`` and ``budget/judged_completions`` show what was spent.

    The count survives a resume (it is in the checkpoint: the judge's own ``calls`` restart at 0
    in a new process), and at the stop ``last.ckpt`` is written at the final step (ModelCheckpoint
    writes it only every ``every_n_train_steps``), so the run's ``hf_model`` is the final policy.
    A module without a judge (offline DPO, SFT) is never stopped by it: its label budget is set by
    its steps.

    Args:
        budget: judged completions the run may spend (> 0).
        log: log ``budget/judged_completions`` at every iteration's end.
    """

    def __init__(self, budget: int, log: bool = True) -> None:
        super().__init__()
        if budget <= 0:
            raise ValueError(f"budget must be a positive number of judged completions, got {budget}")
        self.budget = int(budget)
        self.log = log
        self.spent_before = 0  # judged completions of earlier processes (from the checkpoint)
        self.at_last_boundary = 0  # spent at the end of the last finished iteration
        self.stopped = False
        self._base: int | None = None  # the judge's own count when this process started training
        self._spent_now = 0  # spent at the last step's end (what a checkpoint records)

    # ----------------------------------------------------------------- counting
    def spent(self, pl_module: L.LightningModule) -> int:
        """Judged completions of the whole run so far (earlier processes included)."""
        judge = getattr(pl_module, "judge", None)
        if judge is None or self._base is None:
            return self.spent_before
        return self.spent_before + judged_completions(judge) - self._base

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "spent": self._spent_now,
            "at_last_boundary": self.at_last_boundary,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spent_before = int(state_dict["spent"])
        self.at_last_boundary = int(state_dict["at_last_boundary"])
        self.stopped = bool(state_dict["stopped"])
        self._spent_now = self.spent_before

    # ----------------------------------------------------------------- hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        judge = getattr(pl_module, "judge", None)
        self._base = judged_completions(judge) if judge is not None else None
        self._spent_now = self.spent_before
        if self.stopped:  # resumed from the checkpoint written at the stop
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if getattr(pl_module, "judge", None) is None:
            return
        self._spent_now = spent = self.spent(pl_module)
        settings = getattr(pl_module, "settings", None)
        every = int(getattr(settings, "generate_every_n_steps", 1) or 1)
        if trainer.global_step % every != 0:  # inside an iteration: its samples are not all trained on yet
            return
        cost = spent - self.at_last_boundary
        self.at_last_boundary = spent
        if self.log:
            log_evaluation(trainer, pl_module, {"budget/judged_completions": float(spent)})
        if spent >= self.budget or spent + cost > self.budget:
            self.stopped = True
            trainer.should_stop = True
            rank_zero_info(
                f"JudgeBudget: {spent} of {self.budget} judged completions spent at step {trainer.global_step}"
                + ("" if spent >= self.budget else f" (another iteration of {cost} would pass the budget)")
                + "; stopping"
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # last.ckpt at the final step: ModelCheckpoint writes it only every n steps (and once at
        # train end only when it never wrote one).
        for checkpoint in trainer.checkpoint_callbacks:
            if getattr(checkpoint, "save_last", False) and checkpoint._last_global_step_saved != trainer.global_step:
                checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
        if trainer.is_global_zero and trainer.log_dir is not None:
            record = {
                "budget": self.budget,
                "judged_completions": self._spent_now,
                "step": trainer.global_step,
                "stopped_by_budget": self.stopped,
                "has_judge": getattr(pl_module, "judge", None) is not None,
            }
            Path(trainer.log_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.log_dir) / RECORD).write_text(json.dumps(record) + "\n")
