"""Prompts for online preference methods, and the generated data of the running iteration.

An online method (:class:`~policylab.modules.preference.OnlineDPO` and those built on it)
trains in iterations of ``generate_every_n_steps`` steps. At the start of iteration ``i`` it
asks this datamodule for the iteration's prompts (:meth:`OnlinePromptDataModule.iteration_prompts`),
samples and judges completions, turns them into pairs (:func:`build_pairs`) and stores them
here (:meth:`OnlinePromptDataModule.store_iteration`); each step of the iteration then takes its
batch of pairs from the store (:meth:`OnlinePromptDataModule.step_batch`).

What makes a run resumable without loss:

- the prompts of iteration ``i`` are a pure function of ``seed`` and ``i`` (a stream of seeded
  permutations of the prompt file, ``prompts_per_iteration`` at a time), and the pairs of a step
  a pure function of the stored pairs, ``seed``, ``i`` and the step within the iteration;
- the store (iteration number, every rank's pairs as tensors) is this datamodule's
  ``state_dict``, which Lightning writes into every checkpoint: a run killed during iteration
  ``i``'s training steps resumes with the same pairs, and a run killed before a checkpoint of
  iteration ``i`` regenerates it from the checkpointed weights with the same prompts and seeds.

Under DDP each rank samples and judges its share of the iteration's prompts (every
``world_size``-th one); the pairs of all ranks are gathered, so that every rank (and the
checkpoint written by rank 0) holds the whole iteration, and each step's global batch of
``batch_size * world_size`` pairs is split between the ranks.

The training dataloader yields only step ticks (an endless stream of empty batches): what a step
trains on is decided when the step runs, with the current weights, never prefetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from policylab.datamodules.text import TextDataError, load_tokenizer, read_numbered_rows, render

#: how the K judged completions of a prompt become pairs
PAIR_RULES = ("best_vs_worst", "random_pair", "all_pairs")
#: the per-pair tensors of the store (chosen rows, rejected rows: right-padded)
PAIR_KEYS = (
    "chosen_input_ids",
    "chosen_attention_mask",
    "chosen_completion_mask",
    "rejected_input_ids",
    "rejected_attention_mask",
    "rejected_completion_mask",
    "chosen_score",
    "rejected_score",
    "prompt_index",
)


@dataclass
class Pairs:
    """Which rows of ``N * K`` judged completions (prompt ``i``: rows ``i*K .. i*K+K-1``) form the
    training pairs: ``chosen`` and ``rejected`` row indices ``[M]``, the prompt of each pair
    ``[M]``, how many candidate pairs were dropped for equal scores (no preference signal), and
    how many prompts gave at least one pair."""

    chosen: Tensor
    rejected: Tensor
    prompt: Tensor
    dropped_ties: int
    usable_prompts: int


def build_pairs(scores: Tensor, rule: str, keep_ties: bool = False, generator: torch.Generator | None = None) -> Pairs:
    """Training pairs from the judge's ``scores`` ``[N, K]`` (K completions of each of N prompts).

    - ``"best_vs_worst"`` (iterative best-of-n DPO): the highest-scored completion against the
      lowest-scored one (the first of equal maxima, the first of equal minima);
    - ``"random_pair"`` (online DPO / OAIF): two distinct completions drawn at random (with
      ``K = 2``: the two, in their order), the higher-scored one chosen;
    - ``"all_pairs"``: every two completions ``j < k`` of a prompt, the higher-scored one chosen.

    A pair whose two scores are equal carries no preference: it is dropped and counted in
    ``dropped_ties``, unless ``keep_ties`` (TRL's OnlineDPOTrainer: a tie makes the first
    completion the chosen one). Non-finite scores stop with the prompt and the value.
    """
    if rule not in PAIR_RULES:
        raise ValueError(f"pair_rule must be one of {', '.join(PAIR_RULES)}, got {rule!r}")
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"build_pairs needs scores of shape [prompts, K >= 2], got {tuple(scores.shape)}")
    bad = (~torch.isfinite(scores)).nonzero()
    if len(bad):
        i, k = bad[0].tolist()
        raise ValueError(f"judge score of prompt {i}, completion {k} is {scores[i, k].item()}: scores must be finite")
    n, k = scores.shape
    base = torch.arange(n) * k
    if rule == "best_vs_worst":
        first, second = scores.argmax(1), scores.argmin(1)  # torch.argmax/argmin: the first of equal values
        if keep_ties:  # all equal: argmax = argmin = 0; keep TRL's order, the first against the second
            same = first == second
            second = torch.where(same, torch.ones_like(second), second)
        candidates = torch.stack([first, second], 1)[:, None, :]  # [N, 1, 2]
    elif rule == "random_pair":
        if k == 2:
            order = torch.tensor([[0, 1]]).expand(n, 2)
        else:
            order = torch.rand(n, k, generator=generator).argsort(1)[:, :2]
        candidates = order[:, None, :]
    else:
        candidates = torch.triu_indices(k, k, offset=1).T[None].expand(n, -1, -1)  # [N, K(K-1)/2, 2]
    a, b = candidates[..., 0], candidates[..., 1]  # completion indices within the prompt
    score_a, score_b = scores.gather(1, a), scores.gather(1, b)
    tie = score_a == score_b
    a_wins = (score_a > score_b) | tie  # a tie keeps the first as chosen (used only with keep_ties)
    chosen = torch.where(a_wins, a, b) + base[:, None]
    rejected = torch.where(a_wins, b, a) + base[:, None]
    keep = torch.ones_like(tie) if keep_ties else ~tie
    prompt = torch.arange(n)[:, None].expand_as(tie)
    return Pairs(
        chosen=chosen[keep],
        rejected=rejected[keep],
        prompt=prompt[keep],
        dropped_ties=int((tie & ~keep).sum()),
        usable_prompts=int(keep.any(1).sum()),
    )


def right_padded(input_ids: Tensor, attention_mask: Tensor, *others: Tensor, pad_id: int = 0) -> tuple[Tensor, ...]:
    """Rows whose real tokens (``attention_mask`` 1, one contiguous run: a left-padded prompt and
    its completion) are moved to the start, padding after them, as the offline pairs are laid out
    (position ids then start at 0 whatever the model does with the mask). ``others`` (masks) move
    with them; the width shrinks to the longest row."""
    mask = attention_mask.bool()
    offset = (mask.long().cumsum(1) == 0).sum(1, keepdim=True)  # leading padding of each row
    length = int(mask.sum(1).max()) if len(mask) else 0
    index = (torch.arange(length, device=input_ids.device)[None] + offset).clamp(max=input_ids.shape[1] - 1)
    valid = torch.arange(length, device=input_ids.device)[None] < mask.sum(1, keepdim=True)
    out = [torch.where(valid, input_ids.gather(1, index), torch.full_like(index, pad_id))]
    for t in (attention_mask, *others):
        out.append(torch.where(valid, t.gather(1, index), torch.zeros_like(index).to(t.dtype)))
    return tuple(out)


class _StepTicks(IterableDataset):
    """An endless stream of empty batches: the online module builds each step's batch itself."""

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield {}


class OnlinePromptDataModule(L.LightningDataModule):
    """Prompts for an online preference method and the pairs of its running iteration.

    Args:
        prompt_file: rows with a ``prompt`` column (JSONL, Parquet or a ``datasets`` folder; a
            string or chat messages); other columns (labels, answers) are ignored.
        tokenizer: a Hugging Face tokenizer or the name/path ``AutoTokenizer`` loads (the module's
            sampler and batches use it).
        prompts_per_iteration: prompts sampled and judged at the start of each iteration (over
            all ranks together).
        batch_size: pairs per training step on each rank.
        max_prompt_length: the longest prompt in tokens; a longer one is a bad row.
        bad_rows: ``"error"`` (a bad row stops with its file and line) or ``"skip"`` (left out
            and counted in ``skipped``).
        seed: orders the prompts and the pairs of each step, and seeds generation.
    """

    def __init__(
        self,
        prompt_file: str,
        tokenizer: Any,
        prompts_per_iteration: int = 64,
        batch_size: int = 16,
        max_prompt_length: int = 256,
        bad_rows: str = "error",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if prompts_per_iteration < 1 or batch_size < 1:
            raise ValueError(
                f"prompts_per_iteration and batch_size must be >= 1, got {prompts_per_iteration}, {batch_size}"
            )
        if bad_rows not in ("error", "skip"):
            raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = load_tokenizer(tokenizer)
        self.prompts: list[str] = []
        self.skipped: list[tuple[int, str]] = []
        #: the running iteration (-1: none yet) and its pairs (all ranks), see PAIR_KEYS
        self.iteration = -1
        self.pairs: dict[str, Tensor] = {}

    # ----------------------------------------------------------------- prompts
    def setup(self, stage: str | None = None) -> None:
        if self.prompts:
            return
        path = self.hparams.prompt_file
        unit, numbered = read_numbered_rows(path)
        limit = self.hparams.max_prompt_length
        rendered: list[tuple[int, str | None, str | None]] = []  # (row number, prompt, error)
        for number, row in numbered:
            try:
                if row.get("prompt") is None:
                    raise ValueError("missing column prompt")
                prompt = render(self.tokenizer, row["prompt"], prompt=True)
                if not prompt.strip():
                    raise ValueError("empty prompt")
                rendered.append((number, prompt, None))
            except (ValueError, TypeError) as err:
                rendered.append((number, None, str(err)))
        # The lengths from one tokenizer call per 64 prompts (a call per prompt costs more than the other checks; a
        # call for the whole file holds every encoding at once).
        texts = [prompt for _, prompt, _ in rendered if prompt is not None]
        lengths = iter(
            [
                len(ids)
                for start in range(0, len(texts), 64)
                for ids in self.tokenizer(texts[start : start + 64])["input_ids"]
            ]
        )
        for number, prompt, error in rendered:
            if prompt is not None:
                length = next(lengths)
                if length > limit:
                    error = f"prompt of {length} tokens, longer than max_prompt_length {limit}"
            if error is not None:
                if self.hparams.bad_rows == "error":
                    raise TextDataError(f"{path}, {unit} {number}: {error} (bad_rows='skip' leaves such rows out)")
                self.skipped.append((number, error))
                continue
            self.prompts.append(prompt)
        if not self.prompts:
            raise TextDataError(f"{path}: no usable prompt ({len(self.skipped)} bad rows)")
        note = ""
        if self.skipped:
            note = f"; skipped {len(self.skipped)} bad rows (first: {unit} {self.skipped[0][0]}: {self.skipped[0][1]})"
        rank_zero_info(f"online prompts: {len(self.prompts)} from {path}{note}")

    def iteration_prompt_indices(self, iteration: int) -> list[int]:
        """The indices (into :attr:`prompts`) of iteration ``iteration``'s prompts, all ranks: the
        next ``prompts_per_iteration`` of a stream of permutations of the file, the ``e``-th
        permutation seeded by ``seed`` and ``e``."""
        self.setup()
        n, per = len(self.prompts), self.hparams.prompts_per_iteration
        start, out = iteration * per, []
        while len(out) < per:
            epoch, offset = divmod(start + len(out), n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed * 100_003 + epoch))
            out += order[offset : offset + per - len(out)].tolist()
        return out

    def iteration_prompts(self, iteration: int, rank: int = 0, world_size: int = 1) -> tuple[list[int], list[str]]:
        """``(indices, prompts)`` of iteration ``iteration`` sampled by ``rank``: every
        ``world_size``-th one of :meth:`iteration_prompt_indices`."""
        indices = self.iteration_prompt_indices(iteration)[rank::world_size]
        if not indices:
            raise ValueError(
                f"prompts_per_iteration {self.hparams.prompts_per_iteration} leaves rank {rank} of {world_size} "
                "without a prompt: set it to at least the number of processes"
            )
        return indices, [self.prompts[i] for i in indices]

    def generation_seed(self, iteration: int, rank: int = 0) -> int:
        """The sampling seed of ``rank`` in iteration ``iteration``."""
        return (self.hparams.seed * 1_000_003 + iteration * 1_009 + rank) % 2**31

    # ----------------------------------------------------------------- the running iteration
    def store_iteration(self, iteration: int, pairs: dict[str, Tensor]) -> None:
        """Keep ``pairs`` (:data:`PAIR_KEYS`, on any device; all ranks' pairs) as iteration ``iteration``'s.
        Other keys are extra per-pair fields (``[M]`` tensors, e.g. SPPO's ``chosen_win_rate``):
        kept, and passed on in every :meth:`step_batch` under their names."""
        missing = [k for k in PAIR_KEYS if k not in pairs]
        if missing:
            raise ValueError(f"store_iteration: missing {', '.join(missing)}")
        count = pairs["chosen_score"].shape[0]
        bad = [k for k, v in pairs.items() if k not in PAIR_KEYS and tuple(v.shape) != (count,)]
        if bad:
            raise ValueError(f"store_iteration: extra per-pair field(s) {', '.join(bad)} must have shape [{count}]")
        self.iteration = iteration
        self.pairs = {k: v.detach().cpu() for k, v in pairs.items()}

    @property
    def num_pairs(self) -> int:
        return len(self.pairs["chosen_score"]) if self.pairs else 0

    def step_batch(
        self, step: int, rank: int = 0, world_size: int = 1, device: Any = "cpu"
    ) -> dict[str, Tensor] | None:
        """The batch of step ``step`` (counted from the start of the running iteration) for ``rank``:
        ``batch_size`` pairs as the offline pairs are laid out (``input_ids``, ``attention_mask``,
        ``completion_mask`` of the chosen rows then the rejected rows, right-padded) plus the
        per-pair ``chosen_score``, ``rejected_score``, ``prompt_index`` (and the extra fields of
        :meth:`store_iteration`). The iteration's pairs are
        visited in a seeded order, ``batch_size * world_size`` per step, again from the start when
        used up; None when the iteration has no pair."""
        n = self.num_pairs
        if n == 0:
            return None
        size = self.hparams.batch_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed * 7_919 + self.iteration))
        positions = (step * size * world_size + rank * size + torch.arange(size)) % n
        rows = order[positions]
        p = {k: v[rows] for k, v in self.pairs.items()}
        width = int(max(p["chosen_attention_mask"].sum(1).max(), p["rejected_attention_mask"].sum(1).max()))
        batch = {
            name: torch.cat([p[f"chosen_{name}"][:, :width], p[f"rejected_{name}"][:, :width]]).to(device)
            for name in ("input_ids", "attention_mask", "completion_mask")
        }
        for name, value in p.items():  # chosen_score, rejected_score, prompt_index and any extra field
            if value.ndim == 1:
                batch[name] = value.to(device)
        return batch

    # ----------------------------------------------------------------- Lightning
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_StepTicks(), batch_size=None)

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "pairs": dict(self.pairs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iteration = int(state_dict["iteration"])
        self.pairs = dict(state_dict["pairs"])
