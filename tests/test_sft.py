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
    with pytest.raises(TextDataError, match="bad.jsonl, row 1: missing column completion"):
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
