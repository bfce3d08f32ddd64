"""The equal-budget table of online methods (benchmarks/online_table.py): the ``sft`` loss entry
(maximum likelihood on the chosen response), the judged-completion count of each kind of judge,
JudgeBudget stopping fit at an iteration's end at the budget (and a resume of the stopped run
staying stopped), the table's rows at a tiny budget, its KL estimate, and the table it writes."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
from conftest import quiet_trainer  # noqa: E402

from policylab.callbacks.judge_budget import RECORD, JudgeBudget, judged_completions  # noqa: E402
from policylab.judges import PairwiseJudge, PreferenceModelJudge, VerifierJudge  # noqa: E402
from policylab.losses.pairwise import PairStats, get_pairwise_loss  # noqa: E402
from policylab.tasks.arithmetic import build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import online_table  # noqa: E402


def test_sft_loss_is_the_token_mean_nll_of_the_chosen_response_only():
    entry = get_pairwise_loss("sft")
    assert not entry.reference and entry.length_normalized
    chosen = torch.tensor([-2.0, -6.0], requires_grad=True)
    rejected = torch.tensor([-1.0, -9.0], requires_grad=True)
    stats = PairStats(
        chosen, rejected, chosen_tokens=torch.tensor([2.0, 4.0]), rejected_tokens=torch.tensor([3.0, 3.0])
    )
    loss, _ = entry(stats, 0.1, entry.resolve(None))
    # TRL: -(sum of the chosen tokens' log-probs) / (number of chosen tokens) = 8 / 6 for the batch
    assert loss.mean().item() == pytest.approx(8 / 6)
    loss.mean().backward()
    assert torch.allclose(chosen.grad, torch.full((2,), -1 / 6)) and rejected.grad is None  # no negative gradient


class _Coin(PairwiseJudge):
    """A pairwise judge that is not a wrapped scalar judge."""

    def _prefer(self, prompts, a, b):
        return [0.5] * len(prompts)


def test_judged_completions_of_scalar_wrapped_and_pairwise_judges():
    verifier = VerifierJudge(is_correct)
    verifier.score(["1+1=", "1+2="], ["2", "4"])
    assert judged_completions(verifier) == 2
    bradley_terry = PreferenceModelJudge(VerifierJudge(is_correct))
    bradley_terry.preference_matrix(["1+1=", "2+2="], [["2", "3", "4", "5"], ["4", "4", "1", "0"]])
    assert bradley_terry.calls == 12  # pairs: 2 prompts x 4 * 3 / 2
    assert judged_completions(bradley_terry) == 8  # completions read: 2 prompts x 4
    coin = _Coin()
    coin.prefer(["1+1=", "1+2=", "1+3="], ["2", "3", "4"], ["1", "1", "1"])
    assert judged_completions(coin) == 6  # 3 comparisons of two completions
    with pytest.raises(TypeError, match="counts no calls"):
        judged_completions(object())


def _online(tmp_path):
    from policylab.datamodules import OnlinePromptDataModule
    from policylab.modules.preference.online_dpo import OnlineDPO

    tokenizer = build_tokenizer(tmp_path / "tok")
    write_jsonl([{"prompt": f"{a}+{a}="} for a in range(8)], tmp_path / "prompts.jsonl")
    module = OnlineDPO(build_model(seed=0), judge=VerifierJudge(is_correct), num_generations=2, keep_ties=True,
                       generate_every_n_steps=2, max_new_tokens=3, lr=1e-4)  # fmt: skip
    data = OnlinePromptDataModule(str(tmp_path / "prompts.jsonl"), tokenizer, prompts_per_iteration=4, batch_size=2)
    return module, data


def test_budget_stops_fit_at_an_iteration_end_and_a_resume_stays_stopped(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    # 4 prompts x 2 samples = 8 judged completions per iteration of 2 steps.
    module, data = _online(tmp_path)
    budget = JudgeBudget(budget=20)  # after 2 iterations (16), a third (24) would pass 20: stop at step 4
    trainer = quiet_trainer(max_steps=50, callbacks=[budget], default_root_dir=tmp_path / "a")
    trainer.fit(module, data)
    assert trainer.global_step == 4 and budget.spent(module) == 16 and budget.stopped
    record = json.loads((tmp_path / "a" / RECORD).read_text())
    assert record == {"budget": 20, "judged_completions": 16, "step": 4, "stopped_by_budget": True, "has_judge": True}

    module, data = _online(tmp_path)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_last=True)
    budget = JudgeBudget(budget=24)  # exactly 3 iterations: stop at step 6, with last.ckpt written there
    trainer = quiet_trainer(max_steps=50, callbacks=[budget, checkpoint], enable_checkpointing=True,
                            default_root_dir=tmp_path / "b")  # fmt: skip
    trainer.fit(module, data)
    assert trainer.global_step == 6 and budget.spent(module) == 24
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6

    # A resume of the stopped run: a new process's judge counts from 0, the checkpoint holds the 24.
    module, data = _online(tmp_path)
    budget = JudgeBudget(budget=24)
    trainer = quiet_trainer(max_steps=50, callbacks=[budget], default_root_dir=tmp_path / "c")
    trainer.fit(module, data, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert trainer.global_step == 6 and module.judge.calls == 0 and budget.spent(module) == 24


def test_rows_at_a_tiny_budget_and_a_new_config_joins(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("sft_arithmetic", "dpo_arithmetic", "online_dpo_arithmetic", "sppo_arithmetic", "rso_arithmetic"):
        (configs / f"{name}.yaml").write_text((ROOT / "configs" / f"{name}.yaml").read_text())
    (configs / "new_arithmetic.yaml").write_text(
        "model:\n  class_path: policylab.modules.preference.online_dpo.OnlineDPO\n"
    )
    (configs / "offline_arithmetic.yaml").write_text(
        "model:\n  class_path: policylab.modules.preference.dpo.DPO\ndata:\n  init_args:\n    batch_size: 32\n"
    )
    (configs / "broken_arithmetic.yaml").write_text("model:\n  class_path: policylab.modules.preference.nope.Nope\n")
    rows = {r.name: r for r in online_table.build_rows(budget=512, configs=configs)}
    assert set(rows) == {
        "sft", "dpo_pairs", "pref_ft_pairs", "online_dpo", "online_pref_ft", "best_of_8_dpo", "best_of_8_sft",
        "offline_samples_dpo", "offline_samples_pref_ft", "sppo", "rso", "new", "offline",
    }  # fmt: skip
    # 512 judged completions: 4 steps of online DPO (64 prompts x 2), or 4 steps of 64 offline pairs
    assert rows["dpo_pairs"].settings == {"trainer.max_steps": 4} and rows["dpo_pairs"].labels == 512
    assert rows["pref_ft_pairs"].settings["model.init_args.loss_type"] == "sft" and not rows["pref_ft_pairs"].budgeted
    offline = rows["offline_samples_dpo"].settings
    assert (
        offline["data.init_args.prompts_per_iteration"] == 256
        and offline["model.init_args.generate_every_n_steps"] == 4
    )
    assert rows["online_dpo"].budgeted and rows["online_dpo"].settings == {"trainer.max_steps": 8}
    assert rows["best_of_8_sft"].settings["model.init_args.pair_rule"] == "best_vs_worst"
    assert rows["rso"].settings["data.init_args.prompts_per_iteration"] == 300
    assert (rows["online_dpo"].sampling, rows["online_dpo"].gradient) == ("on-policy", "negative")
    assert (rows["offline_samples_pref_ft"].sampling, rows["offline_samples_pref_ft"].gradient) == (
        "offline", "max-likelihood",
    )  # fmt: skip
    assert not rows["sft"].train
    # a new offline pairwise method (a DPO subclass): budget / 2 pairs at its batch size
    assert rows["offline"].settings == {"trainer.max_steps": 8} and not rows["offline"].budgeted
    _, _, notes = online_table.method_configs(configs)
    assert len(notes) == 1 and "broken_arithmetic.yaml" in notes[0]
    args = online_table.cli_args(rows["online_dpo"], 2, tmp_path / "out", 512, resume=True)
    assert "--trainer.callbacks+=policylab.callbacks.judge_budget.JudgeBudget" in args
    assert "--trainer.callbacks.budget=512" in args and args[-2:] == ["--ckpt_path", "last"]
    assert args[args.index("--data.init_args.seed") + 1] == "2"
    assert not any("JudgeBudget" in a for a in online_table.cli_args(rows["dpo_pairs"], 0, tmp_path, 512, False))


def test_sequence_kl_is_the_summed_token_kl_along_the_answer():
    from policylab.sampling import HFSampler

    tokenizer = build_tokenizer()
    policy, reference = build_model(seed=0).eval(), build_model(seed=1).eval()
    completions = HFSampler(tokenizer, max_new_tokens=3).sample(policy, ["1+2=", "13+4="], 2, seed=0)
    kl = online_table.sequence_kl(policy, reference, completions)
    assert torch.allclose(online_table.sequence_kl(policy, policy, completions), torch.zeros(4), atol=1e-6)
    by_hand = []
    for row in range(4):
        total = 0.0
        real = completions.attention_mask[row].bool()
        ids = completions.input_ids[row][real][None]  # the row without its padding
        mask = completions.completion_mask[row][real]
        p = torch.distributions.Categorical(logits=policy(ids).logits[0])
        q = torch.distributions.Categorical(logits=reference(ids).logits[0])
        per_position = torch.distributions.kl_divergence(p, q)  # KL at each prefix
        for t in range(1, ids.shape[1]):
            if mask[t]:
                total += per_position[t - 1].item()
        by_hand.append(total)
    torch.testing.assert_close(kl, torch.tensor(by_hand), atol=1e-4, rtol=1e-4)


def test_table_from_finished_runs(tmp_path):
    rows = [
        online_table.Row("sft", "c", "SFT", train=False, labels=0),
        online_table.Row("dpo_pairs", "c", "offline DPO", {}, False, "offline", "negative", 512),
        online_table.Row("online_dpo", "c", "online DPO", {}, True, "on-policy", "negative"),
        online_table.Row("hypo", "c", "HyPO", {}, True),
    ]
    values = {"sft": [0.3], "dpo_pairs": [0.5, 0.6], "online_dpo": [0.7, 0.8], "hypo": [0.6, 0.6]}
    kls = {"sft": 0.0, "dpo_pairs": 2.0, "online_dpo": 0.5, "hypo": 1.0}
    for row in rows:
        for seed, accuracy in enumerate(values[row.name]):
            folder = online_table.run_folder(tmp_path, row, seed)
            folder.mkdir(parents=True)
            record = {"row": row.name, "seed": seed, "step": 4, "judged_completions": 512, "stopped_by_budget": True,
                      "accuracy": accuracy, "kl": kls[row.name], "kl_stderr": 0.01}  # fmt: skip
            (folder / online_table.FINAL).write_text(json.dumps(record))
    table = online_table.write_table(rows, [0, 1], tmp_path, 512, ["x.yaml left out"])
    assert (
        "| online DPO | on-policy | negative | 2 | 0.750 ± 0.050 | 0.700, 0.800 | +45.0 | 0.50 ± 0.00 | 512 |" in table
    )
    assert "online DPO vs offline DPO: +20.0 points" in table
    assert "HyPO vs offline DPO: +5.0 points" in table and "holds" in table
    assert "Note: x.yaml left out" in table
    assert (tmp_path / "table.csv").read_text().count("\n") == 5 and (tmp_path / "runs.csv").is_file()
