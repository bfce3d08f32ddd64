"""The diffusion modules on a tiny text-to-image model built in tmp_path (8x8 pixels): the
pipeline folder round trip, Diffusion-DPO's value at the start (log 2) and with a LoRA
reference, each method's update, SePPO's checkpoint pool, Self-NPO's guided sampling, and that
Diffusion-DPO learns its pairs."""

import math

import lightning as L
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from policylab.callbacks.images import ImageRewardEvaluation, image_grid  # noqa: E402
from policylab.modules.diffusion import DiffusionDPO, DiffusionDRO, DiffusionSFT, SelfNPO, SePPO, SmPO  # noqa: E402
from policylab.nn.text_to_image import TextToImage, build_tiny_text_to_image  # noqa: E402
from policylab.tasks.shapes import COLORS, SHAPES, ShapesTask  # noqa: E402

SIZE = 8


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t2i") / "model"
    build_tiny_text_to_image(["a", *SHAPES, *COLORS], folder, image_size=SIZE, channels=(8, 16), text_dim=16)
    return folder


def pair_batch(n=4, seed=0):
    task = ShapesTask(size=SIZE, seed=seed)
    captions = task.prompts(n)
    pairs = [task.pair(c) for c in captions]
    images = torch.tensor(np.stack([np.stack(p) for p in pairs])).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    scores = torch.tensor([[1.0, 0.0]] * n)
    return {"caption": captions, "images": images, "label": torch.ones(n), "scores": scores}


def image_batch(n=4, seed=0):
    batch = pair_batch(n, seed)
    return {"caption": batch["caption"], "images": batch["images"][:, 0]}


def test_pipeline_folder_round_trip(pipeline, tmp_path):
    model = TextToImage.from_pretrained(pipeline)
    assert model.encode_text(["a red circle", ""]).shape[:2] == (2, model.tokenizer.model_max_length)
    images = model.sample(["a red circle"] * 2, seed=[3, 3], num_inference_steps=3)
    assert images.shape == (2, 3, SIZE, SIZE) and images.abs().max() <= 1
    torch.testing.assert_close(images[0], images[1])  # same seed, same image
    model.save_pretrained(tmp_path / "copy")
    again = TextToImage.from_pretrained(tmp_path / "copy")
    torch.testing.assert_close(again.sample(["a red circle"], seed=3, num_inference_steps=3), images[:1])
    with pytest.raises(FileNotFoundError, match="missing unet/, text_encoder/"):
        TextToImage.from_pretrained(tmp_path)


def test_noise_algebra_inverts(pipeline):
    model = TextToImage.from_pretrained(pipeline)
    x0, noise, t = torch.randn(3, 3, SIZE, SIZE), torch.randn(3, 3, SIZE, SIZE), torch.tensor([10, 500, 990])
    x_t = model.add_noise(x0, noise, t)
    torch.testing.assert_close(model.clean_estimate(x_t, t, noise), x0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(model.noise_estimate(x_t, t, noise), noise)


@pytest.mark.parametrize("lora", [None, {"r": 4, "lora_alpha": 4}])
def test_diffusion_dpo_is_log_2_at_the_start(pipeline, lora):
    torch.manual_seed(0)
    module = DiffusionDPO(str(pipeline), beta=5000.0, lora=lora)
    module.eval()  # policy and reference through the same kernels: equal errors to the bit
    with torch.no_grad():
        loss, margin, _ = module.loss_and_margin(pair_batch())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert (margin == 0).all()
    # in training mode (and with autograd) the policy's kernels differ from the reference's in
    # float32 rounding, which beta 2500 scales to ~1e-3
    module.train()
    loss, margin, _ = module.loss_and_margin(pair_batch())
    assert loss.item() == pytest.approx(math.log(2), abs=2e-3)
    if lora is not None:  # no frozen copy: the reference is the UNet with adapters disabled
        assert module.reference is None
        trainable = [n for n, p in module.named_parameters() if p.requires_grad]
        assert trainable and all("lora" in n for n in trainable)


def test_smpo_needs_scores_and_is_log_2_at_the_start(pipeline):
    torch.manual_seed(0)
    module = SmPO(str(pipeline), renoise_steps=2)
    batch = pair_batch()
    module.eval()
    with torch.no_grad():
        loss, _, _ = module.loss_and_margin(batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    batch.pop("scores")
    with pytest.raises(KeyError, match="score_columns"):
        module.loss_and_margin(batch)


def loader(batches):
    """Ready-made batches, one per step."""
    return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)


def fit(module, batches, steps, tmp_path, **trainer_args):
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_args,
    )
    trainer.fit(module, train_dataloaders=loader([batches[i % len(batches)] for i in range(steps)]))
    return trainer


def unet_change(module, start):
    return sum((p.detach() - start[k]).abs().sum().item() for k, p in module.model.unet.state_dict().items())


@pytest.mark.parametrize(
    "make,batch",
    [
        (lambda p: DiffusionSFT(p, lr=1e-3), image_batch),
        (lambda p: SmPO(p, lr=1e-3), pair_batch),
        (lambda p: DiffusionDRO(p, lr=1e-3, num_inference_steps=3, sync_every=2), image_batch),
        (lambda p: SePPO(p, lr=1e-3, num_inference_steps=3, checkpoint_every=2, max_checkpoints=3), image_batch),
        (lambda p: SelfNPO(p, lr=1e-3, grid_steps=5, teacher_steps=2), image_batch),
    ],
    ids=["sft", "smpo", "dro", "seppo", "self_npo"],
)
def test_each_method_updates_the_unet(pipeline, tmp_path, make, batch):
    torch.manual_seed(0)
    module = make(str(pipeline))
    start = {k: v.clone() for k, v in module.model.unet.state_dict().items()}
    fit(module, [batch(4, s) for s in range(3)], 5, tmp_path)
    assert unet_change(module, start) > 0
    if isinstance(module, SePPO):  # the start, then steps 2 and 4; at most 3 kept, the start first
        assert len(module.pool) == 3
        torch.testing.assert_close(module.pool[0]["conv_in.weight"], start["conv_in.weight"])
    if isinstance(module, SelfNPO):  # the negative model guides the frozen positive one
        captions = ["a red circle"]
        guided = module.sample(captions, 0, 3, 3.0)
        plain = module.model.sample(captions, 0, 3, 3.0, unet=module.reference)
        assert not torch.allclose(guided, plain)
        torch.testing.assert_close(
            module.model.sample(captions, 0, 3, 1.0, unet=module.reference), module.sample(captions, 0, 3, 1.0)
        )


def test_self_npo_renoises_between_the_teacher_step_and_the_cap(pipeline):
    torch.manual_seed(0)
    module = SelfNPO(str(pipeline), grid_steps=25, teacher_steps=5, max_renoise_step=950)
    seen = []
    original = module.renoise
    module.renoise = lambda x_s, s, u: seen.append((s, u)) or original(x_s, s, u)
    for seed in range(2):
        module.shared_step(image_batch(8, seed))
    s, u = torch.cat([p[0] for p in seen]), torch.cat([p[1] for p in seen])
    assert (u > s).all() and (u <= 950).all() and u.max() > 900
    assert (((s + 1) % 40 == 0) | (s == 0)).all()  # the teacher stops on the 25-point grid, or at 0
    with pytest.raises(ValueError, match="highest stopping step, 799"):
        SelfNPO(str(pipeline), grid_steps=25, teacher_steps=5, max_renoise_step=799)


def test_dro_policy_side_is_at_its_minimum_after_a_resync(pipeline):
    """With the sampler re-synced every step (the authors' setting), the model's error on the
    sampler's own states is zero and so is its gradient: only the expert side moves the weights."""
    from policylab.losses.diffusion import denoising_error

    torch.manual_seed(0)
    module = DiffusionDRO(str(pipeline), num_inference_steps=3)
    with torch.no_grad():  # the model moves away from the sampler's copy, as after an update
        for p in module.model.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    captions = image_batch()["caption"]
    x_t, t, target = module.online_negatives(captions)
    err = denoising_error(module.model.predict(x_t, t, module.model.encode_text(captions)), target)
    assert err.abs().max() < 1e-8
    err.sum().backward()
    assert max(p.grad.abs().max().item() for p in module.model.unet.parameters() if p.grad is not None) < 1e-6


def test_diffusion_dpo_learns_its_pairs(pipeline, tmp_path):
    """Implicit accuracy on the training pairs (the margin averaged over 8 fixed draws of noise
    and timestep) goes from chance to most pairs."""
    torch.manual_seed(0)
    module = DiffusionDPO(str(pipeline), beta=500.0, lr=1e-3)
    batches = [pair_batch(16, s) for s in range(2)]

    def accuracy():
        state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            margins = torch.stack([torch.cat([module.loss_and_margin(b)[1] for b in batches]) for _ in range(8)])
        torch.set_rng_state(state)
        return (margins.mean(0) > 0).float().mean().item()

    start = accuracy()
    fit(module, batches, 150, tmp_path)
    end = accuracy()
    assert start < 0.65 and end > 0.7 and end - start > 0.15, (start, end)


@pytest.mark.parametrize("lora", [None, {"r": 4, "lora_alpha": 4}], ids=["full", "lora"])
def test_pipeline_written_with_checkpoints_and_reloadable(pipeline, tmp_path, lora):
    """``<run>/pipeline`` predicts what the trained module predicts (LoRA adapters merged in)."""
    torch.manual_seed(0)
    module = DiffusionDPO(str(pipeline), lr=1e-2, lora=lora)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run"),
    )
    trainer.fit(module, train_dataloaders=loader([pair_batch() for _ in range(2)]))
    saved = TextToImage.from_pretrained(tmp_path / "run" / "version_0" / "pipeline")
    module.eval()
    x, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([100, 500])
    text = module.model.encode_text(["a red circle"] * 2)
    with torch.no_grad():
        trained = module.model.predict(x, t, text)
        torch.testing.assert_close(saved.predict(x, t, text), trained, atol=1e-5, rtol=1e-4)
        with module.reference_unet() as reference:  # and the run did move away from the start
            assert (module.model.predict(x, t, text, reference) - trained).abs().max() > 1e-3


def test_image_reward_evaluation_logs_reward_win_rate_and_grids(pipeline, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    evaluation = ImageRewardEvaluation(str(prompts), every_n_steps=2, num_inference_steps=2, grid_upscale=2)
    module = DiffusionSFT(str(pipeline), lr=1e-3)
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        logger=logger,
        callbacks=[evaluation],
    )
    trainer.fit(module, train_dataloaders=loader([image_batch() for _ in range(2)]))
    assert {"eval/reward", "eval/win_rate"} <= set(trainer.callback_metrics)
    assert 0.0 <= trainer.callback_metrics["eval/reward"].item() <= 1.0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "version_0"), size_guidance={"images": 0}).Reload()
    assert {"eval/samples", "eval/samples_start"} <= set(events.Tags()["images"])
    assert "eval/reward_start" in events.Tags()["scalars"]


def test_image_grid_layout():
    images = np.stack([np.full((2, 2, 3), i, dtype=np.uint8) for i in range(3)])
    grid = image_grid(images, columns=2, upscale=2)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 1).all() and (grid[6:10, 1:5] == 2).all()
    assert (grid[6:10, 6:10] == 255).all()  # the empty cell stays white


def test_model_pairs_are_labelled_by_the_reward_and_load(pipeline, tmp_path):
    import pyarrow.parquet as pq

    from policylab.datamodules import ImagePairDataModule
    from policylab.tasks.shapes import write_model_pairs

    prompts = ["a red circle", "a blue square", "a green triangle"] * 2
    out = write_model_pairs(pipeline, tmp_path / "model_pairs.parquet", prompts, num_inference_steps=2, batch_size=4)
    rows = pq.read_table(out).to_pylist()
    assert [r["caption"] for r in rows] == prompts
    for r in rows:
        assert r["label_0"] == (1.0 if r["score_0"] > r["score_1"] else 0.0 if r["score_0"] < r["score_1"] else 0.5)
    data = ImagePairDataModule(
        str(out), resolution=SIZE, batch_size=2, ties="keep", score_columns=("score_0", "score_1")
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["images"].shape[1:] == (2, 3, SIZE, SIZE) and (batch["scores"][:, 0] >= batch["scores"][:, 1]).all()


def test_the_pretrained_base_keeps_frozen_parts_in_eval_and_names_a_missing_pipeline(pipeline, tmp_path, monkeypatch):
    from conftest import ROOT
    from lightning.pytorch.utilities.model_helpers import is_overridden

    dro = DiffusionDRO(TextToImage.from_pretrained(pipeline), num_inference_steps=3)
    assert "model" not in dro.hparams and dro.hparams.margin == 0.001  # a model object is not recorded
    dro.train()
    assert dro.model.unet.training
    for part in (dro.model.text_encoder, dro.reference, dro.sampler):
        assert not any(m.training for m in part.modules())
    npo = SelfNPO(str(pipeline))
    assert npo.hparams.model == str(pipeline)
    npo.train()
    assert not npo.teacher.training and not npo.reference.training
    # methods whose step samples (or distills its own EMA) do not validate; the others do
    assert not any(is_overridden("validation_step", m) for m in (dro, npo))
    assert is_overridden("validation_step", DiffusionDPO(str(pipeline)))
    monkeypatch.chdir(ROOT)
    missing = tmp_path / "runs/shapes_pretrain/version_0/pipeline"  # configs/shapes_pretrain.yaml writes it
    with pytest.raises(FileNotFoundError, match=rf"pipeline folder not found: {missing}\. A run writes it"):
        DiffusionSFT(str(missing))
