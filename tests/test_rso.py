"""RSO: the statistical rejection sampler against hand-made rewards (beta -> 0: the top rewards;
beta -> inf: a uniform subset; beta = 1: the frequencies of pi* ∝ pi_sft exp(r / beta)), the
pairing of the accepted responses, and learning on the addition task with the verifier as the
reward (held-out prompts)."""

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import mean_verifier_score  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.modules.preference import RSO  # noqa: E402
from policylab.modules.preference.rso import statistical_rejection_sampling  # noqa: E402
from policylab.tasks.arithmetic import build_model, is_correct  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_small_beta_returns_the_top_rewards_best_first():
    rewards = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    for seed in range(5):
        accepted = statistical_rejection_sampling(rewards, 3, 1e-6, torch.Generator().manual_seed(seed))
        assert accepted.tolist() == [[1, 3, 0], [0, 1, 2]]


def test_large_beta_accepts_a_uniform_subset():
    rewards = torch.arange(6, dtype=torch.float32).repeat(6000, 1) * 3.0  # very different rewards
    accepted = statistical_rejection_sampling(rewards, 2, 1e9, torch.Generator().manual_seed(0))
    counts = torch.bincount(accepted.reshape(-1), minlength=6).float() / 6000
    torch.testing.assert_close(counts, torch.full((6,), 2 / 6), atol=0.02, rtol=0)  # each candidate in 1/3 of rows
    assert (accepted[:, 0] != accepted[:, 1]).all()


def test_accepted_responses_follow_the_optimal_policy():
    # Candidates iid from pi_sft over three responses with rewards 0, 1, 2; beta = 1. With many
    # candidates and few accepted, the first pass fills the quota: the accepted ones are draws of
    # pi*(y) ∝ pi_sft(y) exp(r(y) / beta).
    g = torch.Generator().manual_seed(0)
    pi_sft, reward = torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.0, 1.0, 2.0])
    kinds = torch.multinomial(pi_sft, 1500 * 60, replacement=True, generator=g).reshape(1500, 60)
    accepted = statistical_rejection_sampling(reward[kinds], 4, 1.0, g)
    frequency = torch.bincount(kinds.gather(1, accepted).reshape(-1), minlength=3).float() / accepted.numel()
    pi_star = pi_sft * torch.exp(reward)
    pi_star = pi_star / pi_star.sum()  # [0.279, 0.379, 0.343]
    torch.testing.assert_close(frequency, pi_star, atol=0.025, rtol=0)  # 6000 draws: sd about 0.006
    assert frequency[2] > pi_sft[2] + 0.15  # far from the proposal


def test_every_pass_accepts_the_best_left_and_bad_input_is_named():
    rewards = torch.tensor([[0.0, -50.0, -100.0]])  # beta 1: the last two are all but never accepted at once
    assert sorted(statistical_rejection_sampling(rewards, 3, 1.0, torch.Generator().manual_seed(0))[0].tolist()) == [
        0,
        1,
        2,
    ]
    with pytest.raises(ValueError, match="num_accepted must lie in"):
        statistical_rejection_sampling(rewards, 4, 1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        statistical_rejection_sampling(rewards, 1, 0.0)
    with pytest.raises(ValueError, match="prompt 0, candidate 1 is nan"):
        statistical_rejection_sampling(torch.tensor([[0.0, float("nan")]]), 1, 1.0)


def test_pairs_of_the_accepted_set():
    module = RSO(build_model(seed=0), judge=VerifierJudge(is_correct), num_candidates=6, num_accepted=4)
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    module.hparams.sampling_beta = 1e-6  # the top 4: candidates 5, 4, 3, 2 of prompt 0
    pairs = module.make_pairs(scores, torch.Generator().manual_seed(0))
    flat = scores.reshape(-1)
    assert len(pairs.chosen) == 2 and pairs.dropped_ties == 2 and pairs.usable_prompts == 1  # prompt 1: all ties
    assert set(pairs.chosen.tolist()) | set(pairs.rejected.tolist()) == {2, 3, 4, 5}  # disjoint, within prompt 0
    assert (flat[pairs.chosen] > flat[pairs.rejected]).all() and pairs.prompt.tolist() == [0, 0]
    module.hparams.pairing = "best_vs_worst"
    pairs = module.make_pairs(scores, torch.Generator().manual_seed(0))
    assert pairs.chosen.tolist() == [5] and pairs.rejected.tolist() == [2]
    with pytest.raises(ValueError, match="pairing must be one of"):
        RSO(build_model(seed=0), pairing="tournament")
    with pytest.raises(ValueError, match="num_accepted 3"):
        RSO(build_model(seed=0), num_candidates=6, num_accepted=3)


def test_rso_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module = RSO(
        copy.deepcopy(policy).train(),
        judge=VerifierJudge(is_correct),
        num_candidates=16,
        num_accepted=4,
        sampling_beta=0.5,
        loss_type="hinge",
        beta=0.5,
        generate_every_n_steps=4,
        max_new_tokens=4,
        lr=1e-3,
        num_sample_texts=0,
    )
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=32, batch_size=16, max_prompt_length=8, seed=0
    )
    start = copy.deepcopy(module.reference.state_dict())
    # every iteration logged (and so its KL estimated)
    L.Trainer(max_steps=40, enable_checkpointing=False, log_every_n_steps=4, **QUIET).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> RSO {after:.3f}")
    assert module.judge.calls == 10 * 32 * 16
    assert all(torch.equal(start[k], v) for k, v in module.reference.state_dict().items())  # pi_sft stays
    metrics = module.last_iteration_metrics
    assert metrics["online/pairs"] > 0 and metrics["online/kl"] > 0  # KL(pi_sft || pi) on the SFT samples
    assert after > before + 0.1, (before, after)
