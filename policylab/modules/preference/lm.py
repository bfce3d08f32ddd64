"""What the language-model modules share: loading a causal LM, its optimizer, and keeping a
copy in Hugging Face's format next to the checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from policylab.modules.hub import quiet_progress_bars


def load_causal_lm(model: Any):
    """A name or path for ``AutoModelForCausalLM.from_pretrained``, or a model object as it is."""
    if isinstance(model, (str, Path)):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(model))
    return model


def with_lora(model, lora: dict[str, Any]):
    """``model`` wrapped by PEFT with LoRA adapters (``lora``: ``peft.LoraConfig`` arguments,
    e.g. ``{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}``): only the
    adapters train, and ``model.disable_adapter()`` gives back the frozen base."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("lora needs PEFT: pip install peft (or the lm extras)") from err
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))


class LanguageModelModule(L.LightningModule):
    """Base of the preference modules: ``self.policy`` is the trained causal LM. At every
    checkpoint it is also saved with ``save_pretrained`` to ``<run>/hf_model`` (when the run has
    a log directory), so a later stage (DPO after SFT) or any HF tool can load it by path (with
    ``lora``, the adapters are saved, which ``from_pretrained`` loads over their base when PEFT
    is installed). Subclasses record ``lr`` and ``weight_decay`` as hyperparameters (AdamW reads
    them there)."""

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

    def configure_optimizers(self):
        # Every trainable parameter: the policy (its adapters under LoRA) and any head a
        # subclass adds; frozen references and LM heads are left out.
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def hf_model_folder(self) -> Path | None:
        """``<run>/hf_model`` when this process writes it (rank 0 of a run with a log
        directory), else None."""
        log_dir = self.trainer.log_dir if self._trainer is not None else None
        return Path(log_dir) / "hf_model" if log_dir and self.trainer.is_global_zero else None

    def checkpoint_weights(self, checkpoint: dict, prefix: str) -> dict[str, torch.Tensor] | None:
        """The weights under ``prefix`` (e.g. ``"policy."``) from the checkpoint being written,
        which holds full tensors under every strategy (FSDP gathers them on rank 0); None when
        the checkpoint has no such entries."""
        state = {k[len(prefix) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
        return state or None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if (folder := self.hf_model_folder()) is not None:
            with quiet_progress_bars():
                self.policy.save_pretrained(str(folder), state_dict=self.checkpoint_weights(checkpoint, "policy."))
