"""The General Preference Model (GPM; Zhang et al., 2024, "General Preference Modeling with
Preference Representations for Aligning Language Models", arXiv:2410.02197, ICML 2025 as
"Beyond Bradley-Terry Models: A General Preference Model for Language Model Alignment").

Each response gets a unit-norm preference embedding ``v_{y|x}`` in ``R^{2k}`` and each prompt
the eigenvalues ``lambda(x)`` of a skew-symmetric operator ``R^>(x)``; the preference score
``s(y_w > y_l | x) = <R^> v_w, v_l>`` can express intransitive (cyclic) preferences that no scalar
reward can. One training step: a single forward of the backbone over the chosen and rejected
rows together, and ``-log sigma(s / tau)`` averaged over pairs
(:func:`policylab.losses.reward.general_preference_loss`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from policylab.losses.reward import general_preference_loss, general_preference_score
from policylab.modules.preference.reward_model import HeadOnLanguageModel
from policylab.nn.heads import (
    PreferenceEmbeddingHead,
    gather_token,
    last_token_index,
    prompt_end_index,
)


class GeneralPreferenceModel(HeadOnLanguageModel):
    """GPM on a causal LM backbone.

    ``model`` is a name or path for ``AutoModelForCausalLM.from_pretrained`` (or a model
    object), usually the SFT model; a path saved by this class's checkpoints also restores the
    heads. ``value_head_dim`` is the embedding size ``2k`` (the authors' name; 2 by default, one
    2x2 block, whose gate is then the constant 1); ``tau`` 0.1 is the temperature of the
    authors' code. The eigenvalue gate reads the final hidden state of the prompt's last token,
    the embedding head that of the response's last token (the EOS), both from the same forward.
    When the batch has a ``margin`` field, the loss is ``-log sigma((s - m) / tau)``. ``lr`` 9e-6
    as for :class:`~policylab.modules.preference.RewardModel` (the authors' example script uses
    5e-7 on Gemma-2B: set it per backbone).

    Logs ``train/loss``, ``train/accuracy`` (the fraction of pairs with ``s(y_w > y_l) > 0``) and
    ``train/score`` (the mean ``s(y_w > y_l)``), and the same under ``val/``. :meth:`embed` and
    :meth:`score` serve later use (online methods).
    """

    head_file = "preference_head.pt"

    def __init__(
        self,
        model: Any,
        value_head_dim: int = 2,
        tau: float = 0.1,
        lr: float = 9e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        super().__init__(model)
        self.record_hyperparameters()
        self.head = PreferenceEmbeddingHead(self.hidden_size, value_head_dim)
        self._load_head(model)

    def embed(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``(v, lambda)`` of every row of a batch in the datamodules' format: the unit-norm
        preference embeddings ``[N, 2k]`` and the prompt's eigenvalues ``[N, k]`` (read at the
        token before the first one of ``completion_mask``). Padding may sit left, right or both.

        To compare ``K`` responses of one prompt, embed them once and pass ``v[:, None]``,
        ``v[None, :]`` and ``lambda[:, None]`` to
        :func:`~policylab.losses.reward.general_preference_score`: the ``[K, K]`` score matrix.
        """
        hidden = self.hidden_states(batch["input_ids"], batch["attention_mask"])
        response = gather_token(hidden, last_token_index(batch["attention_mask"]))
        prompt = gather_token(hidden, prompt_end_index(batch["completion_mask"]))
        return self.head.embed(response).float(), self.head.eigenvalues(prompt).float()

    def score(self, batch: dict) -> Tensor:
        """``s(y_w > y_l | x)`` ``[B]`` for a preference batch (chosen rows, then rejected rows);
        ``sigmoid(score / tau)`` is the probability that the chosen response is preferred."""
        pairs = self._pairs(batch)
        v, eigenvalues = self.embed(batch)
        return general_preference_score(v[:pairs], v[pairs:], eigenvalues[:pairs])

    def shared_step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        pairs = self._pairs(batch)
        v, eigenvalues = self.embed(batch)
        loss = general_preference_loss(
            v[:pairs], v[pairs:], eigenvalues[:pairs], self.hparams.tau, batch.get("margin", 0.0)
        ).mean()
        score = general_preference_score(v[:pairs], v[pairs:], eigenvalues[:pairs]).detach()
        return loss, {"accuracy": (score > 0).float().mean(), "score": score.mean()}
