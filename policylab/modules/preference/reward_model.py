"""The Bradley-Terry reward model (Ouyang et al., 2022, "Training language models to follow
instructions with human feedback"; Stiennon et al., 2020).

A scalar reward ``r(x, y)`` read by a linear head from the final hidden state of the last token
of prompt and response. One training step: a single forward of the backbone over the chosen and
rejected rows together, the two rewards of each pair, and ``-log sigma(r_w - r_l)`` averaged
over pairs (:func:`policylab.losses.reward.bradley_terry_loss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from policylab.losses.reward import bradley_terry_loss
from policylab.modules.preference.lm import LanguageModelModule
from policylab.nn.heads import ScalarRewardHead, last_token_hidden, position_ids


class HeadOnLanguageModel(LanguageModelModule):
    """What the reward models share: a causal LM's backbone (``self.policy``, loaded as in
    :class:`LanguageModelModule`) read through ``self.head``.

    The backbone runs without its LM head (no ``[N, T, vocab]`` logits); an untied LM head is
    frozen, since no loss reaches it. The optimizer holds the backbone and the head. At every
    checkpoint the head's weights are saved next to the backbone, as ``<run>/hf_model/<head_file>``,
    and a ``model`` path that holds such a file loads them: ``RewardModel(model="runs/.../hf_model")``
    is the trained reward model again.
    """

    head_file = "head.pt"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        output = self.policy.get_output_embeddings()
        if output is not None and output.weight is not self.policy.get_input_embeddings().weight:
            output.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.policy.config.get_text_config().hidden_size

    def _load_head(self, model: Any) -> None:
        """The saved head weights when ``model`` is a directory that holds them."""
        if isinstance(model, (str, Path)) and (Path(model) / self.head_file).is_file():
            self.head.load_state_dict(torch.load(Path(model) / self.head_file, weights_only=True))

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states ``[N, T, H]`` of the backbone (after its last norm), positions
        counted over real tokens so that left- and right-padded rows read alike."""
        if input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                "must have the same shape"
            )
        out = self.policy.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        )
        return out.last_hidden_state

    def export(self, folder: Path, checkpoint: dict) -> None:
        super().export(folder, checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (self.head_file + ".tmp")
        head = self.checkpoint_weights(checkpoint, "head.") or self.head.state_dict()
        torch.save({k: v.detach().cpu() for k, v in head.items()}, tmp)
        tmp.replace(folder / self.head_file)

    @staticmethod
    def _pairs(batch: dict) -> int:
        rows = batch["input_ids"].shape[0]
        if rows % 2:
            raise ValueError(
                f"a preference batch holds the chosen rows then the rejected rows (2B rows), got {rows} rows"
            )
        return rows // 2

    def batch_size(self, batch: dict) -> int:
        return self._pairs(batch)


class RewardModel(HeadOnLanguageModel):
    """Bradley-Terry reward model on a causal LM backbone.

    ``model`` is a name or path for ``AutoModelForCausalLM.from_pretrained`` (or a model
    object), usually the SFT model; a path saved by this class's checkpoints also restores the
    head. When the batch has a ``margin`` field (``extra_fields: [margin]`` in the datamodule),
    the loss is Llama 2's margin loss ``-log sigma(r_w - r_l - m)``. ``lr`` 9e-6 is InstructGPT's
    for its 6B reward model.

    Logs ``train/loss``, ``train/accuracy`` (the fraction of pairs with ``r_w > r_l``),
    ``train/chosen_reward``, ``train/rejected_reward`` and ``train/reward_gap``, and the same under
    ``val/``. :meth:`reward` and :meth:`score` give the rewards for later use (online methods).
    """

    head_file = "reward_head.pt"

    def __init__(self, model: Any, lr: float = 9e-6, weight_decay: float = 0.0) -> None:
        super().__init__(model)
        self.record_hyperparameters()
        self.head: nn.Module = ScalarRewardHead(self.hidden_size)
        self._load_head(model)

    def reward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``r(x, y)`` ``[N]`` of rows of prompt and response tokens ``[N, T]`` (padding left,
        right or both; the reward is read at each row's last real token, which should be the
        EOS that ends the response, as in training)."""
        hidden = self.hidden_states(input_ids, attention_mask)
        return self.head(last_token_hidden(hidden, attention_mask)).float()

    def score(self, batch: dict) -> Tensor:
        """The reward ``[N]`` of every row of a batch in the datamodules' format (for a
        preference batch: the chosen rows' rewards, then the rejected rows')."""
        return self.reward(batch["input_ids"], batch["attention_mask"])

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = self._pairs(batch)
        rewards = self.score(batch)
        chosen, rejected = rewards[:pairs], rewards[pairs:]
        loss = bradley_terry_loss(chosen, rejected, batch.get("margin", 0.0)).mean()
        chosen, rejected = chosen.detach(), rejected.detach()
        return loss, {
            "accuracy": (chosen > rejected).float().mean(),
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
            "reward_gap": (chosen - rejected).mean(),
        }
