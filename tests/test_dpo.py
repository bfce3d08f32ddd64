"""DPO and every loss type behind it learn to prefer right sums on the single-digit addition task
(held-out pairs), from a tiny model built offline; the module's switch picks the entry of the
registry policylab.losses.pairwise on the log-probs of one shared forward."""

import json

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402

from policylab.datamodules import PreferenceDataModule  # noqa: E402
from policylab.losses import preference as P  # noqa: E402
from policylab.losses.pairwise import PAIRWISE_LOSSES  # noqa: E402
from policylab.modules.preference import DPO  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("addition")
    build_tokenizer(folder / "tok")
    for name, seed, n in (("train", 0, 3000), ("val", 99, 300)):
        rows = AdditionTask(max_operand=9, seed=seed).preference_rows(n)
        for i, row in enumerate(rows):
            row["semantic_distance"] = (i % 5) / 5
        write_jsonl(rows, folder / f"{name}.jsonl")
    return folder


def _datamodule(folder, **kwargs):
    return PreferenceDataModule(
        str(folder / "train.jsonl"),
        str(folder / "tok"),
        val_file=str(folder / "val.jsonl"),
        batch_size=32,
        max_length=16,
        max_prompt_length=8,
        **kwargs,
    )


@pytest.mark.parametrize("loss_type", sorted(PAIRWISE_LOSSES))
def test_every_loss_type_learns_to_prefer_right_sums(task_files, loss_type):
    L.seed_everything(0)
    dm = _datamodule(task_files, extra_fields=["semantic_distance"] if loss_type == "sem_dpo" else ())
    # APO-zero pushes each response's own reward through a sigmoid: at lr 2e-3 its held-out accuracy
    # swings (0.60 / 0.65 / 0.54 at steps 100 / 200 / 400 here), at 5e-4 it climbs (0.73 / 0.79 / 0.85)
    lr = 5e-4 if loss_type == "apo_zero" else 2e-3
    model = DPO(build_model(seed=0), loss_type=loss_type, beta=2.0 if loss_type == "simpo" else 0.1, lr=lr)
    # BCO learns each response's reward against a running shift, not their difference: slower
    trainer = L.Trainer(
        max_steps=800 if loss_type == "bco_pair" else 400,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    after = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]
    # Held-out pairs: chance is 0.5; over shuffling orders the margin-only losses (sigmoid,
    # hinge, robust) reach 0.64-0.87 here, the others 0.81-1.0.
    assert after["val/reward_accuracy"] > 0.6, after


def test_the_module_applies_the_pure_loss_to_one_shared_forward(task_files):
    """The training loss equals policylab.losses.preference.dpo_loss recomputed from separate
    per-row forwards of the policy and the reference."""
    dm = _datamodule(task_files)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model = DPO(build_model(seed=0), beta=0.1)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
        stats = model.sequence_stats(batch)
        loss = model.objective(stats, 0.1).mean()

        def alone(net, i):
            n = int(batch["attention_mask"][i].sum())
            ids = batch["input_ids"][i : i + 1, :n]
            logp = torch.log_softmax(net(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
            return (logp * batch["completion_mask"][i, 1:n]).sum()

        pairs = batch["input_ids"].shape[0] // 2
        by_row = [
            P.dpo_loss(
                alone(model.policy, i) - alone(model.reference, i),
                alone(model.policy, i + pairs) - alone(model.reference, i + pairs),
                0.1,
            )
            for i in range(pairs)
        ]
    torch.testing.assert_close(loss, torch.stack(by_row).mean(), atol=1e-5, rtol=1e-5)


def test_unknown_loss_type_and_loss_kwargs_are_named():
    with pytest.raises(ValueError, match="unknown loss_type 'dpoo'"):
        DPO(build_model(), loss_type="dpoo")
    with pytest.raises(ValueError, match="loss_type 'simpo': unknown key 'simpo_gamma'; allowed: gamma"):
        DPO(build_model(), loss_type="simpo", loss_kwargs={"simpo_gamma": 0.5})
    model = DPO(build_model(), loss_type="simpo", beta=2.0, loss_kwargs={"gamma": 1.0})
    assert model.objective.hyperparameters == {"gamma": 1.0} and model.reference is None
    assert model.hparams.loss_kwargs == {"gamma": 1.0} and "model" not in model.hparams  # a model object: not recorded


def test_robust_reads_a_per_pair_flip_rate(task_files, tmp_path):
    rows = [json.loads(line) for line in (task_files / "train.jsonl").read_text().splitlines()[:8]]
    for row in rows:
        row["flip_rate"] = 0.3
    write_jsonl(rows, tmp_path / "rates.jsonl")
    dm = PreferenceDataModule(
        str(tmp_path / "rates.jsonl"), str(task_files / "tok"), batch_size=8, extra_fields=["flip_rate"]
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    model = DPO(build_model(seed=0), loss_type="robust", loss_kwargs={"flip_rate": 0.1})
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
        stats = model.sequence_stats(batch)
        got = model.objective(stats, 0.1)
    expected = P.robust_dpo_loss(stats.chosen - stats.ref_chosen, stats.rejected - stats.ref_rejected, 0.1, 0.3)
    torch.testing.assert_close(got, expected)


def test_bco_shift_is_in_the_state_dict_and_old_checkpoints_load(task_files, tmp_path):
    """BCO's running shift moves on training steps only, lives in the state dict (a checkpoint
    holds it), and a checkpoint of the old format (``checkpoint["bco_shift"]``) restores it."""
    dm = _datamodule(task_files)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    model = DPO(build_model(seed=0), loss_type="bco_pair", beta=0.5)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        step_means = []
        for _ in range(2):
            batch = next(batches)
            stats = model.sequence_stats(batch)
            step_means.append(0.5 * torch.cat(stats.ratios()).mean().item())
            model.objective(stats, 0.5)
        model.eval()
        model.objective(model.sequence_stats(next(batches)), 0.5)  # evaluation: no move
    assert model.state_dict()["objective.steps"].item() == 2
    assert model.state_dict()["objective.shift"].item() == pytest.approx(sum(step_means) / 2, rel=1e-5)

    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    again = DPO.load_from_checkpoint(tmp_path / "new.ckpt", model=build_model(seed=0), weights_only=True)
    assert again.objective.shift.item() == model.objective.shift.item() and again.objective.steps.item() == 2

    old = torch.load(tmp_path / "new.ckpt", weights_only=True)  # rewritten in the format before the registry
    del old["state_dict"]["objective.shift"], old["state_dict"]["objective.steps"]
    old["bco_shift"] = {"mean": torch.tensor(0.25), "count": 7}
    torch.save(old, tmp_path / "old.ckpt")
    restored = DPO.load_from_checkpoint(tmp_path / "old.ckpt", model=build_model(seed=0), weights_only=True)
    assert restored.objective.shift.item() == 0.25 and restored.objective.steps.item() == 7


def test_a_missing_model_folder_is_named_with_what_writes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/sft_arithmetic.yaml").write_text("{}")
    with pytest.raises(
        FileNotFoundError,
        match=r"model folder not found: runs/sft_arithmetic/version_0/hf_model\. "
        r"A run writes it \(hf_model\): run `python cli.py fit --config configs/sft_arithmetic.yaml`",
    ):
        DPO("runs/sft_arithmetic/version_0/hf_model")
    with pytest.raises(FileNotFoundError, match=r"model folder not found: \./modle"):
        DPO("./modle")


@pytest.mark.parametrize("loss_type", sorted(PAIRWISE_LOSSES))
def test_the_objective_pickles_for_spawned_processes(loss_type):
    """``ddp_spawn`` pickles the module: the objective holds the loss's name, not its (lambda) entry."""
    import pickle

    from policylab.modules.preference.objective import PairwiseObjective

    copy = pickle.loads(pickle.dumps(PairwiseObjective(loss_type)))
    assert copy.entry is PAIRWISE_LOSSES[loss_type] and copy.hyperparameters == PAIRWISE_LOSSES[loss_type].resolve(None)
