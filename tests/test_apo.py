"""APO: the extrapolation step against hand values and, for a tabular softmax policy, against the
paper's pi_{t+1} (pi_{t+1}/pi_t)^alpha; the module's reference rule at every iteration's start;
alpha = 0 being iterative DPO; learning on the addition task (held-out prompts); and a checkpoint
inside an iteration resuming with the same iterates."""

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import mean_verifier_score  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.losses.apo import nesterov_extrapolation  # noqa: E402
from policylab.modules.preference import OnlineDPO  # noqa: E402
from policylab.modules.preference.apo import APO  # noqa: E402
from policylab.tasks.arithmetic import build_model, is_correct  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_extrapolation_by_hand():
    current, previous = torch.tensor([1.0, 2.0, -0.5]), torch.tensor([0.5, 3.0, -0.5])
    # 1 + 0.3 * 0.5, 2 + 0.3 * (-1), -0.5 + 0
    torch.testing.assert_close(nesterov_extrapolation(current, previous, 0.3), torch.tensor([1.15, 1.7, -0.5]))
    torch.testing.assert_close(nesterov_extrapolation(current, previous, 0.0), current)


def test_extrapolated_logits_of_a_softmax_policy_are_the_papers_extrapolated_policy():
    g = torch.Generator().manual_seed(0)
    before, after = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    pi_t, pi_next = before.softmax(0), after.softmax(0)
    alpha = 0.3
    paper = pi_next * (pi_next / pi_t) ** alpha
    paper = paper / paper.sum()
    torch.testing.assert_close(nesterov_extrapolation(after, before, alpha).softmax(0), paper)


def test_the_reference_rule_moves_policy_reference_and_previous():
    module = APO(build_model(seed=0), alpha=0.5)
    name, weight = "model.layers.0.mlp.up_proj.weight", None
    with torch.no_grad():
        weight = dict(module.policy.named_parameters())[name]
        start = weight.clone()
        weight.add_(1.0)  # as if one iteration moved this weight by +1
    module.update_reference()
    prev, ref = dict(module.previous.named_parameters())[name], dict(module.reference.named_parameters())[name]
    torch.testing.assert_close(prev, start + 1.0)  # theta_t
    torch.testing.assert_close(ref, start + 1.5)  # theta_t + 0.5 (theta_t - theta_{t-1})
    torch.testing.assert_close(weight.detach(), start + 1.5)
    other = "model.layers.0.self_attn.q_proj.weight"  # untouched: no move, no extrapolation
    reference, previous = dict(module.reference.named_parameters()), dict(module.previous.named_parameters())
    torch.testing.assert_close(reference[other], previous[other])
    assert module.hparams.alpha == 0.5 and module.settings.pair_rule == "best_vs_worst"
    with pytest.raises(ValueError, match="alpha"):
        APO(build_model(seed=0), alpha=-0.1)


# ----------------------------------------------------------------------------- the task
def _data(folder, tokenizer):
    return OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=32, batch_size=16, max_prompt_length=8, seed=0
    )


SETTINGS = dict(
    num_generations=4, generate_every_n_steps=2, max_new_tokens=4, temperature=1.0, lr=5e-4, num_sample_texts=0
)


def _apo(folder, tokenizer, policy, **overrides):
    module = APO(copy.deepcopy(policy).train(), judge=VerifierJudge(is_correct), **{**SETTINGS, **overrides})
    return module, _data(folder, tokenizer)


class _Iterates(Callback):
    """At each iteration's first step: the reference against theta_t + alpha (theta_t - theta_{t-1}),
    theta_t the policy before the step and theta_{t-1} the one before the previous iteration's first step."""

    def __init__(self):
        self.before, self.iterates, self.checked = None, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = {k: v.clone() for k, v in module.policy.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if (trainer.global_step - 1) % module.settings.generate_every_n_steps:
            return
        self.iterates.append(self.before)
        theta_t = self.before
        theta_prev = self.iterates[-2] if len(self.iterates) > 1 else theta_t
        reference, previous = module.reference.state_dict(), module.previous.state_dict()
        ok = True
        for k, v in theta_t.items():
            if v.is_floating_point():
                expected = v + module.hparams.alpha * (v - theta_prev[k])
                ok &= torch.allclose(reference[k], expected, atol=1e-6) and torch.equal(previous[k], v)
        self.checked.append(ok)


def test_apo_raises_the_verifier_score_with_the_extrapolated_reference(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module, dm = _apo(folder, tokenizer, policy)
    iterates = _Iterates()
    L.Trainer(max_steps=40, enable_checkpointing=False, callbacks=[iterates], **QUIET).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> APO {after:.3f}")
    assert module.judge.calls == 20 * 32 * 4  # 20 iterations of 32 prompts x 4 samples
    assert len(iterates.checked) == 20 and all(iterates.checked)
    assert after > before + 0.1, (before, after)


def test_alpha_zero_is_iterative_dpo(addition):
    folder, tokenizer, policy, _ = addition
    L.seed_everything(0)
    apo, dm = _apo(folder, tokenizer, policy, alpha=0.0)
    L.Trainer(max_steps=9, enable_checkpointing=False, **QUIET).fit(apo, dm)
    L.seed_everything(0)
    dpo = OnlineDPO(
        copy.deepcopy(policy).train(),
        judge=VerifierJudge(is_correct),
        pair_rule="best_vs_worst",
        reference_update="previous_iterate",
        **SETTINGS,
    )
    L.Trainer(max_steps=9, enable_checkpointing=False, **QUIET).fit(dpo, _data(folder, tokenizer))
    for a, b in zip(apo.policy.parameters(), dpo.policy.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for a, b in zip(apo.reference.parameters(), dpo.reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_a_checkpoint_inside_an_iteration_resumes_with_the_same_iterates(addition, tmp_path):
    folder, tokenizer, policy, _ = addition

    def run(max_steps, ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        module, dm = _apo(folder, tokenizer, policy, generate_every_n_steps=4)
        trainer = L.Trainer(max_steps=max_steps, callbacks=list(callbacks), default_root_dir=tmp_path, **QUIET)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return module

    every6 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    straight = run(10, callbacks=[every6])  # iterations start at steps 0, 4, 8: the resumed run extrapolates at 8
    state = torch.load(tmp_path / "ckpt" / "step=6.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("previous.") for k in state) and any(k.startswith("reference.") for k in state)
    resumed = run(10, ckpt_path=tmp_path / "ckpt" / "step=6.ckpt")
    assert straight.judge.calls == 3 * 32 * 4 and resumed.judge.calls == 32 * 4
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)  # policy, reference and previous
