"""INPO: the loss against hand values and IPO, its minimiser over a tabular policy against the OMD
target written out, the previous iterate's log-probs stored with the pairs (and a checkpoint inside
an iteration resuming on the same anchors), and learning on the addition task (held-out prompts)."""

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import iteration_recorder, mean_verifier_score  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.losses.inpo import inpo_loss  # noqa: E402
from policylab.losses.pairwise import PairStats, get_pairwise_loss  # noqa: E402
from policylab.losses.preference import ipo_loss  # noqa: E402
from policylab.modules.preference.inpo import INPO  # noqa: E402
from policylab.nn.sequence import model_completion_log_probs  # noqa: E402
from policylab.tasks.arithmetic import build_model, is_correct  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


# ----------------------------------------------------------------------------- the loss
def test_loss_by_hand_through_the_registry():
    # pair 0: policy gap 2.0, reference gap 0.5, pi_t gap 0.5; eta 0.5, tau 0.25 (weights 1/2, 1/2):
    # h = 2 - 0.25 - 0.25 = 1.5, target 1/(2 * 0.5) = 1 -> 0.25.
    # pair 1: policy gap -1, reference gap 1, pi_t gap -2: h = -1 - 0.5 + 1 = -0.5 -> 2.25.
    stats = PairStats(
        torch.tensor([-1.0, -4.0]),
        torch.tensor([-3.0, -3.0]),
        torch.tensor([-2.0, -1.0]),
        torch.tensor([-2.5, -2.0]),
        fields={"chosen_iterate_logp": torch.tensor([-1.5, -5.0]), "rejected_iterate_logp": torch.tensor([-2.0, -3.0])},
    )
    entry = get_pairwise_loss("inpo")
    assert entry.hyperparameters == {"tau": 0.0025} and entry.reference
    torch.testing.assert_close(entry(stats, 0.5, {"tau": 0.25})[0], torch.tensor([0.25, 2.25]))
    # Without pi_t's log-probs (offline pairs, or INPO's first iteration) pi_t is the reference:
    # pair 0's h = 2 - 0.5 = 1.5 again (0.25), pair 1's h = -1 - 1 = -2 (9.0).
    offline = PairStats(stats.chosen, stats.rejected, stats.ref_chosen, stats.ref_rejected)
    torch.testing.assert_close(entry(offline, 0.5, {"tau": 0.25})[0], torch.tensor([0.25, 9.0]))
    with pytest.raises(ValueError, match="0 <= tau <= eta"):
        inpo_loss(*[torch.zeros(1)] * 6, eta=0.1, tau=0.2)


def test_tau_equal_to_eta_is_ipo_on_the_reference_and_tau_zero_forgets_it():
    g = torch.Generator().manual_seed(0)
    logps = [torch.randn(5, generator=g) for _ in range(6)]
    chosen, rejected, ref_c, ref_r, it_c, it_r = logps
    at_ref = inpo_loss(*logps, eta=0.2, tau=0.2)
    torch.testing.assert_close(at_ref, ipo_loss(chosen - ref_c, rejected - ref_r, 0.2))
    at_iterate = inpo_loss(*logps, eta=0.2, tau=0.0)
    torch.testing.assert_close(at_iterate, ipo_loss(chosen - it_c, rejected - it_r, 0.2))


def test_the_minimiser_over_a_tabular_policy_is_the_omd_target():
    """Five answers, a non-transitive preference matrix, pairs y, y' ~ pi_t labelled by it: the
    exact minimiser of the expected loss is pi_t^(1-tau/eta) pi_ref^(tau/eta) exp(P(y > pi_t)/eta)."""
    g = torch.Generator().manual_seed(1)
    n, eta, tau = 5, 0.5, 0.2
    log_ref = torch.randn(n, generator=g, dtype=torch.float64).log_softmax(0)
    log_t = torch.randn(n, generator=g, dtype=torch.float64).log_softmax(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    prefer = 0.5 + 0.45 * torch.tanh(a - a.T)  # P(i > j); P + P^T = 1, not Bradley-Terry
    win, lose = (i.reshape(-1) for i in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    # The ordered pair (win, lose) is drawn as (y, y') or (y', y) and labelled win > lose:
    # weight pi_t(win) pi_t(lose) P(win > lose).
    weight = (log_t[win] + log_t[lose]).exp() * prefer[win, lose]
    logits = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    entry = get_pairwise_loss("inpo")
    optimizer = torch.optim.LBFGS([logits], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        log_pi = logits.log_softmax(0)
        fields = {"chosen_iterate_logp": log_t[win], "rejected_iterate_logp": log_t[lose]}
        stats = PairStats(log_pi[win], log_pi[lose], log_ref[win], log_ref[lose], fields=fields)
        loss = (weight * entry(stats, eta, {"tau": tau})[0]).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    win_rate = prefer @ log_t.exp()  # P(y > pi_t), the self-comparison's 1/2 included
    target = ((1 - tau / eta) * log_t + (tau / eta) * log_ref + win_rate / eta).log_softmax(0)
    torch.testing.assert_close(logits.detach().log_softmax(0), target, atol=1e-6, rtol=0)
    # and not the target of another step size
    assert (logits.detach().log_softmax(0) - (log_t + win_rate / (2 * eta)).log_softmax(0)).abs().max() > 1e-2


def test_the_module_fixes_loss_and_reference_and_checks_tau():
    module = INPO(build_model(seed=0), beta=0.1, tau=0.05)
    assert module.settings.loss_type == "inpo" and module.settings.reference_update == "fixed"
    assert module.objective.hyperparameters == {"tau": 0.05} and module.settings.pair_rule == "best_vs_worst"
    assert module.hparams.beta == 0.1 and module.hparams.tau == 0.05
    with pytest.raises(ValueError, match="0 <= tau <= beta"):
        INPO(build_model(seed=0), beta=0.1, tau=0.2)


# ----------------------------------------------------------------------------- the task
def _inpo(folder, tokenizer, policy, **overrides):
    settings = dict(
        judge=VerifierJudge(is_correct),
        num_generations=4,
        beta=0.1,
        tau=0.1 / 3,
        generate_every_n_steps=4,
        max_new_tokens=4,
        temperature=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    module = INPO(copy.deepcopy(policy).train(), **{**settings, **overrides})
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=32, batch_size=16, max_prompt_length=8, seed=0
    )
    return module, dm


class _Anchors(Callback):
    """At each iteration's first step: the stored pi_t log-probs against the policy of the step
    before (recomputed), and the reference against the SFT weights."""

    def __init__(self, sft):
        self.sft, self.policy, self.checked = sft, None, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.policy = copy.deepcopy(module.policy).eval()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if (trainer.global_step - 1) % module.settings.generate_every_n_steps:
            return
        pairs = trainer.datamodule.pairs
        for side in ("chosen", "rejected"):
            with torch.no_grad():
                expected = model_completion_log_probs(
                    self.policy, *(pairs[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "completion_mask"))
                )[0]
            torch.testing.assert_close(pairs[f"{side}_iterate_logp"], expected, atol=1e-4, rtol=0)
        reference = module.reference.state_dict()
        self.checked.append(all(torch.equal(reference[k], v) for k, v in self.sft.items()))


def test_inpo_raises_the_verifier_score_with_both_anchors_in_place(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module, dm = _inpo(folder, tokenizer, policy, generate_every_n_steps=2)
    anchors = _Anchors(copy.deepcopy(policy.state_dict()))
    L.Trainer(max_steps=40, enable_checkpointing=False, callbacks=[anchors], **QUIET).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> INPO {after:.3f}")
    assert module.judge.calls == 20 * 32 * 4  # 20 iterations of 32 prompts x 4 samples
    assert len(anchors.checked) == 20 and all(anchors.checked)  # pi_t stored each iteration; pi_ref stays SFT
    assert after > before + 0.1, (before, after)


def test_a_checkpoint_inside_an_iteration_resumes_with_the_same_anchors(addition, tmp_path):
    folder, tokenizer, policy, _ = addition

    def run(max_steps, ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        module, dm = _inpo(folder, tokenizer, policy)
        recorder = iteration_recorder()
        trainer = L.Trainer(max_steps=max_steps, callbacks=[recorder, *callbacks], default_root_dir=tmp_path, **QUIET)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return recorder.steps, module

    every6 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    straight, straight_module = run(10, callbacks=[every6])
    resumed, resumed_module = run(10, ckpt_path=tmp_path / "ckpt" / "step=6.ckpt")
    assert sorted(resumed) == [7, 8, 9, 10]
    for step in (7, 10):  # the rest of iteration 1 on the stored pi_t log-probs, then iteration 2's
        assert "chosen_iterate_logp" in resumed[step][1]
        assert all(torch.equal(v, straight[step][1][k]) for k, v in resumed[step][1].items()), step
    for a, b in zip(straight_module.state_dict().items(), resumed_module.state_dict().items()):
        torch.testing.assert_close(a[1], b[1], atol=0, rtol=0)  # policy and reference alike
