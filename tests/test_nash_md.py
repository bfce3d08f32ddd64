"""Nash-MD: the loss against hand-computed numbers and against the exact gradients it estimates on a
categorical policy, the pairing of policy and mixture samples and the judge's probabilities,
learning on the addition task (held-out prompts), and a resume inside an iteration.

TRL 1.16.0 (installed) no longer ships ``trl.experimental.nash_md``; the loss follows the
NashMDTrainer's ``_compute_losses`` of TRL's repository (see policylab/losses/nash_md.py), checked
here by hand and by its expectation."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import iteration_recorder, mean_verifier_score, quiet_trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import PreferenceModelJudge, VerifierJudge  # noqa: E402
from policylab.losses.nash_md import nash_md_loss  # noqa: E402
from policylab.modules.preference.nash_md import NashMD, pair_completions  # noqa: E402
from policylab.nn.sequence import (
    model_completion_log_probs,  # noqa: E402
    model_token_log_probs,  # noqa: E402
)
from policylab.tasks.arithmetic import build_model, build_tokenizer, is_correct  # noqa: E402


class _Table(VerifierJudge):
    """A scalar judge reading the score from the completion text (a number)."""

    def __init__(self):
        super().__init__(lambda prompt, completion: float(completion))


# ----------------------------------------------------------------------------- the loss
def test_loss_by_hand():
    log_pi = torch.tensor([[-0.5, -1.0, -7.0], [-2.0, -0.1, -0.3]], requires_grad=True)
    log_ref = torch.tensor([[-0.7, -0.4, -9.0], [-1.0, -0.2, -0.3]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    p = torch.tensor([0.8, 0.3])
    loss, score, kl = nash_md_loss(log_pi, log_ref, mask, p, beta=0.1)
    # row 0: log-ratios (0.2, -0.6), the third token masked; KL REINFORCE 0.2*-0.5 + -0.6*-1.0 = 0.5;
    #        score (0.8 - 0.5) * (-1.5) = -0.45; loss 0.1 * 0.5 + 0.45 = 0.5
    # row 1: log-ratios (-1.0, 0.1, 0.0); KL REINFORCE 2.0 - 0.01 + 0 = 1.99; score -0.2 * -2.4 = 0.48;
    #        loss 0.199 - 0.48 = -0.281
    torch.testing.assert_close(loss, torch.tensor([0.5, -0.281]))
    torch.testing.assert_close(score, torch.tensor([-0.45, 0.48]))
    torch.testing.assert_close(kl, torch.tensor([-0.4, -0.9]))
    loss.sum().backward()
    # d loss / d log pi_t = beta * log-ratio_t - (p - 1/2) on the completion's tokens; no gradient to the reference
    torch.testing.assert_close(log_pi.grad, torch.tensor([[-0.28, -0.36, 0.0], [0.1, 0.21, 0.2]]))
    assert log_ref.grad is None or not log_ref.grad.any()


def test_expected_gradient_is_the_preference_gain_minus_beta_kl():
    # One-token responses from a categorical policy pi = softmax(theta) over 4 answers, mixture
    # answers y' from a fixed q, and a preference table P[y, y']. The loss's expectation over
    # y ~ pi and y' ~ q (weights, no sampling) has the gradient of
    #   -(sum_y pi(y) sum_y' q(y') P[y, y']) + beta * KL(pi || mu)
    # written directly: the REINFORCE terms estimate these two gradients.
    torch.manual_seed(0)
    theta = torch.randn(4, requires_grad=True)
    mu, q = torch.softmax(torch.randn(4), 0), torch.softmax(torch.randn(4), 0)
    wins = torch.rand(4, 4)
    wins = (wins + 1 - wins.T) / 2  # P[y, y'] + P[y', y] = 1
    beta = 0.3

    pi = torch.softmax(theta, 0)
    y, y_prime = torch.cartesian_prod(torch.arange(4), torch.arange(4)).T
    log_pi = torch.log_softmax(theta, 0)[y][:, None]
    loss, _, _ = nash_md_loss(log_pi, mu.log()[y][:, None], torch.ones(16, 1), wins[y, y_prime], beta)
    expected = (pi[y].detach() * q[y_prime] * loss).sum()
    (grad,) = torch.autograd.grad(expected, theta)

    direct = -(pi * (wins @ q)).sum() + beta * (pi * (pi.log() - mu.log())).sum()
    (exact,) = torch.autograd.grad(direct, theta)
    torch.testing.assert_close(grad, exact)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="must agree"):
        nash_md_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match=r"probability must have shape \[2\]"):
        nash_md_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3))


# ----------------------------------------------------------------------------- the pieces
def test_samples_pair_the_policy_with_the_mixture_and_token_log_probs_sum_to_the_sequence(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tok")
    module = NashMD(build_model(seed=0), judge=_Table(), max_new_tokens=3, temperature=1.0, mixture_coef=0.5)
    with torch.no_grad():  # a policy different from its reference
        for p in module.policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    module.sampler = module.build_sampler(tokenizer, 8)
    prompts = ["1+2=", "3+4=", "12+5="]
    paired = module.sample_completions(prompts, seed=7)
    own = module.sampler.sample(module.policy, prompts, num_samples=1, seed=7)
    mixture = module.sampler.sample(
        module.policy, prompts, 1, seed=7 + 1_000_003, reference=module.reference, mixture_coef=0.5
    )
    assert paired.prompt_index.tolist() == [0, 0, 1, 1, 2, 2] and paired.num_samples == 2
    assert paired.texts[0::2] == own.texts and paired.texts[1::2] == mixture.texts
    for rows, source in ((slice(0, None, 2), own), (slice(1, None, 2), mixture)):
        width = source.input_ids.shape[1]
        assert torch.equal(paired.input_ids[rows, :width], source.input_ids)
        assert torch.equal(paired.token_log_probs[rows, :width], source.token_log_probs)
        assert not paired.completion_mask[rows, width:].any()

    ids, attention, completion = paired.input_ids, paired.attention_mask, paired.completion_mask
    per_token, mask = model_token_log_probs(module.policy, ids, attention, completion)
    summed, count = model_completion_log_probs(module.policy, ids, attention, completion)
    torch.testing.assert_close(per_token.sum(1), summed)
    torch.testing.assert_close(mask.sum(1), count)
    with pytest.raises(ValueError, match="one completion per prompt"):
        pair_completions(own, module.sampler.sample(module.policy, prompts[:2], 1, seed=0), 0)


def test_judge_probabilities_pairs_and_the_missing_eos_penalty():
    module = NashMD(build_model(seed=0), judge=_Table())
    assert isinstance(module.judge, PreferenceModelJudge)  # a scalar judge becomes Bradley-Terry
    assert module.hparams.mixture_coef == 0.5 and module.settings.beta == 0.1  # TRL's defaults
    completions = SimpleNamespace(
        prompts=["a", "b"], texts=["1", "0", "2", "2"], finished=torch.tensor([True, True, False, True])
    )
    scores = module.score_completions(completions)
    sig = 1 / (1 + math.exp(-1))
    torch.testing.assert_close(scores, torch.tensor([sig, 1 - sig, 0.5, 0.5]))
    pairs = module.make_pairs(scores.reshape(2, 2), torch.Generator())
    assert pairs.chosen.tolist() == [0, 2] and pairs.rejected.tolist() == [1, 3] and pairs.dropped_ties == 0
    torch.testing.assert_close(module.extra_pair_fields(scores, pairs)["probability"], torch.tensor([sig, 0.5]))

    # TRL's rule for a reward judge: the penalty comes off the score of a completion without EOS
    module.settings.missing_eos_penalty = 1.5
    scores = module.score_completions(completions)
    trl = [1 / (1 + math.exp(-(1 - 0))), 1 / (1 + math.exp(-((2 - 1.5) - 2)))]
    torch.testing.assert_close(scores[0::2], torch.tensor(trl))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="mixture_coef"):
        NashMD(build_model(seed=0), judge=_Table(), mixture_coef=1.5)
    with pytest.raises(ValueError, match="train without lora"):
        NashMD(build_model(seed=0), judge=_Table(), lora={"r": 4})
    with pytest.raises(ValueError, match="only the hf sampler"):
        NashMD(build_model(seed=0), judge=_Table(), sampler="vllm")
    with pytest.raises(ValueError, match="NashMD's judge must be"):
        NashMD(build_model(seed=0), judge=object())


# ----------------------------------------------------------------------------- the task
def _nash_md(folder, tokenizer, policy, steps_per_iteration=1, prompts=48, **kwargs):
    settings = dict(
        judge=VerifierJudge(is_correct),
        generate_every_n_steps=steps_per_iteration,
        max_new_tokens=4,
        temperature=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    module = NashMD(copy.deepcopy(policy).train(), **{**settings, **kwargs})
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"),
        tokenizer,
        prompts_per_iteration=prompts,
        batch_size=prompts // steps_per_iteration,
        max_prompt_length=8,
        seed=0,
    )
    return module, dm


def test_nash_md_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module, dm = _nash_md(folder, tokenizer, policy)
    quiet_trainer(max_steps=40).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> Nash-MD {after:.3f}")
    assert module.judge.calls == 40 * 48  # one comparison per prompt: 40 iterations of 48 prompts
    assert module.judge.reward.calls == 40 * 48 * 2  # the verifier reads y and y'
    assert 0 < module.last_iteration_metrics["online/preference"] < 1
    assert after > before + 0.1, (before, after)


def test_a_checkpoint_inside_an_iteration_resumes_on_the_same_samples(addition, tmp_path):
    folder, tokenizer, policy, _ = addition

    def run(max_steps, ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        module, dm = _nash_md(folder, tokenizer, policy, steps_per_iteration=3, prompts=12)
        recorder = iteration_recorder()
        trainer = quiet_trainer(
            max_steps=max_steps, callbacks=[recorder, *callbacks], default_root_dir=tmp_path, enable_checkpointing=True
        )
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return recorder.steps, module

    every4 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    straight, straight_module = run(7, callbacks=[every4])
    state = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=True)["OnlinePromptDataModule"]
    assert state["iteration"] == 1 and "probability" in state["pairs"]  # steps 3..5, judged probabilities kept
    resumed, resumed_module = run(7, ckpt_path=tmp_path / "ckpt" / "step=4.ckpt")
    assert sorted(resumed) == [5, 6, 7]
    for step in (5, 7):  # the rest of iteration 1 from the checkpoint, then the same iteration 2
        assert resumed[step][0] == straight[step][0]
        assert all(torch.equal(v, straight[step][1][k]) for k, v in resumed[step][1].items()), step
    assert resumed_module.judge.calls == 12  # iteration 2 only: iteration 1 was not judged again
    for a, b in zip(straight_module.parameters(), resumed_module.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
