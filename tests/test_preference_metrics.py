"""policylab.metrics against numbers worked out by hand, accumulation over batches, and the
DPO module's validation metrics against a direct computation on the same pairs."""

import math

import pytest
import torch

from policylab.metrics import (
    IdealizedRankingAccuracy,
    RankingAccuracy,
    RewardAccuracy,
    WinRate,
)


def test_reward_accuracy_accumulates_over_batches():
    metric = RewardAccuracy()
    metric.update(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.5, 1.0]))  # 2 of 3
    metric.update(torch.tensor([-1.0]), torch.tensor([-1.0]))  # a tie is not a win
    assert metric.compute().item() == pytest.approx(2 / 4)


def test_ranking_accuracy_plain_and_per_token():
    chosen, rejected = torch.tensor([-6.0, -3.0]), torch.tensor([-4.0, -4.0])
    chosen_tokens, rejected_tokens = torch.tensor([6.0, 3.0]), torch.tensor([2.0, 2.0])
    plain = RankingAccuracy()
    plain.update(chosen, rejected, chosen_tokens, rejected_tokens)
    # summed: -6 < -4 (wrong), -3 > -4 (right); per token: -1 > -2 (right), -1 > -2 (right)
    assert plain.compute().item() == pytest.approx(0.5)
    per_token = RankingAccuracy(length_normalized=True)
    per_token.update(chosen, rejected, chosen_tokens, rejected_tokens)
    assert per_token.compute().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="chosen_tokens"):
        RankingAccuracy(length_normalized=True).update(chosen, rejected)


def test_idealized_ranking_accuracy_follows_the_theorem():
    beta = 0.5
    ref_chosen, ref_rejected = torch.tensor([-5.0, -5.0, -5.0, -2.0]), torch.tensor([-3.0, -3.0, -3.0, -3.0])
    alpha = torch.tensor([0.8, 0.6, 1.0, 0.3])
    metric = IdealizedRankingAccuracy(beta)
    metric.update(ref_chosen, ref_rejected, alpha)
    # By hand: reference gap -2, -2, -2, +1; bonus (1/beta) log(a/(1-a)):
    #   2 log 4 = 2.77 > 2 (right); 2 log 1.5 = 0.81 < 2 (wrong); unanimous (right);
    #   2 log(3/7) = -1.69, 1 - 1.69 < 0 (wrong)
    expected = [2 * math.log(4) - 2 > 0, 2 * math.log(1.5) - 2 > 0, True, 1 + 2 * math.log(3 / 7) > 0]
    assert expected == [True, False, True, False]
    assert metric.compute().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(ref_chosen, ref_rejected, torch.tensor([1.5, 0.5, 0.5, 0.5]))


def test_win_rate_counts_ties_half():
    metric = WinRate()
    metric.update(torch.tensor([1, 1, 0, 0]), torch.tensor([0, 1, 1, 0]))  # win, tie, loss, tie
    assert metric.compute().item() == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    with pytest.raises(ValueError, match="shape"):
        metric.update(torch.tensor([1, 0]), torch.tensor([1]))


def test_dpo_validation_metrics_match_a_direct_count(tmp_path):
    pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
    import lightning as L

    from policylab.datamodules import PreferenceDataModule
    from policylab.modules.preference import DPO
    from policylab.tasks.arithmetic import (
        AdditionTask,
        build_model,
        build_tokenizer,
        write_jsonl,
    )

    build_tokenizer(tmp_path / "tok")
    rows = AdditionTask(max_operand=9, seed=3).preference_rows(70)
    for i, row in enumerate(rows):
        row["preference_probability"] = [0.55, 0.9, 1.0][i % 3]
    write_jsonl(rows, tmp_path / "val.jsonl")
    dm = PreferenceDataModule(
        str(tmp_path / "val.jsonl"),
        str(tmp_path / "tok"),
        val_file=str(tmp_path / "val.jsonl"),
        batch_size=32,
        max_length=16,
        max_prompt_length=8,
        extra_fields=["preference_probability"],
    )
    torch.manual_seed(0)
    model = DPO(build_model(seed=0), beta=0.1)
    with torch.no_grad():  # a policy that differs from its reference
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    logged = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]

    dm.setup("validate")
    counts = {"reward": 0, "rank": 0, "rank_tok": 0, "ideal": 0}
    n = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            s = model.sequence_stats(batch)
            for i in range(s.chosen.shape[0]):
                n += 1
                counts["reward"] += bool(s.chosen[i] - s.ref_chosen[i] > s.rejected[i] - s.ref_rejected[i])
                counts["rank"] += bool(s.chosen[i] > s.rejected[i])
                counts["rank_tok"] += bool(s.chosen[i] / s.chosen_tokens[i] > s.rejected[i] / s.rejected_tokens[i])
                a = float(s.field("preference_probability")[i])
                gap = float(s.ref_chosen[i] - s.ref_rejected[i])
                counts["ideal"] += a == 1.0 or gap + math.log(a / (1 - a)) / 0.1 > 0
    assert n == 70
    assert logged["val/reward_accuracy"] == pytest.approx(counts["reward"] / n)
    assert logged["val/ranking_accuracy"] == pytest.approx(counts["rank"] / n)
    assert logged["val/ranking_accuracy_per_token"] == pytest.approx(counts["rank_tok"] / n)
    assert logged["val/idealized_ranking_accuracy"] == pytest.approx(counts["ideal"] / n)
