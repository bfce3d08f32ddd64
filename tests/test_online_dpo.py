"""Online DPO (OAIF) and iterative best-of-n DPO: the pair rules on hand-made scores, the reference
rules against their formulas, learning on the addition task with the verifier as judge (held-out
prompts), and a checkpoint written inside an iteration that resumes on the same pairs and the
same next iteration."""

import copy

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import iteration_recorder, mean_verifier_score  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.datamodules.online import build_pairs  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.modules.preference import OnlineDPO  # noqa: E402
from policylab.tasks.arithmetic import build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


# ----------------------------------------------------------------------------- pair rules
def test_best_vs_worst_pairs_the_first_maximum_with_the_first_minimum_and_drops_ties():
    scores = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, 2.0, 1.0], [3.0, -1.0, -1.0]])
    pairs = build_pairs(scores, "best_vs_worst")
    # prompt 0: max first at 0, min at 1; prompt 1: all equal (dropped); prompt 2: 2.0 at 1 vs 0.0 at 0;
    # prompt 3: 3.0 at 0 vs the first -1.0 at 1. Rows are prompt * 3 + index.
    assert pairs.chosen.tolist() == [0, 7, 9] and pairs.rejected.tolist() == [1, 6, 10]
    assert pairs.prompt.tolist() == [0, 2, 3] and pairs.dropped_ties == 1 and pairs.usable_prompts == 3
    kept = build_pairs(scores, "best_vs_worst", keep_ties=True)  # TRL: a tie keeps the first as chosen
    assert kept.chosen.tolist() == [0, 3, 7, 9] and kept.rejected.tolist() == [1, 4, 6, 10]
    assert kept.dropped_ties == 0 and kept.usable_prompts == 4


def test_random_pair_with_two_completions_is_the_two_higher_first():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pairs = build_pairs(scores, "random_pair")
    assert pairs.chosen.tolist() == [0, 3] and pairs.rejected.tolist() == [1, 2]
    assert pairs.dropped_ties == 1 and pairs.usable_prompts == 2
    kept = build_pairs(scores, "random_pair", keep_ties=True)
    assert kept.chosen.tolist() == [0, 3, 4] and kept.rejected.tolist() == [1, 2, 5]


def test_random_pair_of_k_draws_two_distinct_completions_of_the_prompt():
    scores = torch.arange(40, dtype=torch.float32).reshape(10, 4) % 3  # some ties
    pairs = build_pairs(scores, "random_pair", generator=torch.Generator().manual_seed(0))
    again = build_pairs(scores, "random_pair", generator=torch.Generator().manual_seed(0))
    assert torch.equal(pairs.chosen, again.chosen) and len(pairs.chosen) + pairs.dropped_ties == 10
    flat = scores.reshape(-1)
    assert (pairs.chosen // 4 == pairs.prompt).all() and (pairs.rejected // 4 == pairs.prompt).all()
    assert (pairs.chosen != pairs.rejected).all() and (flat[pairs.chosen] > flat[pairs.rejected]).all()


def test_all_pairs_keeps_every_unequal_pair():
    scores = torch.tensor([[1.0, 0.0, 1.0], [2.0, 2.0, 2.0]])
    pairs = build_pairs(scores, "all_pairs")
    # (0,1): 0 wins; (0,2): tie; (1,2): 2 wins; prompt 1: three ties
    assert pairs.chosen.tolist() == [0, 2] and pairs.rejected.tolist() == [1, 1]
    assert pairs.dropped_ties == 4 and pairs.usable_prompts == 1


def test_bad_scores_and_rules_are_named():
    with pytest.raises(ValueError, match="prompt 1, completion 0 is nan"):
        build_pairs(torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]), "random_pair")
    with pytest.raises(ValueError, match="pair_rule must be one of"):
        build_pairs(torch.zeros(2, 2), "best")
    with pytest.raises(ValueError, match="K >= 2"):
        build_pairs(torch.zeros(2, 1), "best_vs_worst")


# ----------------------------------------------------------------------------- reference rules
def _perturbed(rule, **kwargs):
    module = OnlineDPO(build_model(seed=0), judge=VerifierJudge(is_correct), reference_update=rule, **kwargs)
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_reference_rules():
    torch.manual_seed(0)
    fixed = _perturbed("fixed")
    before = copy.deepcopy(fixed.reference.state_dict())
    fixed.update_reference()
    assert all(torch.equal(before[k], v) for k, v in fixed.reference.state_dict().items())

    previous = _perturbed("previous_iterate")
    previous.update_reference()
    policy = previous.policy.state_dict()
    assert all(torch.equal(policy[k], v) for k, v in previous.reference.state_dict().items())

    ema = _perturbed("ema", ref_alpha=0.3)
    old = {k: v.clone() for k, v in ema.reference.state_dict().items()}
    ema.update_reference()
    policy = ema.policy.state_dict()
    for name, value in ema.reference.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, old[name] + 0.3 * (policy[name] - old[name]))
    assert any(not torch.equal(old[k], v) for k, v in ema.reference.state_dict().items())
    assert all(not p.requires_grad for p in ema.reference.parameters())


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="reference_update must be one of"):
        OnlineDPO(build_model(), judge=VerifierJudge(is_correct), reference_update="last")
    with pytest.raises(ValueError, match="pair_rule must be one of"):
        OnlineDPO(build_model(), judge=VerifierJudge(is_correct), pair_rule="pairs")
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        OnlineDPO(build_model(), judge=VerifierJudge(is_correct), num_generations=1)
    with pytest.raises(ValueError, match="unknown loss_type 'dpoo'"):
        OnlineDPO(build_model(), judge=VerifierJudge(is_correct), loss_type="dpoo")


# ----------------------------------------------------------------------------- the task
def _online(folder, tokenizer, policy, **kwargs):
    settings = dict(
        judge=VerifierJudge(is_correct),
        num_generations=4,
        pair_rule="best_vs_worst",
        generate_every_n_steps=2,
        max_new_tokens=4,
        temperature=1.0,
        lr=1e-3,
        num_sample_texts=0,
    )
    settings.update(kwargs)
    module = OnlineDPO(copy.deepcopy(policy).train(), **settings)
    dm = OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=32, batch_size=16, max_prompt_length=8, seed=0
    )
    return module, dm


def test_online_dpo_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module, dm = _online(folder, tokenizer, policy)
    L.Trainer(max_steps=40, enable_checkpointing=False, **QUIET).fit(module, dm)
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> online DPO {after:.3f}")
    assert module.judge.calls == 20 * 32 * 4  # 20 iterations of 32 prompts x 4 samples
    metrics = module.last_iteration_metrics
    assert 0 < metrics["online/usable_fraction"] <= 1 and metrics["online/generation_tokens_per_s"] > 0
    assert after > before + 0.1, (before, after)


def test_a_checkpoint_inside_an_iteration_resumes_on_the_same_pairs_and_next_iteration(addition, tmp_path):
    folder, tokenizer, policy, _ = addition

    def run(max_steps, ckpt_path=None, callbacks=()):
        L.seed_everything(0)
        module, dm = _online(folder, tokenizer, policy, generate_every_n_steps=4, reference_update="previous_iterate")
        recorder = iteration_recorder()
        trainer = L.Trainer(max_steps=max_steps, callbacks=[recorder, *callbacks], default_root_dir=tmp_path, **QUIET)
        trainer.fit(module, dm, ckpt_path=ckpt_path)
        return recorder.steps, module

    every6 = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
    straight, straight_module = run(10, callbacks=[every6])
    checkpoint = torch.load(tmp_path / "ckpt" / "step=6.ckpt", weights_only=True)
    state = checkpoint["OnlinePromptDataModule"]
    assert state["iteration"] == 1  # steps 4..7
    assert all(torch.equal(state["pairs"][k], v) for k, v in straight[6][1].items())

    resumed, resumed_module = run(10, ckpt_path=tmp_path / "ckpt" / "step=6.ckpt")
    assert sorted(resumed) == [7, 8, 9, 10] and resumed[7][0] == 1 and resumed[10][0] == 2
    for step in (7, 10):  # the rest of iteration 1 without regenerating, then the same iteration 2
        iteration, pairs = resumed[step]
        assert iteration == straight[step][0]
        assert all(torch.equal(pairs[k], straight[step][1][k]) for k in pairs), step
    # the resumed run judged iteration 2 only: iteration 1 came from the checkpoint, not regenerated
    assert straight_module.judge.calls == 3 * 32 * 4 and resumed_module.judge.calls == 32 * 4
    for a, b in zip(straight_module.parameters(), resumed_module.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


DDP_SCRIPT = """
import json, sys
import lightning as L, torch
from lightning.pytorch.callbacks import Callback
from policylab.datamodules import OnlinePromptDataModule
from policylab.judges import VerifierJudge
from policylab.modules.preference import OnlineDPO
from policylab.tasks.arithmetic import build_model, is_correct

class Seen(VerifierJudge):
    def __init__(self):
        super().__init__(is_correct)
        self.prompts = []
    def _score(self, prompts, completions):
        self.prompts += prompts
        return super()._score(prompts, completions)

class Report(Callback):
    def on_train_end(self, trainer, module):
        dm = trainer.datamodule
        open(f"report_{trainer.global_rank}.json", "w").write(json.dumps({
            "rank": trainer.global_rank,
            "seen": sorted(set(module.judge.prompts)),
            "calls": module.judge.calls,
            "iteration_prompts": [dm.prompts[i] for i in dm.iteration_prompt_indices(dm.iteration)],
            "pairs": dm.pairs["prompt_index"].tolist(),
            "params": [p.detach().double().sum().item() for p in module.policy.parameters()],
        }))

if __name__ == "__main__":
    L.seed_everything(0)
    module = OnlineDPO(build_model(seed=0), judge=Seen(), num_generations=4, pair_rule="all_pairs", keep_ties=True,
                       generate_every_n_steps=2, max_new_tokens=3, temperature=1.0, lr=1e-3, num_sample_texts=0)
    dm = OnlinePromptDataModule(sys.argv[1], sys.argv[2], prompts_per_iteration=8, batch_size=4, max_prompt_length=8)
    L.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[Report()]).fit(module, dm)
    # leave the gloo group before exit: left to interpreter shutdown, its threads can abort the process
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_splits_prompts_gathers_pairs_and_keeps_ranks_identical(tmp_path):
    """Two CPU processes (``strategy="ddp"``, launched by Lightning from a script): each samples
    and judges its half of the iteration's prompts, both hold every rank's pairs, and the
    weights agree after the steps."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    build_tokenizer(tmp_path / "tok")
    write_jsonl([{"prompt": f"{a}+{b}="} for a in range(10) for b in range(10)], tmp_path / "prompts.jsonl")
    (tmp_path / "ddp_online.py").write_text(DDP_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "ddp_online.py", str(tmp_path / "prompts.jsonl"), str(tmp_path / "tok")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report_{rank}.json").read_text()) for rank in (0, 1)]
    first, second = reports
    assert first["calls"] == second["calls"] == 4 * 4  # one iteration: 4 of the 8 prompts x 4 samples each
    assert not set(first["seen"]) & set(second["seen"])
    assert set(first["seen"]) | set(second["seen"]) == set(first["iteration_prompts"])
    assert first["pairs"] == second["pairs"] and len(first["pairs"]) == 8 * 6  # all pairs of 4, ties kept
    assert first["params"] == second["params"]


class _BadJudge:
    def __init__(self, values):
        self.values = values

    def score(self, prompts, completions):
        return torch.tensor(self.values)


def test_bad_judge_output_is_named():
    with pytest.raises(ValueError, match=r"judge _BadJudge gave \(1,\) scores for 2 completions"):
        OnlineDPO(build_model(), judge=_BadJudge([1.0]))._judge(["1+1=", "1+2="], ["2", "3"])
    with pytest.raises(ValueError, match=r"scored completion 1 \(prompt '1\+2=', completion '3'\) as nan"):
        OnlineDPO(build_model(), judge=_BadJudge([1.0, float("nan")]))._judge(["1+1=", "1+2="], ["2", "3"])


def test_prompt_file_rows_are_checked_and_iterations_are_seeded(tmp_path):
    tokenizer = build_tokenizer()
    write_jsonl(
        [{"prompt": "1+1="}, {"prompt": "12345+678="}, {"answer": "3"}, {"prompt": "2+2="}], tmp_path / "p.jsonl"
    )
    with pytest.raises(ValueError, match=r"p.jsonl, line 2: prompt of 11 tokens, longer than max_prompt_length 8"):
        OnlinePromptDataModule(str(tmp_path / "p.jsonl"), tokenizer, max_prompt_length=8).setup()
    dm = OnlinePromptDataModule(
        str(tmp_path / "p.jsonl"), tokenizer, prompts_per_iteration=3, max_prompt_length=8, bad_rows="skip"
    )
    dm.setup()
    assert dm.prompts == ["1+1=", "2+2="] and [n for n, _ in dm.skipped] == [2, 3]
    # iterations walk through seeded permutations of the prompts, 3 at a time; ranks take every other one
    stream = dm.iteration_prompt_indices(0) + dm.iteration_prompt_indices(1)
    assert sorted(stream[:2]) == [0, 1] and sorted(stream[2:4]) == [0, 1] and sorted(stream[4:]) == [0, 1]
    assert dm.iteration_prompts(1, rank=1, world_size=2)[0] == dm.iteration_prompt_indices(1)[1::2]


def test_the_sampler_backend_is_chosen_by_name():
    from policylab.sampling import HFSampler, SamplingError

    tokenizer = build_tokenizer()
    module = OnlineDPO(build_model(), judge=VerifierJudge(is_correct), max_new_tokens=3, temperature=0.7)
    sampler = module.build_sampler(tokenizer, 8)
    assert isinstance(sampler, HFSampler) and (sampler.max_new_tokens, sampler.temperature) == (3, 0.7)
    with pytest.raises(ValueError, match="sampler must be one of hf, vllm, got 'vlm'"):
        OnlineDPO(build_model(), judge=VerifierJudge(is_correct), sampler="vlm")
    if not torch.cuda.is_available():  # vLLM's absence or a missing GPU: a message, not an import error
        with pytest.raises(SamplingError):
            OnlineDPO(
                build_model(), judge=VerifierJudge(is_correct), sampler="vllm", sampler_kwargs={"model": "m"}
            ).build_sampler(tokenizer, 8)


def test_missing_eos_penalty_is_subtracted_from_unfinished_completions():
    from policylab.sampling import Completions

    rows = torch.zeros(4, 3, dtype=torch.long)
    completions = Completions(
        prompts=["1+1=", "1+2="],
        prompt_index=torch.tensor([0, 0, 1, 1]),
        input_ids=rows,
        attention_mask=rows,
        completion_mask=rows,
        token_log_probs=rows.float(),
        texts=["2", "2", "4", "3"],
        finished=torch.tensor([True, False, False, True]),
    )
    plain = OnlineDPO(build_model(), judge=VerifierJudge(is_correct))
    assert plain.score_completions(completions).tolist() == [1.0, 1.0, 0.0, 1.0]
    penalized = OnlineDPO(build_model(), judge=VerifierJudge(is_correct), missing_eos_penalty=0.5)
    assert penalized.score_completions(completions).tolist() == [1.0, 0.5, -0.5, 1.0]


@pytest.mark.parametrize(
    "settings",
    [
        dict(loss_type="ipo", reference_update="ema", ref_update_every=2, pair_rule="all_pairs"),
        dict(loss_type="simpo", beta=2.0, pair_rule="random_pair", num_generations=2),  # no reference
    ],
    ids=["ipo-ema-all_pairs", "simpo-random_pair"],
)
def test_other_losses_and_reference_rules_train(addition, settings):
    folder, tokenizer, policy, _ = addition
    L.seed_everything(0)
    module, dm = _online(folder, tokenizer, policy, **settings)
    start = copy.deepcopy(module.reference.state_dict()) if module.reference is not None else None
    trainer = L.Trainer(max_steps=4, enable_checkpointing=False, log_every_n_steps=1, **QUIET)
    trainer.fit(module, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    metrics = module.last_iteration_metrics
    assert metrics["online/pairs"] > 0 and ("online/kl" in metrics) == (start is not None)
    if start is not None:  # ema moved the reference toward the policy
        assert any(not torch.equal(start[k], v) for k, v in module.reference.state_dict().items())
