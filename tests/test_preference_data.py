"""Preference pairs: the same rows from JSONL, Parquet and a datasets directory give the same
batches; masks, truncation, chat templates and extra fields as documented; bad rows named by
number; padded and unpadded log-probs agree."""

import logging

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")

from policylab.datamodules import PreferenceDataModule, TextDataError  # noqa: E402
from policylab.nn.sequence import completion_log_probs  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    build_tokenizer(path)
    return path


def rows(n=12, flip_rate=0.0):
    out = AdditionTask(seed=0).preference_rows(n, flip_rate)
    for i, row in enumerate(out):
        row["flip_rate"] = 0.1 * (i % 3)
    return out


def batch_of(path, tokenizer_dir, **kwargs):
    dm = PreferenceDataModule(str(path), str(tokenizer_dir), batch_size=4, **kwargs)
    dm.setup("fit")
    return dm, next(iter(dm.train_dataloader()))


def test_jsonl_parquet_and_datasets_directory_give_identical_batches(tmp_path, tokenizer_dir):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = rows()
    write_jsonl(data, tmp_path / "pairs.jsonl")
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "pairs.parquet")
    datasets.Dataset.from_list(data).save_to_disk(str(tmp_path / "pairs_ds"))
    batches = [
        batch_of(tmp_path / name, tokenizer_dir, extra_fields=["flip_rate"])[1]
        for name in ("pairs.jsonl", "pairs.parquet", "pairs_ds")
    ]
    for other in batches[1:]:
        assert other.keys() == batches[0].keys()
        for key in other:
            torch.testing.assert_close(other[key], batches[0][key])


def test_masks_layout_and_extra_fields(tmp_path, tokenizer_dir):
    write_jsonl([{"prompt": "12+7=", "chosen": "19", "rejected": "2", "flip_rate": 0.25}], tmp_path / "one.jsonl")
    dm, batch = batch_of(tmp_path / "one.jsonl", tokenizer_dir, extra_fields=["flip_rate"])
    tok = dm.tokenizer
    prompt = tok("12+7=").input_ids  # <bos> 1 2 + 7 =
    assert batch["input_ids"][0].tolist() == prompt + tok("19", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert batch["input_ids"][1].tolist() == prompt + tok("2", add_special_tokens=False).input_ids + [
        tok.eos_token_id,
        tok.pad_token_id,
    ]
    assert batch["completion_mask"].tolist() == [[0] * 6 + [1, 1, 1], [0] * 6 + [1, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 9, [1] * 8 + [0]]
    assert batch["flip_rate"].tolist() == [0.25]


def test_truncation_keeps_the_end_of_the_prompt_and_the_start_of_the_completion(tmp_path, tokenizer_dir):
    write_jsonl([{"prompt": "1234567890+1=", "chosen": "1234567891", "rejected": "1"}], tmp_path / "long.jsonl")
    dm, batch = batch_of(tmp_path / "long.jsonl", tokenizer_dir, max_length=10, max_prompt_length=4)
    text = dm.tokenizer.decode(batch["input_ids"][0])
    assert text == "0+1=123456" and batch["input_ids"].shape[1] == 10


def test_chat_messages_use_the_chat_template(tmp_path, tokenizer_dir):
    write_jsonl(
        [
            {
                "prompt": [{"role": "user", "content": "2+2="}],
                "chosen": [{"role": "assistant", "content": "4"}],
                "rejected": [{"role": "assistant", "content": "5"}],
            }
        ],
        tmp_path / "chat.jsonl",
    )
    dm = PreferenceDataModule(str(tmp_path / "chat.jsonl"), str(tokenizer_dir), batch_size=1)
    dm.tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    )
    dm.setup("fit")
    assert dm.tokenizer.decode(next(iter(dm.train_dataloader()))["input_ids"][0], skip_special_tokens=True) == "2+2==4"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "1+1=", "chosen": "2"}, "missing column rejected"),
        ({"prompt": "1+1=", "chosen": " ", "rejected": "3"}, "empty chosen"),
        ({"prompt": "1+1=", "chosen": "2", "rejected": "2"}, "identical"),
    ],
)
def test_bad_rows_stop_with_their_number_or_are_skipped_and_counted(tmp_path, tokenizer_dir, row, reason):
    path = write_jsonl([{"prompt": "1+2=", "chosen": "3", "rejected": "4"}, row], tmp_path / "bad.jsonl")
    with pytest.raises(TextDataError, match=rf"bad.jsonl, line 2: .*{reason}"):
        batch_of(path, tokenizer_dir)
    dm, batch = batch_of(path, tokenizer_dir, bad_rows="skip")
    assert batch["input_ids"].shape[0] == 2 and [n for n, _ in dm.skipped["train"]] == [2]


def test_broken_files_are_named(tmp_path, tokenizer_dir):
    (tmp_path / "broken.jsonl").write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "1+\n')
    with pytest.raises(TextDataError, match="broken.jsonl, line 2: not valid JSON"):
        batch_of(tmp_path / "broken.jsonl", tokenizer_dir)
    with pytest.raises(TextDataError, match="no such file"):
        batch_of(tmp_path / "missing.jsonl", tokenizer_dir)
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(TextDataError, match="cut.parquet: unreadable Parquet"):
        batch_of(tmp_path / "cut.parquet", tokenizer_dir)


def test_log_probs_of_a_row_do_not_depend_on_the_padding_its_batch_needs(tmp_path, tokenizer_dir):
    model = build_model(seed=1).eval()
    data = [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3"},
        {"prompt": "98+97=", "chosen": "195", "rejected": "185"},
    ]
    write_jsonl(data, tmp_path / "two.jsonl")
    write_jsonl(data[:1], tmp_path / "first.jsonl")
    _, both = batch_of(tmp_path / "two.jsonl", tokenizer_dir)
    _, alone = batch_of(tmp_path / "first.jsonl", tokenizer_dir)
    with torch.no_grad():
        padded = completion_log_probs(
            model(both["input_ids"], attention_mask=both["attention_mask"]).logits,
            both["input_ids"],
            both["completion_mask"],
        )[0]
        single = completion_log_probs(model(alone["input_ids"]).logits, alone["input_ids"], alone["completion_mask"])[0]
    order = [0, 2] if both["input_ids"][0, 1] == alone["input_ids"][0, 1] else [1, 3]  # the shuffled position of row 1
    torch.testing.assert_close(padded[order], single, atol=1e-5, rtol=1e-5)


def test_semantic_distance_from_an_offline_encoder(tmp_path, tokenizer_dir):
    """``semantic_model`` adds 1 - cos(mean embedding of prompt, of chosen), checked against one
    text at a time without padding; a row's own semantic_distance is kept."""
    from transformers import AutoModel, AutoTokenizer

    build_model(seed=3).save_pretrained(tmp_path / "encoder")  # a folder without a tokenizer
    data = rows(6)
    data[0]["semantic_distance"] = 0.75
    write_jsonl(data, tmp_path / "pairs.jsonl")
    dm = PreferenceDataModule(
        str(tmp_path / "pairs.jsonl"), str(tokenizer_dir), batch_size=6, semantic_model=str(tmp_path / "encoder")
    )
    dm.setup("fit")
    batch = next(iter(dm.ordered_dataloader("train")))
    encoder, tok = (
        AutoModel.from_pretrained(str(tmp_path / "encoder")).eval(),
        AutoTokenizer.from_pretrained(str(tokenizer_dir)),
    )

    def embedding(text):
        with torch.no_grad():
            return encoder(input_ids=torch.tensor([tok(text).input_ids])).last_hidden_state[0].mean(0)

    expected = [0.75] + [
        1
        - torch.dot(embedding(r["prompt"]), embedding(r["chosen"])).item()
        / (embedding(r["prompt"]).norm() * embedding(r["chosen"]).norm()).item()
        for r in data[1:]
    ]
    torch.testing.assert_close(batch["semantic_distance"], torch.tensor(expected), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ bad input (issue 17)
def test_pairs_identical_after_truncation_are_bad_rows(tmp_path, tokenizer_dir, caplog):
    # prompt "1+1=" is 5 tokens with <bos>; max_length 9 leaves 4 completion tokens: "1234" of both
    data = [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3"},
        {"prompt": "1+1=", "chosen": "123456", "rejected": "123457"},
    ]
    path = write_jsonl(data, tmp_path / "long.jsonl")
    with pytest.raises(TextDataError, match=r"long.jsonl, line 2: chosen and rejected differ only past max_length 9"):
        batch_of(path, tokenizer_dir, max_length=9, max_prompt_length=6)
    with caplog.at_level(logging.INFO):
        dm, batch = batch_of(path, tokenizer_dir, max_length=9, max_prompt_length=6, bad_rows="skip")
    assert batch["input_ids"].shape[0] == 2 and [n for n, _ in dm.skipped["train"]] == [2]
    assert f"train: 1 rows from {path}; skipped 1 bad rows (first: line 2: chosen and rejected differ" in caplog.text
    # with room for the whole completions the same row is a good pair
    dm, batch = batch_of(path, tokenizer_dir, max_length=16, max_prompt_length=6)
    assert batch["input_ids"].shape[0] == 4 and dm.skipped["train"] == []


def test_pairs_the_tokenizer_maps_to_the_same_tokens_are_bad_rows(tmp_path, tokenizer_dir):
    # the arithmetic tokenizer knows digits and + - = only: both texts become <unk> <unk> <unk>
    path = write_jsonl(
        [{"prompt": "1+2=", "chosen": "3", "rejected": "4"}, {"prompt": "1+1=", "chosen": "two", "rejected": "dos"}],
        tmp_path / "words.jsonl",
    )
    with pytest.raises(
        TextDataError, match=r"words.jsonl, line 2: chosen and rejected are different texts but the tokenizer gives"
    ) as info:
        batch_of(path, tokenizer_dir)
    assert "become <unk>" in str(info.value)


def test_skips_and_truncations_are_counted_and_reported_per_split(tmp_path, tokenizer_dir, caplog):
    train = [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3"},  # fits
        {"prompt": "123+456=", "chosen": "5", "rejected": "1"},  # prompt 9 tokens (with <bos>) > 6: truncated
        {"prompt": "1+1=", "chosen": " ", "rejected": "3"},  # empty chosen: skipped
        {"prompt": "1+1=", "chosen": "2222", "rejected": "3"},  # chosen 5 tokens (with <eos>) > 9 - 5: truncated
        {"prompt": "9+9=", "chosen": "18", "rejected": "1234567"},  # rejected 8 tokens > 9 - 5: truncated
    ]
    path = write_jsonl(train, tmp_path / "train.jsonl")
    val = write_jsonl(train[:1], tmp_path / "val.jsonl")
    with caplog.at_level(logging.INFO):
        dm = PreferenceDataModule(
            str(path), str(tokenizer_dir), val_file=str(val), max_length=9, max_prompt_length=6, bad_rows="skip"
        )
        dm.setup("fit")
    assert dm.truncated == {"train": {"prompts": 1, "completions": 2}, "val": {"prompts": 0, "completions": 0}}
    assert [n for n, _ in dm.skipped["train"]] == [3]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("train:", "val:"))]
    assert lines == [
        f"train: 4 rows from {path}; skipped 1 bad rows (first: line 3: empty chosen); "
        "truncated 1 prompts to max_prompt_length 6 and 2 completions to max_length 9",
        f"val: 1 rows from {val}; none skipped or truncated",
    ]


def test_a_non_utf8_byte_names_file_and_line(tmp_path, tokenizer_dir):
    good = b'{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n'
    (tmp_path / "latin1.jsonl").write_bytes(
        good + b"\n" + b'{"prompt": "1+1=", "chosen": "caf\xe9", "rejected": "3"}\n'
    )
    with pytest.raises(TextDataError, match=r"latin1.jsonl, line 3: not valid UTF-8 \(byte 0xe9 at byte 34 "):
        batch_of(tmp_path / "latin1.jsonl", tokenizer_dir)


def test_a_tokenizer_path_typo_says_folder_not_found(tmp_path, tokenizer_dir, monkeypatch):
    path = write_jsonl(rows(2), tmp_path / "pairs.jsonl")
    typo = tmp_path / "data" / "tokenzer"
    with pytest.raises(TextDataError, match=rf"tokenizer folder not found: {typo}\. "):
        PreferenceDataModule(str(path), str(typo))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("./tokenizer", "runs/tokenizer", "~/no-such-policylab-tokenizer"):
        with pytest.raises(TextDataError, match="tokenizer folder not found"):
            PreferenceDataModule(str(path), name)
    with pytest.raises(TextDataError, match=r"tokenizer folder expected, but .*pairs.jsonl is a file"):
        PreferenceDataModule(str(path), str(path))


def test_which_names_are_local_paths(tmp_path, monkeypatch):
    from policylab.modules.hub import pretrained_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    local = ["./tok", "../tok", "/abs/tok", "~/no-such-policylab-tok", "data/arithmetic/tokenizer", "runs/tok", "a\\b"]
    for name in local:
        with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
            pretrained_source(name, "tokenizer")
    hub = ["gpt2", "Qwen/Qwen2.5-0.5B", "namespace/name"]
    assert [pretrained_source(n, "tokenizer") for n in hub] == hub
