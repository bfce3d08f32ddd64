"""Judges: verifiers on known sums, reward models and GPMs saved through the modules' own export
and reloaded by folder (scores equal the module's on the datamodule's rows), a
sequence-classification folder against a hand-pooled forward, Bradley-Terry probabilities by
hand, SPPO win rates against hand computations, and the output checks."""

import math

import pytest
import torch

from policylab.datamodules import PreferenceDataModule
from policylab.judges import (
    JudgeError,
    PairwiseJudge,
    PreferenceModelJudge,
    RewardModelJudge,
    ScalarJudge,
    VerifierJudge,
    win_rates,
)
from policylab.modules.preference import GeneralPreferenceModel, RewardModel
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, is_correct, write_jsonl


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tokenizer_dir):
    """Six addition pairs as the preference datamodule tokenizes and batches them."""
    rows = AdditionTask(seed=3, mistake="flipped_carry").preference_rows(6)
    path = write_jsonl(rows, tmp_path_factory.mktemp("pairs") / "pairs.jsonl")
    data = PreferenceDataModule(str(path), str(tokenizer_dir), batch_size=6, max_length=32, max_prompt_length=16)
    data.setup()
    return rows, next(iter(data.ordered_dataloader("train")))


def randomize_head(module, seed: int) -> None:
    """Head weights of std 1, so scores differ clearly between rows (the init is near 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.head.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A RewardModel on the task's tiny model, exported as a run writes ``<run>/hf_model``."""
    module = RewardModel(model=build_model(seed=0)).eval()
    randomize_head(module, 0)
    folder = tmp_path_factory.mktemp("rm_run") / "hf_model"
    module.export(folder, {"state_dict": module.state_dict()})
    return module, folder


@pytest.fixture(scope="module")
def preference_model(tmp_path_factory):
    module = GeneralPreferenceModel(model=build_model(seed=1), value_head_dim=4, tau=0.1).eval()
    randomize_head(module, 1)
    folder = tmp_path_factory.mktemp("gpm_run") / "hf_model"
    module.export(folder, {"state_dict": module.state_dict()})
    return module, folder


def row_ids(tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """``[1, T]``: BOS, the prompt, the completion, EOS (written out per token)."""
    ids = [tokenizer.bos_token_id] + tokenizer.convert_tokens_to_ids(list(prompt + completion))
    return torch.tensor([ids + [tokenizer.eos_token_id]])


# ----------------------------------------------------------------- verifier
def test_verifier_on_known_sums():
    judge = VerifierJudge("policylab.tasks.arithmetic.is_correct")
    scores = judge.score(["2+3=", "10+5=", "7+7=", "40+2="], ["5", "16", "", "42<eos>"])
    assert scores.dtype == torch.float32 and scores.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert judge.calls == 4
    assert VerifierJudge(is_correct).score(["9+9="], ["18"]).tolist() == [1.0]
    with pytest.raises(ValueError, match="cannot import 'policylab.tasks.arithmetic.nothing'"):
        VerifierJudge("policylab.tasks.arithmetic.nothing")
    with pytest.raises(ValueError, match="2 completions for 3 prompts"):
        judge.score(["1+1=", "2+2=", "3+3="], ["2", "4"])


def test_verifier_that_raises_or_returns_no_number_names_the_prompt():
    with pytest.raises(JudgeError, match=r"is_correct.*prompt 1 \('oops'"):
        VerifierJudge(is_correct).score(["1+1=", "oops"], ["2", "3"])
    with pytest.raises(JudgeError, match="returned None for prompt 0"):
        VerifierJudge(lambda p, c: None).score(["1+1="], ["2"])


# ----------------------------------------------------------------- scalar reward models
def test_reward_model_folder_scores_equal_the_module(reward_model, pairs, tokenizer_dir):
    module, folder = reward_model
    rows, batch = pairs
    with torch.no_grad():
        expected = module.score(batch)  # chosen rows, then rejected rows
    judge = RewardModelJudge(str(folder), tokenizer=str(tokenizer_dir), batch_size=4)
    prompts = [r["prompt"] for r in rows]
    scores = judge.score(prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert scores.std() > 0.1 and judge.calls == 12
    # an empty completion is the EOS alone
    empty = judge.score(["3+4="], [""])
    with torch.no_grad():
        alone = module.reward(row_ids(judge.tokenizer, "3+4=", ""), torch.ones(1, 6, dtype=torch.long))
    torch.testing.assert_close(empty, alone, atol=1e-5, rtol=1e-5)


def test_reward_model_truncation_keeps_the_end_of_the_prompt(reward_model, tokenizer_dir):
    module, folder = reward_model
    judge = RewardModelJudge(folder, tokenizer=tokenizer_dir, max_length=5)
    score = judge.score(["12+34="], ["46"])
    ids = row_ids(judge.tokenizer, "12+34=", "46")[:, -5:]  # "4", "=", "4", "6", EOS
    with torch.no_grad():
        torch.testing.assert_close(score, module.reward(ids, torch.ones_like(ids)), atol=1e-5, rtol=1e-5)
    assert judge.truncated == 1


def test_sequence_classification_folder_reads_the_eos(tmp_path, tokenizer_dir):
    """A Llama sequence classifier whose pad token is the EOS: HF's own pooling would skip the
    final EOS; the judge reads it, as a hand-pooled forward of each unpadded row does."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight)
    model.save_pretrained(tmp_path / "classifier")
    judge = RewardModelJudge(str(tmp_path / "classifier"), tokenizer=str(tokenizer_dir), batch_size=8)
    prompts, completions = ["1+1=", "23+45=", "7+0=", "99+99="], ["2", "68", "", "198"]
    scores = judge.score(prompts, completions)
    model.eval()
    with torch.no_grad():
        expected = [
            model.score(model.model(row_ids(tokenizer, p, c)).last_hidden_state[0, -1]).item()
            for p, c in zip(prompts, completions)
        ]
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert model.config.pad_token_id == tokenizer.eos_token_id  # restored after scoring
    config.num_labels = 2
    with pytest.raises(ValueError, match=r"has 2 labels; a reward model has one \(num_labels=1\)"):
        RewardModelJudge(LlamaForSequenceClassification(config), tokenizer=tokenizer)


def test_reward_model_folders_that_are_not_reward_models(tmp_path, tokenizer_dir, preference_model, reward_model):
    build_model(tmp_path / "causal")
    with pytest.raises(ValueError, match="holds a LlamaForCausalLM and no reward_head.pt: not a reward model"):
        RewardModelJudge(tmp_path / "causal", tokenizer=tokenizer_dir)
    with pytest.raises(ValueError, match="GeneralPreferenceModel.*use PreferenceModelJudge"):
        RewardModelJudge(preference_model[1], tokenizer=tokenizer_dir)
    with pytest.raises(FileNotFoundError, match="reward model folder not found: .*missing/hf_model"):
        RewardModelJudge(str(tmp_path / "missing" / "hf_model"), tokenizer=tokenizer_dir)
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        RewardModelJudge(str(reward_model[1]), tokenizer=str(tmp_path / "no_tokenizer"))
    with pytest.raises(ValueError, match=r"holds no tokenizer \(ValueError\); give tokenizer="):
        RewardModelJudge(str(reward_model[1]))


# ----------------------------------------------------------------- pairwise
def test_gpm_folder_probabilities_equal_the_module(preference_model, pairs, tokenizer_dir):
    module, folder = preference_model
    rows, batch = pairs
    with torch.no_grad():
        expected = torch.sigmoid(module.score(batch) / 0.1)
    judge = PreferenceModelJudge(str(folder), tokenizer=str(tokenizer_dir), batch_size=5)
    assert judge.tau == 0.1
    prompts = [r["prompt"] for r in rows]
    chosen, rejected = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    probabilities = judge.prefer(prompts, chosen, rejected)
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-5)
    assert probabilities.std() > 0.01 and judge.calls == 6
    torch.testing.assert_close(judge.prefer(prompts, rejected, chosen), 1 - expected, atol=1e-5, rtol=1e-5)


def test_gpm_temperature_from_the_run(preference_model, pairs, tmp_path, tokenizer_dir):
    """A run's ``hparams.yaml`` beside ``hf_model`` gives the temperature it trained with."""
    module, _ = preference_model
    module.export(tmp_path / "run" / "hf_model", {"state_dict": module.state_dict()})
    (tmp_path / "run" / "hparams.yaml").write_text("lr: 1.0e-05\ntau: 0.5\nvalue_head_dim: 4\n")
    judge = PreferenceModelJudge(tmp_path / "run" / "hf_model", tokenizer=tokenizer_dir)
    rows, batch = pairs
    with torch.no_grad():
        expected = torch.sigmoid(module.score(batch)[:2] / 0.5)
    prompts = [r["prompt"] for r in rows[:2]]
    probabilities = judge.prefer(prompts, [r["chosen"] for r in rows[:2]], [r["rejected"] for r in rows[:2]])
    assert judge.tau == 0.5
    torch.testing.assert_close(probabilities, expected, atol=1e-5, rtol=1e-5)


def test_gpm_preference_matrix_equals_pair_by_pair(preference_model, tokenizer_dir):
    judge = PreferenceModelJudge(preference_model[1], tokenizer=tokenizer_dir)
    prompts, groups = ["12+9=", "5+5="], [["21", "", "12", "31"], ["10", "0", "100", "1"]]
    matrix = judge.preference_matrix(prompts, groups)
    assert judge.calls == 2 * 6
    for n in range(2):
        for k in range(4):
            for j in range(4):
                if k != j:
                    one = judge.prefer([prompts[n]], [groups[n][k]], [groups[n][j]])
                    assert matrix[n, k, j].item() == pytest.approx(one.item(), abs=1e-5)
    rates = win_rates(judge, prompts, groups)
    torch.testing.assert_close(rates, (matrix.sum(-1) - 0.5) / 3)


def test_bradley_terry_over_a_verifier():
    judge = PreferenceModelJudge(VerifierJudge(is_correct))
    probabilities = judge.prefer(["2+3=", "2+3=", "4+4="], ["5", "4", "7"], ["4", "5", "9"])
    assert probabilities.tolist() == pytest.approx([sigma(1), sigma(-1), 0.5], abs=1e-6)
    assert judge.calls == 3 and judge.reward.calls == 6
    rates = win_rates(judge, ["2+3="], [["5", "4", "5"]])
    right, wrong = (sigma(1) + 0.5) / 2, sigma(-1)
    assert rates.tolist() == [pytest.approx([right, wrong, right], abs=1e-6)]
    assert judge.reward.calls == 6 + 3  # each completion of the group scored once


def test_bradley_terry_over_a_reward_model_folder(reward_model, tokenizer_dir):
    module, folder = reward_model
    judge = PreferenceModelJudge(folder, tokenizer=tokenizer_dir)
    r = judge.reward.score(["8+8="] * 2, ["16", "61"])
    assert judge.prefer(["8+8="], ["16"], ["61"]).item() == pytest.approx(sigma((r[0] - r[1]).item()), abs=1e-6)


# ----------------------------------------------------------------- win rates
class LongerWins(PairwiseJudge):
    """P(a beats b) = 1 if a is longer, 0 if shorter, 0.5 for equal lengths."""

    def __init__(self):
        self.batches = 0

    def _prefer(self, prompts, completions_a, completions_b):
        self.batches += 1
        return [0.5 if len(a) == len(b) else float(len(a) > len(b)) for a, b in zip(completions_a, completions_b)]


class FirstWins(LongerWins):
    """A position bias: the first completion shown wins with probability 0.8, whatever it is."""

    antisymmetric = False

    def _prefer(self, prompts, completions_a, completions_b):
        self.batches += 1
        return torch.full((len(prompts),), 0.8)


def test_win_rates_by_hand():
    judge = LongerWins()
    groups = [["a", "bbb", "cc"], ["xx", "yy", "z"]]
    rates = win_rates(judge, ["p", "q"], groups)
    # "a" beats neither; "bbb" both; "cc" one of two; "xx" ties "yy" (0.5) and beats "z" (1)
    assert rates.tolist() == [[0.0, 1.0, 0.5], [0.75, 0.75, 0.0]]
    assert judge.batches == 1 and judge.calls == 2 * 3  # K (K - 1) / 2 pairs per prompt, one batch
    # the authors' code: self-comparisons (0.5) included, row sums over K
    authors = win_rates(judge, ["p"], groups[:1], include_self=True)
    assert authors.tolist() == [pytest.approx([0.5 / 3, 2.5 / 3, 1.5 / 3])]


def test_win_rates_ask_both_orders_of_a_biased_judge():
    judge = FirstWins()
    rates = win_rates(judge, ["p"], [["a", "bb", "ccc", "d"]])
    assert rates.tolist() == [pytest.approx([0.8] * 4)]
    assert judge.batches == 1 and judge.calls == 4 * 3


def test_win_rates_refuse_bad_groups():
    with pytest.raises(ValueError, match="group 1 has 2 completions, group 0 has 3"):
        win_rates(LongerWins(), ["p", "q"], [["a", "b", "c"], ["a", "b"]])
    with pytest.raises(ValueError, match="K >= 2"):
        win_rates(LongerWins(), ["p"], [["a"]])
    with pytest.raises(TypeError, match=r"PreferenceModelJudge\(judge\)"):
        win_rates(VerifierJudge(is_correct), ["1+1="], [["2", "3"]])


# ----------------------------------------------------------------- output checks
class Returns(ScalarJudge):
    def __init__(self, values):
        self.values = values

    def _score(self, prompts, completions):
        return self.values


class ReturnsProbabilities(PairwiseJudge):
    def __init__(self, values):
        self.values = values

    def _prefer(self, prompts, completions_a, completions_b):
        return torch.tensor(self.values)


def test_nan_score_names_judge_prompt_and_value():
    with pytest.raises(JudgeError, match=r"Returns: score nan for prompt 2 is not finite"):
        Returns([0.0, 1.0, float("nan")]).score(["a", "b", "c"], ["", "", ""])


def test_wrong_batch_size_is_refused():
    judge = Returns(torch.zeros(2))
    with pytest.raises(JudgeError, match=r"Returns returned scores of shape \[2\] for 3 rows: expected shape \[3\]"):
        judge.score(["a", "b", "c"], ["x", "y", "z"])
    assert judge.calls == 0
    with pytest.raises(JudgeError, match=r"shape \[3, 1\]"):
        Returns(torch.zeros(3, 1)).score(["a", "b", "c"], ["x", "y", "z"])


def test_probability_outside_unit_interval_is_refused():
    with pytest.raises(JudgeError, match=r"ReturnsProbabilities: probability 1.3 for prompt 1 is outside \[0, 1\]"):
        ReturnsProbabilities([0.5, 1.3]).prefer(["a", "b"], ["x", "y"], ["u", "v"])
    with pytest.raises(JudgeError, match=r"probability 1.3 for prompt 1, completion 0 vs 1 is outside"):
        win_rates(ReturnsProbabilities([0.5, 1.3]), ["a", "b"], [["x", "y"], ["u", "v"]])
    with pytest.raises(JudgeError, match=r"score inf for prompt 0, completion 1"):
        PreferenceModelJudge(Returns([0.0, float("inf")])).preference_matrix(["a"], [["x", "y"]])
