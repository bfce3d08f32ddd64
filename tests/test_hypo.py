"""HyPO: the RLOO estimator of the KL's gradient against the exact gradient on a tiny categorical
policy (its expectation, by enumerating every sample tuple), hand values, prompts decoded from the
offline batch, and learning on the addition task: held-out pairs ranked right, with less drift from
the reference than the same run without the KL term."""

import copy
import itertools
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import quiet_trainer  # noqa: E402

from policylab.datamodules import PreferenceDataModule  # noqa: E402
from policylab.losses.hypo import leave_one_out_baseline, rloo_kl_surrogate  # noqa: E402
from policylab.modules.preference.hypo import HyPO, ReferenceKL, batch_prompts  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, write_jsonl  # noqa: E402


def test_rloo_surrogate_hand_values():
    torch.testing.assert_close(leave_one_out_baseline(torch.tensor([[1.0, 2.0, 4.0]])), torch.tensor([[3.0, 2.5, 1.5]]))
    log_probs = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    reference = torch.tensor([[-1.5, -1.0, -3.0]])
    surrogate, kl = rloo_kl_surrogate(log_probs, reference)
    # r = (0.5, -1, 0); baselines (-0.5, 0.25, -0.25); advantages (1, -1.25, 0.25)
    assert surrogate.item() == pytest.approx((1.0 * -1 + -1.25 * -2 + 0.25 * -3) / 3)
    assert kl.item() == pytest.approx(-0.5 / 3)
    surrogate.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[1.0, -1.25, 0.25]]) / 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_kl_surrogate(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"\[prompts, samples\]"):
        rloo_kl_surrogate(torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize("k", [2, 3])
def test_rloo_gradient_is_unbiased_for_the_exact_kl_gradient(k):
    """E over k i.i.d. samples of the surrogate's gradient = grad KL(pi_theta || pi_ref), exactly:
    every tuple of k tokens of a 4-token categorical policy, weighted by its probability."""
    torch.manual_seed(0)
    theta = torch.randn(4, requires_grad=True)
    ref_logits = torch.randn(4)
    p = torch.softmax(theta, -1)
    q = torch.softmax(ref_logits, -1)
    exact = torch.autograd.grad((p * (p.log() - q.log())).sum(), theta)[0]  # KL written out

    log_pi, log_ref = torch.log_softmax(theta, -1), torch.log_softmax(ref_logits, -1)
    expected_surrogate, expected_kl = 0.0, 0.0
    for tup in itertools.product(range(4), repeat=k):
        index = torch.tensor([tup])
        weight = p.detach()[index].prod()
        surrogate, kl = rloo_kl_surrogate(log_pi[index], log_ref[index])
        expected_surrogate = expected_surrogate + weight * surrogate
        expected_kl = expected_kl + weight * kl
    estimate = torch.autograd.grad(expected_surrogate, theta)[0]
    torch.testing.assert_close(estimate, exact, atol=1e-6, rtol=1e-5)
    assert expected_kl.item() == pytest.approx((p * (p.log() - q.log())).sum().item(), rel=1e-5)


def test_prompts_of_the_offline_batch_encode_back(tmp_path, addition):
    folder, tokenizer, _, _ = addition
    write_jsonl(AdditionTask(max_operand=9, seed=0).preference_rows(40), tmp_path / "pairs.jsonl")
    dm = PreferenceDataModule(
        str(tmp_path / "pairs.jsonl"), tokenizer, batch_size=8, max_length=12, max_prompt_length=6
    )
    dm.setup("fit")
    batch = next(iter(dm.ordered_dataloader("train")))
    rows = AdditionTask(max_operand=9, seed=0).preference_rows(40)[:8]
    assert batch_prompts(batch, tokenizer) == [r["prompt"] for r in rows]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="precompute_reference"):
        HyPO(build_model(seed=0), precompute_reference=True)
    with pytest.raises(ValueError, match="needs one"):
        HyPO(build_model(seed=0), loss_type="simpo")
    with pytest.raises(ValueError, match="num_generations"):
        HyPO(build_model(seed=0), num_generations=1)
    with pytest.raises(ValueError, match="kl_coef"):
        HyPO(build_model(seed=0), kl_coef=-1.0)


def _train(policy, dm, kl_coef, steps=40):
    L.seed_everything(0)
    module = HyPO(
        copy.deepcopy(policy).train(), kl_coef=kl_coef, num_generations=4, beta=0.1, max_new_tokens=4, lr=1e-3
    )
    quiet_trainer(max_steps=steps, limit_val_batches=0).fit(module, dm)
    return module


def test_hypo_learns_with_less_drift_than_without_the_kl_term(tmp_path, addition):
    """Held-out pairs (prompts never trained on): HyPO prefers the right sums; its reverse KL to the
    reference on fresh samples is below the same run's without the KL term (offline DPO)."""
    folder, tokenizer, policy, _ = addition
    train_prompts = {json.loads(line)["prompt"] for line in (folder / "prompts.jsonl").read_text().splitlines()}
    rows = AdditionTask(max_operand=9, seed=1).preference_rows(3000)
    write_jsonl([r for r in rows if r["prompt"] in train_prompts], tmp_path / "train.jsonl")
    write_jsonl([r for r in rows if r["prompt"] not in train_prompts][:200], tmp_path / "val.jsonl")
    dm = PreferenceDataModule(
        str(tmp_path / "train.jsonl"),
        tokenizer,
        val_file=str(tmp_path / "val.jsonl"),
        batch_size=16,
        max_length=12,
        max_prompt_length=6,
    )
    hypo, dpo = _train(policy, dm, kl_coef=0.5), _train(policy, dm, kl_coef=0.0)
    accuracy = quiet_trainer().validate(hypo, dm, verbose=False)[0]["val/reward_accuracy"]
    measure = ReferenceKL(str(folder / "prompts.jsonl"), num_samples=8, max_new_tokens=4)
    trainer = SimpleNamespace(datamodule=dm)
    kl_hypo, kl_dpo = measure.estimate(trainer, hypo.eval()), measure.estimate(trainer, dpo.eval())
    print(f"held-out reward accuracy {accuracy:.3f}; KL to the reference {kl_hypo:.3f} (HyPO) vs {kl_dpo:.3f}")
    assert accuracy > 0.6, accuracy
    assert kl_hypo < 0.8 * kl_dpo, (kl_hypo, kl_dpo)
    fresh = HyPO(copy.deepcopy(policy))
    assert measure.estimate(trainer, fresh.eval()) == pytest.approx(0.0, abs=1e-5)  # policy = reference
