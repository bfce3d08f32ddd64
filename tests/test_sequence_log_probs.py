"""Completion log-probs: against a per-token loop with log_softmax, and unchanged by padding on
either side (the padded rows' logits come from the same model with an attention mask)."""

import math

import pytest
import torch

from policylab.nn.sequence import completion_log_probs


def test_matches_a_per_token_loop():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    total, count = completion_log_probs(logits, ids, mask)
    for b in range(2):
        expected = sum(torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]].item() for t in range(1, 5) if mask[b, t])
        assert total[b].item() == pytest.approx(expected, abs=1e-5)
    assert count.tolist() == [3.0, 2.0]


def test_uniform_logits_give_minus_log_vocab_per_token():
    total, count = completion_log_probs(
        torch.zeros(1, 4, 10), torch.tensor([[1, 2, 3, 4]]), torch.tensor([[0, 1, 1, 1]])
    )
    assert total.item() == pytest.approx(-3 * math.log(10)) and count.item() == 3


def test_padding_does_not_leak():
    pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
    from policylab.tasks.arithmetic import build_model

    model = build_model(seed=0).eval()
    ids = torch.tensor([[1, 5, 6, 14, 11, 16, 5, 13]])
    mask = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1]])
    alone = completion_log_probs(model(ids).logits, ids, mask)[0]
    # right padding
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    attention = torch.cat([torch.ones(1, 8, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)
    right = completion_log_probs(model(padded_ids, attention_mask=attention).logits, padded_ids, padded_mask)[0]
    # left padding, positions counted from the first real token
    left_ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    left_attention = attention.flip(1)
    positions = (left_attention.cumsum(1) - 1).clamp(min=0)
    left_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), mask], 1)
    left = completion_log_probs(
        model(left_ids, attention_mask=left_attention, position_ids=positions).logits, left_ids, left_mask
    )[0]
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="must agree"):
        completion_log_probs(torch.zeros(1, 4, 3), torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5))


def test_the_forward_keeps_only_completion_logits_and_gives_the_same_sums():
    pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
    from policylab.nn.sequence import model_completion_log_probs
    from policylab.tasks.arithmetic import build_model

    model = build_model(seed=0).eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 17, (3, 9))
    attention = torch.ones_like(ids)
    attention[2, 7:] = 0
    completion = torch.zeros_like(ids)
    completion[0, 4:9] = 1
    completion[1, 6:8] = 1
    completion[2, 5:7] = 1
    seen = []
    model.register_forward_hook(lambda m, args, kwargs, out: seen.append(out.logits.shape[1]), with_kwargs=True)
    with torch.no_grad():
        got = model_completion_log_probs(model, ids, attention, completion)
        full = completion_log_probs(model(input_ids=ids, attention_mask=attention).logits, ids, completion)
    assert seen[0] == 9 - 3  # logits from position 3 (predicting the first completion token, 4) on
    torch.testing.assert_close(got, full)
