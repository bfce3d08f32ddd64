"""XPO: the loss against hand-computed numbers (DPO and IPO plus the exploration term, its sign
included), the policy/reference pairs and which side the reference's sample is on, learning on the
addition task (held-out prompts), and a resume inside an iteration.

TRL 1.16.0 (installed) no longer ships ``trl.experimental.xpo``; the loss follows the XPOTrainer's
``_compute_losses`` of TRL's repository (see policylab/losses/xpo.py), checked here by hand."""

import copy
import math

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import iteration_recorder, mean_verifier_score, quiet_trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.losses.xpo import xpo_loss  # noqa: E402
from policylab.modules.preference.xpo import XPO  # noqa: E402
from policylab.tasks.arithmetic import build_model, build_tokenizer, is_correct  # noqa: E402


class _Table(VerifierJudge):
    """A scalar judge reading the score from the completion text (a number)."""

    def __init__(self):
        super().__init__(lambda prompt, completion: float(completion))


def _batch(chosen, rejected, ref_chosen, ref_rejected, chosen_is_reference):
    """A module's shared_step inputs without a model: the sequence stats are given."""
    from policylab.losses.pairwise import PairStats

    return PairStats(
        torch.tensor(chosen, requires_grad=True),
        torch.tensor(rejected, requires_grad=True),
        torch.tensor(ref_chosen),
        torch.tensor(ref_rejected),
        torch.tensor([3.0, 4.0]),
        torch.tensor([2.0, 5.0]),
        {"chosen_is_reference": torch.tensor(chosen_is_reference)},
    )


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_by_hand_with_the_reference_sample_on_either_side(loss_type, monkeypatch):
    module = XPO(build_model(seed=0), judge=_Table(), alpha=0.01, loss_type=loss_type, beta=0.5)
    stats = _batch([-2.0, -5.0], [-3.0, -4.0], [-2.5, -4.0], [-2.0, -6.0], [1.0, 0.0])
    monkeypatch.setattr(module, "sequence_stats", lambda batch: stats)
    loss, metrics = module.shared_step({"chosen_is_reference": stats.fields["chosen_is_reference"]})
    # log-ratios: chosen (0.5, -1.0), rejected (-1.0, 2.0); the reference's sample: pair 0's chosen
    # (log pi = -2.0), pair 1's rejected (log pi = -4.0)
    if loss_type == "sigmoid":  # -log sigma(0.5 * h), h = 1.5 and -3.0
        pair = [math.log1p(math.exp(-0.75)), math.log1p(math.exp(1.5))]
    else:  # (h_per_token - 1 / (2 beta))^2 on per-token averaged ratios: chosen /3, /4; rejected /2, /5
        pair = [(0.5 / 3 + 1.0 / 2 - 1.0) ** 2, (-1.0 / 4 - 2.0 / 5 - 1.0) ** 2]
    by_hand = (pair[0] + 0.01 * -2.0 + pair[1] + 0.01 * -4.0) / 2
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert metrics["reference_sample_log_prob"].item() == pytest.approx(-3.0)
    loss.backward()
    # the exploration term's gradient: +alpha / B on the reference's sample (minimising lowers its log-prob)
    pair_only = module.objective(stats, 0.5).mean()
    g_chosen, g_rejected = torch.autograd.grad(pair_only, [stats.chosen, stats.rejected])
    torch.testing.assert_close(stats.chosen.grad - g_chosen, torch.tensor([0.005, 0.0]))
    torch.testing.assert_close(stats.rejected.grad - g_rejected, torch.tensor([0.0, 0.005]))


def test_xpo_loss_function_and_shapes():
    torch.testing.assert_close(
        xpo_loss(torch.tensor([0.7, 0.1]), torch.tensor([-3.0, -10.0]), alpha=0.1), torch.tensor([0.4, -0.9])
    )
    with pytest.raises(ValueError, match="same shape"):
        xpo_loss(torch.zeros(2), torch.zeros(3))


def test_pairs_know_which_side_is_the_reference_sample(tmp_path):
    module = XPO(build_model(seed=0), judge=_Table())
    assert module.hparams.alpha == 1e-5 and module.settings.beta == 0.1  # TRL's defaults
    module.settings.max_new_tokens = 3  # the toy model's context is 32 tokens
    # rows: (policy, reference) per prompt; prompt 0: policy wins, prompt 1: reference wins, prompt 2: tie
    scores = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pairs = module.make_pairs(scores, torch.Generator())
    assert pairs.chosen.tolist() == [0, 3] and pairs.rejected.tolist() == [1, 2] and pairs.dropped_ties == 1
    from_reference = module.extra_pair_fields(scores.reshape(-1), pairs)["chosen_is_reference"]
    torch.testing.assert_close(from_reference, torch.tensor([0.0, 1.0]))
    module.settings.keep_ties = True  # TRL's rule: the tie kept, the policy's sample chosen
    pairs = module.make_pairs(scores, torch.Generator())
    assert pairs.chosen.tolist() == [0, 3, 4]

    tokenizer = build_tokenizer(tmp_path / "tok")
    module.sampler = module.build_sampler(tokenizer, 8)
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    paired = module.sample_completions(["1+2=", "3+4="], seed=5)
    own = module.sampler.sample(module.policy, ["1+2=", "3+4="], 1, seed=5)
    reference = module.sampler.sample(module.reference, ["1+2=", "3+4="], 1, seed=5 + 1_000_003)
    assert paired.texts[0::2] == own.texts and paired.texts[1::2] == reference.texts


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="alpha"):
        XPO(build_model(seed=0), judge=_Table(), alpha=-1.0)
    with pytest.raises(ValueError, match="has no reference"):
        XPO(build_model(seed=0), judge=_Table(), loss_type="simpo")


# ----------------------------------------------------------------------------- the task
def _xpo(folder, tokenizer, policy, steps_per_iteration=1, prompts=48, **kwargs):
    settings = dict(
        judge=VerifierJudge(is_correct),
        generate_every_n_steps=steps_per_iteration,
        max_new_tokens=4,
        temperature=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    module = XPO(copy.deepcopy(policy).train(), **{**settings, **kwargs})
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"),
        tokenizer,
        prompts_per_iteration=prompts,
        batch_size=prompts // steps_per_iteration,
        max_prompt_length=8,
        seed=0,
    )
    return module, dm


def test_xpo_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module, dm = _xpo(folder, tokenizer, policy)
    quiet_trainer(max_steps=30).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> XPO {after:.3f}")
    assert module.judge.calls == 30 * 48 * 2  # policy's and reference's answer to each prompt
    assert module.last_iteration_metrics["online/pairs"] > 0
    assert after > before + 0.1, (before, after)


def test_a_checkpoint_inside_an_iteration_resumes_on_the_same_pairs(addition, tmp_path):
    folder, tokenizer, policy, _ = addition

    def run(max_steps, ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        module, dm = _xpo(folder, tokenizer, policy, steps_per_iteration=3, prompts=12, keep_ties=True)
        recorder = iteration_recorder()
        trainer = quiet_trainer(
            max_steps=max_steps, callbacks=[recorder, *callbacks], default_root_dir=tmp_path, enable_checkpointing=True
        )
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return recorder.steps, module

    every4 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    straight, straight_module = run(7, callbacks=[every4])
    state = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=True)["OnlinePromptDataModule"]
    assert state["iteration"] == 1 and "chosen_is_reference" in state["pairs"]
    resumed, resumed_module = run(7, ckpt_path=tmp_path / "ckpt" / "step=4.ckpt")
    assert sorted(resumed) == [5, 6, 7]
    for step in (5, 7):  # the rest of iteration 1 from the checkpoint, then the same iteration 2
        assert resumed[step][0] == straight[step][0]
        assert all(torch.equal(v, straight[step][1][k]) for k, v in resumed[step][1].items()), step
    assert resumed_module.judge.calls == 12 * 2  # iteration 2 only
    for a, b in zip(straight_module.parameters(), resumed_module.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
