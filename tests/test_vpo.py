"""VPO: the loss against hand numbers (both signs); the value term's gradient moves the policy's
log-probability of the calibration samples down (optimistic) or up (pessimistic); calibration
samples come from the reference and are the same when a step is run again; learning on the
addition task (held-out prompts)."""

import copy
import math

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import mean_verifier_score  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.losses.vpo import value_regularizer, vpo_loss  # noqa: E402
from policylab.modules.preference.vpo import VPO  # noqa: E402
from policylab.tasks.arithmetic import build_model, is_correct  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_vpo_loss_by_hand():
    chosen, rejected = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    calibration = torch.tensor([-2.0, 0.0, 1.0])  # mean -1/3
    beta, alpha = 0.5, 0.2
    dpo = (-math.log(1 / (1 + math.exp(-0.5 * 1.0))) - math.log(1 / (1 + math.exp(-0.5 * -1.0)))) / 2
    optimistic = vpo_loss(chosen, rejected, calibration, beta, alpha, "optimistic")
    pessimistic = vpo_loss(chosen, rejected, calibration, beta, alpha, "pessimistic")
    assert optimistic.item() == pytest.approx(dpo + 0.2 * 0.5 * (-1 / 3), rel=1e-6)
    assert pessimistic.item() == pytest.approx(dpo - 0.2 * 0.5 * (-1 / 3), rel=1e-6)
    assert value_regularizer(calibration, beta, 0.0).item() == 0.0
    with pytest.raises(ValueError, match="value_sign"):
        value_regularizer(calibration, beta, alpha, "neutral")
    with pytest.raises(ValueError, match="calibration"):
        VPO(build_model(seed=0), calibration="rejected")


def _module(policy, **kwargs):
    settings = dict(
        judge=VerifierJudge(is_correct),
        beta=0.1,
        generate_every_n_steps=1,
        max_new_tokens=4,
        temperature=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    return VPO(copy.deepcopy(policy).train(), **{**settings, **kwargs})


def _data(folder, tokenizer, prompts=32):
    return OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=prompts, batch_size=16, max_prompt_length=8
    )


class _Calibration(L.Callback):
    """The calibration rows of the first step and the policy's log-prob of them before and after it."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.module = module

    def on_before_optimizer_step(self, trainer, module, optimizer):
        data = module.online_data()
        pairs = data.step_batch(0, 0, 1, module.device)
        self.rows = module.calibration_rows(pairs)
        self.again = module.calibration_rows(pairs)  # same step, same seed: the same samples
        with torch.no_grad():
            self.before = module._log_probs(module.policy, self.rows)[0].sum()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        with torch.no_grad():
            self.after = module._log_probs(module.policy, self.rows)[0].sum()


@pytest.mark.parametrize("sign", ["optimistic", "pessimistic"])
def test_the_value_term_moves_reference_samples_by_its_sign(addition, sign):
    folder, tokenizer, policy, _ = addition
    # alpha large: the step is the value term's (the DPO term of 16 pairs is small beside it)
    module = _module(policy, alpha=100.0, value_sign=sign, lr=1e-4)
    watch = _Calibration()
    L.Trainer(max_steps=1, enable_checkpointing=False, callbacks=[watch], **QUIET).fit(
        module, _data(folder, tokenizer, 16)
    )
    assert torch.equal(watch.rows["input_ids"], watch.again["input_ids"])
    # they are pi_ref's samples: the reference is the SFT policy, which gives them finite log-probs
    assert torch.isfinite(module.reference_log_probs(watch.rows)).all()
    moved = (watch.after - watch.before).item()
    assert moved < 0 if sign == "optimistic" else moved > 0, moved


def test_vpo_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module = _module(policy, alpha=0.01)
    L.Trainer(max_steps=30, enable_checkpointing=False, **QUIET).fit(module, _data(folder, tokenizer))
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> VPO {after:.3f}")
    assert module.judge.calls == 30 * 32 * 2  # the pairs only: calibration samples are not judged
    assert after > before + 0.1, (before, after)
