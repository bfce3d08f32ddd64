"""SFT learns single-digit addition (greedy accuracy under the judge), its batches mask prompts
and padding, and each checkpoint leaves a Hugging Face copy that loads by path."""

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from policylab.callbacks import GreedyAccuracy  # noqa: E402
from policylab.datamodules import SFTDataModule, TextDataError  # noqa: E402
from policylab.modules.preference import SFT  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    build_tokenizer(folder / "tok")
    write_jsonl(AdditionTask(max_operand=9, seed=0).sft_rows(3000, 1.0), folder / "sft.jsonl")
    write_jsonl(AdditionTask(max_operand=9, seed=5).sft_rows(64, 1.0), folder / "val.jsonl")
    write_jsonl(AdditionTask(max_operand=9, seed=7).eval_rows(100), folder / "eval.jsonl")
    return folder


def test_sft_batch_masks_the_prompt_and_padding(files, tmp_path):
    write_jsonl([{"prompt": "1+2=", "completion": "3"}, {"prompt": "9+9=", "completion": "18"}], tmp_path / "two.jsonl")
    dm = SFTDataModule(str(tmp_path / "two.jsonl"), str(files / "tok"), batch_size=2, seed=0)
    dm.setup("fit")
    batch = dm.collate(dm._tokenized["train"])
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0], [1] * 8]
    write_jsonl([{"prompt": "1+2="}], tmp_path / "bad.jsonl")
    with pytest.raises(TextDataError, match="bad.jsonl, line 1: missing column completion"):
        SFTDataModule(str(tmp_path / "bad.jsonl"), str(files / "tok")).setup("fit")


def test_sft_learns_addition_and_leaves_a_hugging_face_copy(files, tmp_path):
    L.seed_everything(0)
    dm = SFTDataModule(
        str(files / "sft.jsonl"),
        str(files / "tok"),
        val_file=str(files / "val.jsonl"),
        batch_size=32,
        max_length=16,
        max_prompt_length=8,
    )
    accuracy = GreedyAccuracy(str(files / "eval.jsonl"), every_n_steps=0, max_new_tokens=4)
    model = SFT(build_model(seed=0), lr=3e-3)
    before = L.Trainer(
        logger=False, callbacks=[accuracy], enable_progress_bar=False, enable_model_summary=False
    ).validate(model, dm, verbose=False)[0]
    accuracy.every_n_steps = 200
    trainer = L.Trainer(
        max_steps=400,
        logger=CSVLogger(tmp_path),
        callbacks=[accuracy],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    after = L.Trainer(
        logger=False, callbacks=[accuracy], enable_progress_bar=False, enable_model_summary=False
    ).validate(model, dm, verbose=False)[0]
    assert before["eval/accuracy"] < 0.2 and after["eval/accuracy"] > 0.8, (before, after)
    # The win rate against the answers at the start: with right/wrong verdicts, wins minus losses
    # is the change in accuracy, so win_rate = 1/2 + (accuracy - accuracy at start) / 2.
    import csv

    logged = [
        r for r in csv.DictReader(open(tmp_path / "lightning_logs/version_0/metrics.csv")) if r.get("eval/win_rate")
    ]
    assert [int(r["step"]) for r in logged] == [200, 400]
    for row in logged:
        assert float(row["eval/win_rate"]) == pytest.approx(
            0.5 + (float(row["eval/accuracy"]) - before["eval/accuracy"]) / 2
        )
    assert after["val/loss"] < before["val/loss"] / 4
    copy = AutoModelForCausalLM.from_pretrained(tmp_path / "lightning_logs/version_0/hf_model")
    for (name, a), b in zip(copy.state_dict().items(), model.policy.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_the_pretrained_base_logs_records_and_keeps_frozen_parts_in_eval(files, tmp_path):
    """PretrainedModule: training metrics written on logging steps only, validation ones per
    epoch; hyperparameters without the model object; frozen parts stay in eval mode."""
    import csv

    dm = SFTDataModule(
        str(files / "sft.jsonl"),
        str(files / "tok"),
        val_file=str(files / "val.jsonl"),
        batch_size=8,
        max_length=16,
        max_prompt_length=8,
    )
    model = SFT(build_model(seed=0), lr=1e-3)
    assert dict(model.hparams) == {"lr": 1e-3, "weight_decay": 0.0, "lora": None}
    model.frozen_parts = ("frozen_copy",)
    model.frozen_copy = build_model(seed=1).requires_grad_(False)
    L.Trainer(
        max_steps=6,
        log_every_n_steps=3,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=2,
        val_check_interval=6,
    ).fit(model, dm)
    model.train()
    assert model.policy.training and not model.frozen_copy.training
    assert all(not m.training for m in model.frozen_copy.modules())
    rows = list(csv.DictReader(open(tmp_path / "lightning_logs/version_0/metrics.csv")))
    assert [int(r["step"]) for r in rows if r.get("train/loss")] == [2, 5]  # global steps 3 and 6
    assert [r for r in rows if r.get("val/loss") and r.get("val/token_accuracy")]
    optimized = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in model.frozen_copy.parameters())


def test_a_missing_local_folder_is_named_and_hub_ids_pass(tmp_path, monkeypatch):
    from policylab.modules.hub import pretrained_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert pretrained_source("gpt2") == "gpt2"
    assert pretrained_source("Qwen/Qwen2-0.5B") == "Qwen/Qwen2-0.5B"
    assert pretrained_source(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"tokenizer folder not found: data/arithmetic/tokenizer\. The task"):
        pretrained_source("data/arithmetic/tokenizer", "tokenizer")
    with pytest.raises(FileNotFoundError, match="model folder not found: data/tokenizr"):  # data/ is here: local
        pretrained_source("data/tokenizr")
    with pytest.raises(FileNotFoundError, match="A training run writes it"):
        pretrained_source("runs/other/version_2/hf_model")
    with pytest.raises(FileNotFoundError, match=r"folder not found: \.\./nowhere"):
        SFT("../nowhere")
