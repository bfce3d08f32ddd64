"""Text-image metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


def _features(output: Any) -> Tensor:
    """The embedding tensor of ``get_text_features``/``get_image_features``: a tensor in
    transformers 4, an output object whose ``pooler_output`` holds it in transformers 5."""
    return output if isinstance(output, Tensor) else output.pooler_output


class CLIPScore(Metric):
    """CLIPScore (Hessel et al., 2021) as torchmetrics defines it: ``100 * max(cos(E_I, E_C), 0)``
    between the CLIP embeddings of an image and its caption, averaged over images.

    ``model``: a local folder holding a CLIP model and its processor (``CLIPModel`` /
    ``CLIPProcessor.from_pretrained``; a hub name works where the hub is reachable), or a
    ``(model, processor)`` pair. torchmetrics' own ``CLIPScore`` (1.9) fails with
    transformers >= 5, whose ``get_*_features`` return output objects (torchmetrics#3407);
    this one reads either. ``update(images, captions)`` takes uint8 ``[N, 3, H, W]`` images."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, model: str | Path | tuple[Any, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, Path)):
            from transformers import CLIPModel, CLIPProcessor

            model = CLIPModel.from_pretrained(str(model)), CLIPProcessor.from_pretrained(str(model))
        self.model, self.processor = model
        self.model.eval().requires_grad_(False)
        self.add_state("score", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def scores(self, images: Tensor, captions: list[str]) -> Tensor:
        """Per-image scores ``[N]``."""
        if images.dim() != 4 or len(images) != len(captions):
            raise ValueError(
                f"expected N images [N, 3, H, W] and N captions, got {tuple(images.shape)} and {len(captions)}"
            )
        device = next(self.model.parameters()).device
        pixels = self.processor(images=list(images.cpu()), return_tensors="pt")["pixel_values"].to(device)
        text = self.processor(text=list(captions), return_tensors="pt", padding=True, truncation=True)
        image_embedding = _features(self.model.get_image_features(pixel_values=pixels))
        text_embedding = _features(
            self.model.get_text_features(
                input_ids=text["input_ids"].to(device), attention_mask=text["attention_mask"].to(device)
            )
        )
        cosine = torch.nn.functional.cosine_similarity(image_embedding, text_embedding, dim=-1)
        return 100 * cosine.clamp(min=0)

    def update(self, images: Tensor, captions: list[str]) -> None:
        scores = self.scores(images, captions)
        self.score += scores.sum().double()
        self.count += len(scores)

    def compute(self) -> Tensor:
        return (self.score / self.count.clamp(min=1)).float()
