"""SPPO: win rates, pairs and loss targets on hand-made scores (against the authors' formula written
out by hand), the previous iterate as reference, and learning on the addition task with the
verifier as a Bradley-Terry judge (held-out prompts)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import mean_verifier_score  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import PreferenceModelJudge, VerifierJudge  # noqa: E402
from policylab.losses.pairwise import PairStats, get_pairwise_loss  # noqa: E402
from policylab.modules.preference import SPPO  # noqa: E402
from policylab.tasks.arithmetic import build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


class _Table(VerifierJudge):
    """A scalar judge reading the score from the completion text (a number)."""

    def __init__(self):
        super().__init__(lambda prompt, completion: float(completion))


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_win_rates_pairs_and_targets_follow_the_authors_code():
    module = SPPO(build_model(seed=0), judge=_Table(), num_generations=3, beta=0.5)
    assert isinstance(module.judge, PreferenceModelJudge)  # a scalar judge becomes Bradley-Terry
    assert module.hparams.reference_update == "previous_iterate" and module.hparams.loss_type == "sppo"
    scores = [[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]
    completions = SimpleNamespace(
        prompts=["a", "b"], prompt_index=torch.tensor([0, 0, 0, 1, 1, 1]), texts=[str(s) for row in scores for s in row]
    )
    rates = module.score_completions(completions)
    # compute_prob.py: P[i, j] = sigma(s_i - s_j), 0.5 on the diagonal, row mean over K = 3
    expected = [sum(_sigmoid(s_i - s_j) for s_j in row) / 3 for row in scores for s_i in row]
    torch.testing.assert_close(rates, torch.tensor(expected))
    pairs = module.make_pairs(rates.reshape(2, 3), torch.Generator().manual_seed(0))
    assert pairs.chosen.tolist() == [2] and pairs.rejected.tolist() == [0]  # max / min win rate; prompt 1: all ties
    assert pairs.dropped_ties == 1
    fields = module.extra_pair_fields(rates, pairs)
    torch.testing.assert_close(fields["chosen_win_rate"], torch.tensor([expected[2]]))
    torch.testing.assert_close(fields["rejected_win_rate"], torch.tensor([expected[0]]))

    # The registry's "sppo" loss with these fields: (r_w - eta (P_w - 1/2))^2 + (r_l - eta (P_l - 1/2))^2, eta = 1/beta
    r_w, r_l = 0.3, -0.2
    stats = PairStats(
        torch.tensor([r_w]),
        torch.tensor([r_l]),
        torch.zeros(1),
        torch.zeros(1),
        fields={k: v for k, v in fields.items()},
    )
    loss = get_pairwise_loss("sppo")(stats, 0.5, {})[0]
    by_hand = (r_w - 2.0 * (expected[2] - 0.5)) ** 2 + (r_l - 2.0 * (expected[0] - 0.5)) ** 2
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)


def test_win_rates_without_self_and_bad_judges():
    module = SPPO(build_model(seed=0), judge=_Table(), num_generations=2, include_self=False)
    completions = SimpleNamespace(prompts=["a"], prompt_index=torch.tensor([0, 0]), texts=["1", "0"])
    torch.testing.assert_close(module.score_completions(completions), torch.tensor([_sigmoid(1), _sigmoid(-1)]))
    with pytest.raises(ValueError, match="SPPO's judge must be a PairwiseJudge"):
        SPPO(build_model(seed=0), judge=object())
    with pytest.raises(ValueError, match="beta"):
        SPPO(build_model(seed=0), judge=_Table(), beta=0.0)


def test_win_rates_travel_with_the_pairs_through_the_store_and_a_checkpoint(tmp_path):
    write_jsonl([{"prompt": "1+1="}], tmp_path / "prompts.jsonl")
    tokenizer = build_tokenizer(tmp_path / "tok")
    dm = OnlinePromptDataModule(str(tmp_path / "prompts.jsonl"), tokenizer, batch_size=2, max_prompt_length=8)
    rows = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 0]])
    ones = (rows > 0).long()
    pairs = {
        f"{side}_{name}": value
        for side in ("chosen", "rejected")
        for name, value in (("input_ids", rows), ("attention_mask", ones), ("completion_mask", ones))
    }
    pairs |= {"chosen_score": torch.ones(3), "rejected_score": torch.zeros(3), "prompt_index": torch.zeros(3).long()}
    pairs |= {"chosen_win_rate": torch.tensor([0.7, 0.8, 0.9]), "rejected_win_rate": torch.tensor([0.3, 0.2, 0.1])}
    dm.store_iteration(4, pairs)
    restored = OnlinePromptDataModule(str(tmp_path / "prompts.jsonl"), tokenizer, batch_size=2, max_prompt_length=8)
    restored.load_state_dict(torch.load(_saved(dm.state_dict(), tmp_path), weights_only=True))
    batch, again = dm.step_batch(0), restored.step_batch(0)
    assert set(batch) >= {"chosen_win_rate", "rejected_win_rate"} and batch["chosen_win_rate"].shape == (2,)
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert torch.allclose(batch["chosen_win_rate"] + batch["rejected_win_rate"], torch.ones(2))  # rows stay matched
    with pytest.raises(ValueError, match=r"chosen_win_rate must have shape \[3\]"):
        dm.store_iteration(5, {**pairs, "chosen_win_rate": torch.zeros(2)})


def _saved(state, folder):
    path = folder / "state.pt"
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------- the task
class _PolicyAtIterationStart(L.Callback):
    """The reference at each iteration's first step, compared with the policy of the step before."""

    def __init__(self):
        self.previous, self.matches = None, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.previous = copy.deepcopy(module.policy.state_dict())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if (trainer.global_step - 1) % module.hparams.generate_every_n_steps == 0:
            ref = module.reference.state_dict()
            self.matches.append(all(torch.equal(ref[k], v) for k, v in self.previous.items()))


def test_sppo_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module = SPPO(
        copy.deepcopy(policy).train(),
        judge=VerifierJudge(is_correct),
        num_generations=4,
        beta=0.05,
        generate_every_n_steps=4,
        max_new_tokens=4,
        temperature=1.0,
        top_p=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=32, batch_size=16, max_prompt_length=8, seed=0
    )
    watch = _PolicyAtIterationStart()
    L.Trainer(max_steps=40, enable_checkpointing=False, callbacks=[watch], **QUIET).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> SPPO {after:.3f}")
    assert module.judge.reward.calls == 10 * 32 * 4  # 10 iterations of 32 prompts x 4 samples, each scored once
    assert watch.matches and all(watch.matches)  # the reference is the policy at the iteration's start (pi_t)
    assert module.last_iteration_metrics["online/win_rate_spread"] > 0
    assert after > before + 0.1, (before, after)
