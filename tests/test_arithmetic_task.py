"""The embedded addition task: tokenizer and model saved in Hugging Face formats and loaded back
with the Auto classes, data with the stated properties, and a judge that checks exactly."""

import json

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402


def test_tokenizer_and_model_round_trip_through_the_auto_classes(tmp_path):
    build_tokenizer(tmp_path / "tok")
    build_model(tmp_path / "model", seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ids = tokenizer("12+7=19").input_ids
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 1 + len("12+7=19")
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12+7=19"
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    again = build_model(seed=3)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_judge():
    assert is_correct("37+45=", "82")
    assert is_correct("37+45=", "82<eos>junk")
    assert not is_correct("37+45=", "81")
    assert not is_correct("37+45=", "")
    assert not is_correct("0+0=", "x0")


def test_data_has_the_stated_quality_and_is_seeded(tmp_path):
    task = AdditionTask(seed=1)
    sft = task.sft_rows(2000, correct_fraction=0.3)
    share = sum(is_correct(r["prompt"], r["completion"]) for r in sft) / len(sft)
    assert 0.26 < share < 0.34
    pairs = AdditionTask(seed=2).preference_rows(2000, flip_rate=0.2)
    for row in pairs:
        assert is_correct(row["prompt"], row["chosen"]) != row["flipped"]
        assert is_correct(row["prompt"], row["rejected"]) == row["flipped"]
        assert int(row["rejected"]) >= 0 and row["chosen"] != row["rejected"]
    assert 0.17 < sum(r["flipped"] for r in pairs) / len(pairs) < 0.23
    assert AdditionTask(seed=2).preference_rows(50, 0.2) == pairs[:50]
    path = write_jsonl(pairs[:3], tmp_path / "pairs.jsonl")
    assert [json.loads(line) for line in path.read_text().splitlines()] == pairs[:3]
    assert not (tmp_path / "pairs.jsonl.tmp").exists()


def test_dropped_carry_mistakes_are_systematic():
    from policylab.tasks.arithmetic import dropped_carry_sum

    assert dropped_carry_sum(37, 45) == 72 and dropped_carry_sum(99, 1) == 90 and dropped_carry_sum(12, 30) == 42
    task = AdditionTask(seed=3, mistake="dropped_carry")
    rows = task.sft_rows(500, correct_fraction=0.0)
    for row in rows:
        a, b = (int(x) for x in row["prompt"].rstrip("=").split("+"))
        if dropped_carry_sum(a, b) != a + b:
            assert int(row["completion"]) == dropped_carry_sum(a, b)
        else:
            assert not is_correct(row["prompt"], row["completion"])
    with pytest.raises(ValueError, match="mistake must be"):
        AdditionTask(mistake="typo")


def test_flipped_carry_mistakes_are_as_often_larger_as_smaller():
    from policylab.tasks.arithmetic import flipped_carry_sum

    assert flipped_carry_sum(37, 45) == 72 and flipped_carry_sum(31, 45) == 86 and flipped_carry_sum(3, 4) == 17
    task = AdditionTask(seed=4, mistake="flipped_carry")
    pairs = task.preference_rows(2000)
    larger = [int(p["rejected"]) > int(p["chosen"]) for p in pairs]
    assert all(abs(int(p["rejected"]) - int(p["chosen"])) == 10 for p in pairs)
    assert 0.4 < sum(larger) / len(larger) < 0.6  # no size cue for a preference learner
    longer = sum(len(p["rejected"]) > len(p["chosen"]) for p in pairs) / len(pairs)
    shorter = sum(len(p["rejected"]) < len(p["chosen"]) for p in pairs) / len(pairs)
    assert longer < 0.1 and shorter < 0.1  # and little length cue, either way (dropped carry: half shorter)
