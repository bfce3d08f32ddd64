"""Diffusion data: Pick-a-Pic pairs from Parquet bytes, JSONL paths and folders give the same
batches, winner first, ties dropped or kept, scores reordered; images resized, cropped and scaled
to [-1, 1], one flip for both images of a pair; single images and pair winners; prompt files;
every bad row named by file, row and column; the shapes task's files load."""

import io
import json
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("PIL", reason="the diffusion extras (pip install -e '.[diffusion]')")

from policylab.datamodules import ImageDataError, ImageDataModule, ImagePairDataModule, PromptDataModule  # noqa: E402
from policylab.tasks import shapes  # noqa: E402
from policylab.tasks.shapes import image_reward, png_bytes, write_dataset  # noqa: E402


def solid(rgb, height=32, width=32) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3)).copy()


def pair_rows(labels) -> list[dict]:
    """Row i: image 0 red with green level 10 i, image 1 blue with the same green level."""
    return [
        {
            "caption": f"pair {i}",
            "jpg_0": png_bytes(solid((200, 10 * i, 0))),
            "jpg_1": png_bytes(solid((0, 10 * i, 200))),
            "label_0": label,
            "score_0": 10.0 + i,
            "score_1": 20.0 + i,
        }
        for i, label in enumerate(labels)
    ]


def write_parquet(rows, path):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(rows, path, image_columns=("jpg_0", "jpg_1")):
    """Rows with each image saved as a PNG file under ``images/`` next to ``path``."""
    (path.parent / "images").mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, row in enumerate(rows):
            row = dict(row)
            for column in image_columns:
                if isinstance(row.get(column), bytes):
                    (path.parent / "images" / f"{i}_{column}.png").write_bytes(row[column])
                    row[column] = f"images/{i}_{column}.png"
            f.write(json.dumps(row) + "\n")
    return path


def ordered(dm):
    """The val batch (file order, no flip) of a datamodule whose val file is its train file."""
    dm.setup("fit")
    return next(iter(dm.val_dataloader()))


LABELS = [1, 0, 0.5, 1, 0]


@pytest.fixture
def sources(tmp_path):
    rows = pair_rows(LABELS)
    shards = tmp_path / "shards"
    shards.mkdir()
    write_parquet(rows[:2], shards / "a.parquet")
    write_parquet(rows[2:], shards / "b.parquet")
    (tmp_path / "folder").mkdir()
    return {
        "parquet": write_parquet(rows, tmp_path / "pairs.parquet"),
        "jsonl": write_jsonl(rows, tmp_path / "jsonl" / "pairs.jsonl"),
        "metadata folder": write_jsonl(rows, tmp_path / "folder" / "metadata.jsonl").parent,
        "parquet folder": shards,
    }


def test_every_source_gives_winner_first_pairs_without_ties(sources):
    for name, path in sources.items():
        dm = ImagePairDataModule(str(path), val_file=str(path), batch_size=8, score_columns=("score_0", "score_1"))
        batch = ordered(dm)
        assert batch["caption"] == ["pair 0", "pair 1", "pair 3", "pair 4"], name
        assert dm.ties_dropped == {"train": 1, "val": 1}
        assert batch["images"].shape == (4, 2, 3, 32, 32) and batch["images"].dtype == torch.float32
        red_first = batch["images"][:, :, 0].mean((-1, -2)) > 0  # [B, 2]: is the image the red jpg_0?
        assert red_first.tolist() == [[True, False], [False, True], [True, False], [False, True]], name
        torch.testing.assert_close(batch["label"], torch.ones(4))
        torch.testing.assert_close(
            batch["scores"], torch.tensor([[10.0, 20.0], [21.0, 11.0], [13.0, 23.0], [24.0, 14.0]])
        )
        green = batch["images"][:, :, 1, 0, 0]  # both images of a pair keep their row's green level
        torch.testing.assert_close(green[:, 0], green[:, 1])
        torch.testing.assert_close((green[:, 0] + 1) * 127.5, torch.tensor([0.0, 10.0, 30.0, 40.0]))


def test_kept_ties_stay_in_order_with_label_one_half(sources):
    dm = ImagePairDataModule(str(sources["parquet"]), val_file=str(sources["parquet"]), ties="keep")
    batch = ordered(dm)
    assert len(batch["caption"]) == 5 and dm.ties_dropped == {} and "scores" not in batch
    assert batch["label"].tolist() == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert (batch["images"][2, 0, 0] > 0).all() and (batch["images"][2, 1, 0] < 0).all()  # the tie is not swapped
    train = next(iter(dm.train_dataloader()))
    assert sorted(train["caption"]) == sorted(batch["caption"])  # batch_size 16 > 5 rows: one short batch
    with pytest.raises(ValueError, match="ties"):
        ImagePairDataModule(str(sources["parquet"]), ties="average")


def test_images_are_resized_on_the_shorter_side_center_cropped_and_scaled(tmp_path):
    wide = solid((0, 0, 255), 32, 64)
    wide[:, :8] = (255, 255, 0)  # the left eighth, which the center crop removes
    tall = solid((0, 255, 0), 48, 24)
    tall[:8], tall[-8:] = (255, 255, 0), (255, 0, 255)  # top and bottom bands, cropped away
    rows = [{"caption": "wide", "jpg": png_bytes(wide)}, {"caption": "tall", "jpg": png_bytes(tall)}]
    path = write_parquet(rows, tmp_path / "images.parquet")
    batch = ordered(ImageDataModule(str(path), val_file=str(path), resolution=16))
    assert batch["caption"] == ["wide", "tall"] and batch["images"].shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch["images"][0], torch.tensor([-1.0, -1.0, 1.0])[:, None, None].expand(3, 16, 16))
    torch.testing.assert_close(batch["images"][1], torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand(3, 16, 16))
    noise = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    noisy = write_parquet([{"caption": "noise", "jpg": png_bytes(noise)}], tmp_path / "noise.parquet")
    images = ordered(ImageDataModule(str(noisy), val_file=str(noisy), resolution=16))["images"]
    assert images.shape == (1, 3, 16, 16) and images.min() >= -1 and images.max() <= 1 and images.std() > 0.2
    # at the native resolution, the pixels come back exactly
    batch = ordered(ImageDataModule(str(path), val_file=str(path), resolution=32))
    torch.testing.assert_close(
        (batch["images"][0] + 1) * 127.5, torch.from_numpy(wide[:, 16:48]).permute(2, 0, 1).float()
    )


def test_random_flip_flips_both_images_of_a_pair_together(tmp_path):
    first, second = solid((255, 255, 255)), solid((255, 255, 255))
    first[:, :10], second[:, :10] = (255, 0, 0), (0, 0, 255)  # colour on the left only
    path = write_parquet(
        [{"caption": "c", "jpg_0": png_bytes(first), "jpg_1": png_bytes(second), "label_0": 1.0}],
        tmp_path / "p.parquet",
    )
    dm = ImagePairDataModule(str(path), val_file=str(path), random_flip=True)
    dm.setup("fit")
    torch.manual_seed(0)
    flipped = []
    for _ in range(20):
        images = dm.dataset("train")[0]["images"]  # [2, C, H, W]
        left_coloured = (images[:, 1, :, :10] < 0.5).all((-1, -2))  # the green channel is low where coloured
        right_coloured = (images[:, 1, :, -10:] < 0.5).all((-1, -2))
        assert left_coloured.tolist() in ([True, True], [False, False])  # the same flip for both
        assert right_coloured.tolist() == (~left_coloured).tolist()
        flipped.append(bool(right_coloured[0]))
    assert 0 < sum(flipped) < 20
    assert not any((dm.dataset("val")[0]["images"][:, 1, :, -10:] < 0.5).any() for _ in range(5))  # no flip in val


def test_from_pairs_keeps_the_winner_of_each_non_tie_pair(sources):
    for path in (sources["parquet"], sources["metadata folder"]):
        dm = ImageDataModule(str(path), val_file=str(path), from_pairs=True)
        batch = ordered(dm)
        assert batch["caption"] == ["pair 0", "pair 1", "pair 3", "pair 4"] and dm.ties_dropped["train"] == 1
        assert batch["images"].shape == (4, 3, 32, 32)
        assert (batch["images"][:, 0].mean((-1, -2)) > 0).tolist() == [
            True,
            False,
            True,
            False,
        ]  # red jpg_0 won rows 0, 3


def test_single_images_from_jsonl_with_another_column_name(tmp_path):
    rows = [{"caption": f"image {i}", "picture": png_bytes(solid((0, 20 * i, 0)))} for i in range(3)]
    path = write_jsonl(rows, tmp_path / "data" / "images.jsonl", image_columns=("picture",))
    batch = ordered(ImageDataModule(str(path), val_file=str(path), image_column="picture", resolution=8))
    assert batch["images"].shape == (3, 3, 8, 8) and set(batch) == {"caption", "images"}
    torch.testing.assert_close((batch["images"][:, 1, 0, 0] + 1) * 127.5, torch.tensor([0.0, 20.0, 40.0]))


def test_prompt_files_txt_and_jsonl(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("a red circle\n\n  a blue square  \na green triangle\n\n")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(
        '{"prompt": "a red circle"}\n{"caption": "a blue square"}\n\n{"prompt": "a green triangle", "id": 3}\n'
    )
    expected = ["a red circle", "a blue square", "a green triangle"]
    for path in (txt, jsonl):
        dm = PromptDataModule(str(path), val_file=str(path), batch_size=2, repeat=False)
        dm.setup("fit")
        assert [c for b in dm.val_dataloader() for c in b["caption"]] == expected
        once = [c for b in dm.train_dataloader() for c in b["caption"]]
        assert sorted(once) == sorted(expected)
        assert once == [c for b in dm.train_dataloader() for c in b["caption"]]  # seeded

    dm = PromptDataModule(str(txt), batch_size=2)  # repeat: endless, a fresh permutation on every pass
    dm.setup("fit")
    stream = [c for _, b in zip(range(6), dm.train_dataloader()) for c in b["caption"]]
    assert len(stream) == 12 and all(sorted(stream[i : i + 3]) == sorted(expected) for i in range(0, 12, 3))
    assert len({tuple(stream[i : i + 3]) for i in range(0, 12, 3)}) > 1


def test_bad_prompt_files_name_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a red circle"}\n{"prompt": "   "}\n')
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, row 2, column 'prompt': empty")):
        PromptDataModule(str(path)).setup("fit")
    path.write_text('{"prompt": "a red circle"}\n\n{"text": "a blue square"}\n')
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, row 3: missing column 'prompt'")):
        PromptDataModule(str(path)).setup("fit")
    path.write_bytes('{"prompt": "a red circle"}\n{"prompt": "a r\u00e9d square"}\n'.encode("latin-1"))
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, line 2: not valid UTF-8 (byte 0xe9 at byte 16")):
        PromptDataModule(str(path)).setup("fit")
    (tmp_path / "p.csv").write_text("prompt\na red circle\n")
    with pytest.raises(ImageDataError, match="unknown format"):
        PromptDataModule(str(tmp_path / "p.csv")).setup("fit")


def broken(rows, row, column, value):
    rows = [dict(r) for r in rows]
    if value is KeyError:
        del rows[row - 1][column]
    else:
        rows[row - 1][column] = value
    return rows


GOOD = pair_rows([1, 1, 1])


@pytest.mark.parametrize(
    ("fmt", "rows", "row", "column", "reason"),
    [
        ("jsonl", broken(GOOD, 2, "jpg_1", KeyError), 2, "jpg_1", "missing"),
        ("parquet", [{k: v for k, v in r.items() if k != "label_0"} for r in GOOD], 1, "label_0", "missing"),
        ("jsonl", broken(GOOD, 3, "jpg_0", "images/nowhere.png"), 3, "jpg_0", "no image file"),
        ("parquet", broken(GOOD, 2, "label_0", 0.7), 2, "label_0", "expected 1"),
        ("parquet", broken(GOOD, 1, "label_0", float("nan")), 1, "label_0", "expected 1"),
        ("jsonl", broken(GOOD, 3, "label_0", "1"), 3, "label_0", "expected 1"),
        ("parquet", broken(GOOD, 2, "caption", "  "), 2, "caption", "empty"),
        ("jsonl", broken(GOOD, 1, "caption", None), 1, "caption", "missing"),
        ("parquet", broken(GOOD, 2, "score_1", None), 2, "score_1", "missing"),
    ],
)
def test_bad_rows_stop_setup_naming_file_row_and_column(tmp_path, fmt, rows, row, column, reason):
    path = write_parquet(rows, tmp_path / "p.parquet") if fmt == "parquet" else write_jsonl(rows, tmp_path / "p.jsonl")
    dm = ImagePairDataModule(str(path), score_columns=("score_0", "score_1"))
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, row {row}, column {column!r}: {reason}")):
        dm.setup("fit")


@pytest.mark.parametrize("data", [b"not an image", png_bytes(solid((1, 2, 3)))[:60]], ids=["garbage", "truncated"])
def test_undecodable_images_are_named_when_read(tmp_path, data):
    path = write_parquet(broken(GOOD, 2, "jpg_1", data), tmp_path / "p.parquet")
    dm = ImagePairDataModule(str(path), val_file=str(path))
    dm.setup("fit")
    dm.dataset("val")[0]
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, row 2, column 'jpg_1': cannot decode")):
        dm.dataset("val")[1]
    single = ImageDataModule(str(write_parquet([{"caption": "c", "jpg": data}], tmp_path / "one.parquet")))
    single.setup("fit")
    with pytest.raises(ImageDataError, match="row 1, column 'jpg': cannot decode"):
        next(iter(single.train_dataloader()))


def test_missing_image_column_and_bad_sources(tmp_path):
    path = write_parquet([{"caption": "c", "image": png_bytes(solid((0, 0, 0)))}], tmp_path / "one.parquet")
    with pytest.raises(ImageDataError, match=re.escape(f"{path}, row 1, column 'jpg': missing")):
        ImageDataModule(str(path)).setup("fit")
    with pytest.raises(ImageDataError, match="no such file"):
        ImageDataModule(str(tmp_path / "nope.parquet")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageDataError, match="metadata.jsonl or"):
        ImageDataModule(str(tmp_path / "empty")).setup("fit")
    ties = write_parquet(pair_rows([0.5, 0.5]), tmp_path / "ties.parquet")
    with pytest.raises(ImageDataError, match="no usable row"):
        ImagePairDataModule(str(ties)).setup("fit")


def test_shapes_files_load_and_pair_winners_match_their_captions(tmp_path, monkeypatch):
    out = write_dataset(
        tmp_path / "shapes",
        seed=1,
        pretrain=12,
        pairs=24,
        prompts=10,
        eval_prompts=14,
        pretrain_mismatch=0.0,
        model=False,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "eval_prompts.txt",
        "pairs.parquet",
        "pretrain.parquet",
        "prompts.txt",
    ]

    def pixels(images):  # [-1, 1] -> uint8 [H, W, 3]; exact, as PNG is lossless
        return ((images + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()

    pairs = ImagePairDataModule(
        str(out / "pairs.parquet"),
        val_file=str(out / "pairs.parquet"),
        batch_size=32,
        score_columns=("score_0", "score_1"),
    )
    batch = ordered(pairs)
    assert len(batch["caption"]) == 24 and pairs.ties_dropped["train"] == 0
    rewards = torch.tensor(
        [[image_reward(pixels(im), text) for im in pair] for pair, text in zip(batch["images"], batch["caption"])]
    )
    torch.testing.assert_close(rewards, batch["scores"])
    assert (rewards[:, 0] == 1.0).all() and rewards[:, 0].mean() > rewards[:, 1].mean() and (rewards[:, 1] < 1).all()
    assert set(pq.read_table(out / "pairs.parquet").column("label_0").to_pylist()) == {
        0.0,
        1.0,
    }  # winners on both sides

    pretrain = ordered(
        ImageDataModule(str(out / "pretrain.parquet"), val_file=str(out / "pretrain.parquet"), batch_size=32)
    )
    assert len(pretrain["caption"]) == 12
    assert all(image_reward(pixels(im), text) == 1.0 for im, text in zip(pretrain["images"], pretrain["caption"]))

    prompts = PromptDataModule(str(out / "prompts.txt"), val_file=str(out / "eval_prompts.txt"), batch_size=32)
    prompts.setup("fit")
    assert len(prompts.prompts["train"]) == 10 and prompts.prompts["val"][:3] == [
        "a red circle",
        "a green circle",
        "a blue circle",
    ]
    assert len(prompts.prompts["val"]) == 14 and len(set(prompts.prompts["val"])) == 12

    # the command line writes the same files for the same seed, other files for another
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "shapes",
            "--out",
            str(tmp_path / "cli"),
            "--seed",
            "1",
            "--pretrain",
            "12",
            "--pairs",
            "24",
            "--prompts",
            "10",
            "--eval-prompts",
            "14",
            "--pretrain-mismatch",
            "0",
            "--no-model",
        ],
    )
    shapes.main()
    other = write_dataset(
        tmp_path / "other",
        seed=2,
        pretrain=12,
        pairs=24,
        prompts=10,
        eval_prompts=14,
        pretrain_mismatch=0.0,
        model=False,
    )
    for name in ("pretrain.parquet", "pairs.parquet"):
        assert pq.read_table(tmp_path / "cli" / name).equals(pq.read_table(out / name))
        assert not pq.read_table(other / name).equals(pq.read_table(out / name))
    assert (
        (tmp_path / "cli" / "prompts.txt").read_text()
        == (out / "prompts.txt").read_text()
        != (other / "prompts.txt").read_text()
    )
    assert not list(out.glob("*.tmp"))


def test_shapes_pretraining_images_mismatch_their_captions_at_the_given_rate(tmp_path):
    from PIL import Image

    out = write_dataset(
        tmp_path / "shapes",
        seed=0,
        pretrain=400,
        pairs=1,
        prompts=1,
        eval_prompts=1,
        pretrain_mismatch=0.3,
        model=False,
    )
    table = pq.read_table(out / "pretrain.parquet").to_pydict()
    rewards = [
        image_reward(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), c)
        for b, c in zip(table["jpg"], table["caption"])
    ]
    mismatched = sum(r < 1.0 for r in rewards) / len(rewards)
    assert 0.22 < mismatched < 0.38, mismatched
