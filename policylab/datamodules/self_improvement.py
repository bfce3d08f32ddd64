"""Preference pairs for a model that both answers and revises answers (SRPO's self-improvement).

One LM plays two policies (Choi et al., "Self-Improving Robust Preference Optimization", ICLR 2025,
arXiv 2406.01660): the generator ``pi(y|x)`` reads the prompt, the self-improvement policy
``pi(y'|x, y)`` reads the *revision prompt* :func:`revision_prompt` ``= prompt + previous answer +
revision_marker`` and writes an improved answer. A pair ``(x, y_w, y_l)`` of the preference file
becomes six rows: the generator's ``y_w`` and ``y_l``, and each answer written as the revision of
``y_l`` and of ``y_w``. The marker must be text the tokenizer knows (checked: a marker whose tokens
include the unknown token stops with the tokens it got); the addition task's character tokenizer
has only digits and ``+ - =``, so its config uses ``"-="`` (a sequence its data never contains).
"""

from __future__ import annotations

from typing import Any

import torch

from policylab.datamodules.preference import PreferenceDataModule

#: the six row blocks of a batch, in order (``[6B, T]``: block ``i`` is rows ``i*B .. i*B+B-1``)
BLOCKS = (
    "chosen",  # pi(y_w | x)
    "rejected",  # pi(y_l | x)
    "revise_rejected_to_chosen",  # pi(y_w | x, y_l)
    "revise_rejected_to_rejected",  # pi(y_l | x, y_l)
    "revise_chosen_to_chosen",  # pi(y_w | x, y_w)
    "revise_chosen_to_rejected",  # pi(y_l | x, y_w)
)


def revision_prompt(prompt: str, answer: str, marker: str) -> str:
    """The self-improvement policy's input: the (rendered) prompt, the previous answer, the marker."""
    return f"{prompt}{answer}{marker}"


class SelfImprovementDataModule(PreferenceDataModule):
    """Preference pairs as the six row blocks of :data:`BLOCKS` (see the module docstring).

    Args:
        revision_marker: the text between a previous answer and its revision.
        max_prompt_length: the limit of a revision prompt too (the prompt, an answer and the marker):
            set it for the longest of them; cut from the left, as prompts are.
        others: as :class:`~policylab.datamodules.PreferenceDataModule` (``semantic_model`` adds
            Sem-DPO's field, which SRPO does not read).
    """

    def __init__(
        self,
        train_file: str,
        tokenizer: Any,
        val_file: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        max_prompt_length: int = 256,
        revision_marker: str = "\nImproved answer:\n",
        extra_fields: tuple[str, ...] = (),
        bad_rows: str = "error",
        seed: int = 0,
        semantic_model: str | None = None,
    ) -> None:
        if not revision_marker:
            raise ValueError("revision_marker must be non-empty text (it tells a revision prompt from a prompt)")
        super().__init__(
            train_file,
            tokenizer,
            val_file=val_file,
            batch_size=batch_size,
            max_length=max_length,
            max_prompt_length=max_prompt_length,
            extra_fields=extra_fields,
            bad_rows=bad_rows,
            seed=seed,
            semantic_model=semantic_model,
        )
        marker_ids = self.tokenizer(revision_marker, add_special_tokens=False).input_ids
        unknown = self.tokenizer.unk_token_id
        if not marker_ids or (unknown is not None and unknown in marker_ids):
            raise ValueError(
                f"revision_marker {revision_marker!r} becomes tokens {marker_ids} with this tokenizer "
                f"(unknown token {unknown}): choose text made of tokens it knows"
            )

    def tokenize_row(self, row: dict) -> dict:
        out = super().tokenize_row(row)
        prompt = self.render(row["prompt"], prompt=True)
        marker = self.hparams.revision_marker
        for previous in ("chosen", "rejected"):
            ids = self.prompt_ids(revision_prompt(prompt, self.render(row[previous], prompt=False), marker))
            out[f"revise_{previous}_prompt"] = ids
            for target in ("chosen", "rejected"):
                text = self.render(row[target], prompt=False)
                out[f"revise_{previous}_to_{target}"] = self.completion_ids(text, len(ids), target)
        return out

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and ``completion_mask`` of shape ``[6B, T]`` in the order
        of :data:`BLOCKS`, right-padded, plus each extra field as ``[B]``."""
        sequences = [(r["prompt"], r["chosen"]) for r in rows] + [(r["prompt"], r["rejected"]) for r in rows]
        for previous in ("rejected", "chosen"):
            for target in ("chosen", "rejected"):
                prompt_key, key = f"revise_{previous}_prompt", f"revise_{previous}_to_{target}"
                sequences += [(r[prompt_key], r[key]) for r in rows]
        return self.batch(sequences, rows)
