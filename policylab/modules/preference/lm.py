"""What the language-model modules share: loading a causal LM, LoRA, and keeping a copy in
Hugging Face's format next to the checkpoints (the rest is :class:`PretrainedModule`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from policylab.modules.hub import pretrained_source, quiet_progress_bars
from policylab.modules.pretrained import PretrainedModule, import_peft


def load_causal_lm(model: Any):
    """A name or path for ``AutoModelForCausalLM.from_pretrained``, or a model object as it is.
    A local folder that does not exist stops with a FileNotFoundError that names it."""
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(pretrained_source(model, "model"))
    return model


def with_lora(model, lora: dict[str, Any]):
    """``model`` wrapped by PEFT with LoRA adapters (``lora``: ``peft.LoraConfig`` arguments,
    e.g. ``{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}``): only the
    adapters train, and ``model.disable_adapter()`` gives back the frozen base."""
    peft = import_peft()
    return peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **lora))


class LanguageModelModule(PretrainedModule):
    """Base of the preference modules: ``self.policy`` is the trained causal LM. At every
    checkpoint it is also saved with ``save_pretrained`` to ``<run>/hf_model`` (when the run has
    a log directory), so a later stage (DPO after SFT) or any HF tool can load it by path (with
    ``lora``, the adapters are saved, which ``from_pretrained`` loads over their base when PEFT
    is installed). Subclasses record ``lr`` and ``weight_decay`` as hyperparameters (AdamW reads
    them there). Batches hold ``input_ids``, ``attention_mask`` and ``completion_mask`` rows."""

    export_folder = "hf_model"

    def __init__(self, model: Any, lora: dict[str, Any] | None = None, disable_dropout: bool = False) -> None:
        super().__init__()
        # from_pretrained returns a model in eval mode, and Lightning keeps the modes it finds.
        self.policy = load_causal_lm(model).train()
        if disable_dropout:
            for module in self.policy.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        if lora is not None:
            self.policy = with_lora(self.policy, lora)

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.policy, "disable_adapter")

    def batch_size(self, batch: dict) -> int:
        return batch["input_ids"].shape[0]

    def export(self, folder: Path, checkpoint: dict) -> None:
        with quiet_progress_bars():
            self.policy.save_pretrained(str(folder), state_dict=self.checkpoint_weights(checkpoint, "policy."))
