"""CLIPScore on a tiny CLIP model written to a local folder (no download), against the score
computed from the model's towers and projections directly."""

import pytest
import torch

pytest.importorskip("transformers")

from policylab.metrics import CLIPScore  # noqa: E402


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from policylab.nn.text_to_image import build_tiny_text_to_image

    tokenizer = build_tiny_text_to_image(
        ["a", "red", "blue", "circle", "square"], image_size=8, channels=(8, 16)
    ).tokenizer
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=8,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=4
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_matches_the_towers_and_projections(clip_folder):
    from transformers import CLIPModel, CLIPProcessor

    metric = CLIPScore(str(clip_folder))
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    captions = ["a red circle", "a blue square", "a circle"]
    metric.update(images[:2], captions[:2])
    metric.update(images[2:], captions[2:])

    model, processor = CLIPModel.from_pretrained(clip_folder).eval(), CLIPProcessor.from_pretrained(clip_folder)
    with torch.no_grad():
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        tokens = processor(text=captions, return_tensors="pt", padding=True)
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(**tokens).pooler_output)
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    expected = 100 * (image * text).sum(-1).clamp(min=0)
    assert expected.max() > 0  # not a trivial all-zero case
    torch.testing.assert_close(metric.compute(), expected.mean(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="N captions"):
        metric.update(images, captions[:2])


def test_image_evaluation_logs_clip_score(clip_folder, tmp_path):
    pytest.importorskip("diffusers")
    import lightning as L

    from policylab.callbacks import ImageRewardEvaluation
    from policylab.modules.diffusion import DiffusionSFT
    from policylab.nn.text_to_image import build_tiny_text_to_image
    from policylab.tasks.shapes import COLORS, SHAPES

    build_tiny_text_to_image(["a", *SHAPES, *COLORS], tmp_path / "model", image_size=8, channels=(8, 16), text_dim=16)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    evaluation = ImageRewardEvaluation(
        str(prompts), every_n_steps=1, num_inference_steps=2, clip_model=str(clip_folder)
    )
    batch = {"caption": ["a red circle"] * 2, "images": torch.rand(2, 3, 8, 8) * 2 - 1}
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        callbacks=[evaluation],
        default_root_dir=tmp_path,
    )
    trainer.fit(
        DiffusionSFT(str(tmp_path / "model")), train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None)
    )
    assert 0 <= trainer.callback_metrics["eval/clip_score"].item() <= 100
