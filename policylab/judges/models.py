"""Judges that are models: a scalar reward model (policylab's :class:`RewardModel` or any
``AutoModelForSequenceClassification``) and a pairwise preference model (policylab's
:class:`GeneralPreferenceModel`, or a scalar judge read as Bradley-Terry ``sigma(r_a - r_b)``).

Rows are rendered as the text datamodules render them (:mod:`policylab.datamodules.text`): the
prompt's token ids with the tokenizer's special tokens (its BOS), then the completion's without
them, then EOS; the reward is read at that last token. An empty completion is the EOS alone.
Rows are batched by length (``batch_size`` rows per forward) and scored without gradients, the
model in eval mode (its mode is restored afterwards).
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from policylab.judges.base import JudgeError, PairwiseJudge, ScalarJudge
from policylab.modules.hub import quiet_progress_bars

REWARD_HEAD = "reward_head.pt"  # RewardModel.head_file
PREFERENCE_HEAD = "preference_head.pt"  # GeneralPreferenceModel.head_file


def load_tokenizer(tokenizer: Any, model: Any, judge: str):
    """A tokenizer object as it is; a folder or name through ``AutoTokenizer`` (a missing local
    folder stops naming it); None: the model folder's own tokenizer, if it has one."""
    from transformers import AutoTokenizer

    from policylab.modules.hub import pretrained_source

    if tokenizer is None:
        if not isinstance(model, (str, Path)):
            raise ValueError(f"{judge} needs tokenizer= (a folder or a tokenizer object) for a model object")
        try:
            tokenizer = AutoTokenizer.from_pretrained(pretrained_source(model, "model"))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{judge}: {model} holds no tokenizer ({type(err).__name__}); give tokenizer= (e.g. the task's "
                "tokenizer folder, data/arithmetic/tokenizer)"
            ) from None
    elif isinstance(tokenizer, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(pretrained_source(tokenizer, "tokenizer"))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{judge}: the tokenizer has no EOS token; rows end with one (as in training)")
    return tokenizer


def local_folder(model: Any, what: str) -> Path | None:
    """The local folder ``model`` names (checked to exist), or None for a hub id or an object."""
    if not isinstance(model, (str, Path)):
        return None
    from policylab.modules.hub import pretrained_source

    source = Path(pretrained_source(model, what))
    return source if source.is_dir() else None


def run_hyperparameter(folder: Path, key: str) -> float | None:
    """``key`` from the ``hparams.yaml`` that Lightning's logger writes beside a run's export
    folder (``<run>/hparams.yaml`` for ``<run>/hf_model``), when there is one and it holds a number."""
    path = folder.parent / "hparams.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        value = (yaml.safe_load(path.read_text()) or {}).get(key)
    except (yaml.YAMLError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode and no gradients inside the block; the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class RowEncoder:
    """Token ids of (prompt, completion) rows as the datamodules write them, and padded batches.

    ``max_length``: rows longer than this lose the start of the prompt first, then the end of the
    completion (its EOS too, so the reward is read at the last kept token); ``truncated`` counts
    such rows. None (the default) keeps rows whole.
    """

    def __init__(self, tokenizer, batch_size: int, max_length: int | None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 (a prompt token and the EOS), got {max_length}")
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.truncated = 0

    def encode(self, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
        tok = self.tokenizer
        prompt_ids = tok(prompts).input_ids
        completion_ids = tok(completions, add_special_tokens=False).input_ids
        rows = []
        for p, c in zip(prompt_ids, completion_ids):
            c = c + [tok.eos_token_id]
            if self.max_length is not None and len(p) + len(c) > self.max_length:
                self.truncated += 1
                p = p[-max(self.max_length - len(c), 1) :]
                c = c[: self.max_length - len(p)]
            rows.append((p, c))
        return rows

    def batches(self, rows: list[tuple[list[int], list[int]]], left: bool = False):
        """``(indices, input_ids, attention_mask, completion_mask)`` of ``batch_size`` rows of
        similar length at a time, padded right (or ``left``)."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            length = max(len(rows[i][0]) + len(rows[i][1]) for i in indices)
            input_ids = torch.full((len(indices), length), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(indices), length), dtype=torch.long)
            completion = torch.zeros((len(indices), length), dtype=torch.long)
            for b, i in enumerate(indices):
                p, c = rows[i]
                begin = length - len(p) - len(c) if left else 0
                input_ids[b, begin : begin + len(p) + len(c)] = torch.tensor(p + c)
                attention[b, begin : begin + len(p) + len(c)] = 1
                completion[b, begin + len(p) : begin + len(p) + len(c)] = 1
            yield torch.tensor(indices), input_ids, attention, completion


def _is_module(obj: Any, class_name: str) -> bool:
    from policylab.modules.preference import GeneralPreferenceModel, RewardModel

    return isinstance(obj, {"RewardModel": RewardModel, "GeneralPreferenceModel": GeneralPreferenceModel}[class_name])


class RewardModelJudge(ScalarJudge):
    """The scalar reward ``r(x, y)`` of a reward model.

    ``model``: a policylab :class:`~policylab.modules.preference.RewardModel` run's ``hf_model``
    folder (the backbone with ``reward_head.pt``), any ``AutoModelForSequenceClassification``
    folder or hub id with one label (a decoder that reads the last token: Llama, Mistral, Qwen,
    GPT-2, ...), or such a model object. ``tokenizer``: a folder, hub id or tokenizer object (None:
    the model folder's). ``device``: where the model runs (None: where it is). ``max_length``: see
    :class:`RowEncoder`.

    A policylab RewardModel reads right-padded rows (:meth:`RewardModel.reward`). A
    sequence-classification model reads left-padded rows with positions counted over real tokens,
    and its own pooling is pointed at the last position, so that a completion's EOS is read even
    when the tokenizer's pad token is the EOS (HF's pooling would skip it).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        self.model, self.policylab = self._load(model)
        if not self.policylab and getattr(self.model.config, "num_labels", 1) != 1:
            raise ValueError(
                f"{self.name}: {model if isinstance(model, (str, Path)) else 'the model'} has "
                f"{self.model.config.num_labels} labels; a reward model has one (num_labels=1)"
            )
        if device is not None:
            self.model.to(device)
        self.encoder = RowEncoder(load_tokenizer(tokenizer, model, self.name), batch_size, max_length)
        if not self.policylab:
            forward = inspect.signature(self.model.forward).parameters
            self._positions = "position_ids" in forward

    def _load(self, model: Any) -> tuple[torch.nn.Module, bool]:
        with quiet_progress_bars():
            return self._load_quietly(model)

    def _load_quietly(self, model: Any) -> tuple[torch.nn.Module, bool]:
        folder = local_folder(model, "reward model")
        if folder is not None and (folder / REWARD_HEAD).is_file():
            from policylab.modules.preference import RewardModel

            return RewardModel(model=str(folder)).requires_grad_(False).eval(), True
        if folder is not None and (folder / PREFERENCE_HEAD).is_file():
            raise ValueError(
                f"{self.name}: {folder} holds a GeneralPreferenceModel ({PREFERENCE_HEAD}), a pairwise judge: "
                "use PreferenceModelJudge"
            )
        if isinstance(model, (str, Path)):
            from transformers import AutoConfig, AutoModelForSequenceClassification

            from policylab.modules.hub import pretrained_source

            source = str(folder) if folder is not None else pretrained_source(model, "reward model")
            config = AutoConfig.from_pretrained(source)
            architectures = config.architectures or []
            if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
                raise ValueError(
                    f"{self.name}: {model} holds a {architectures[0]} and no {REWARD_HEAD}: not a reward model. "
                    "Give the hf_model folder of a RewardModel run or a sequence-classification model"
                )
            model = AutoModelForSequenceClassification.from_pretrained(source)
            return model.requires_grad_(False).eval(), False
        if _is_module(model, "RewardModel"):
            return model, True
        if isinstance(model, torch.nn.Module) and getattr(model, "config", None) is not None:
            return model, False
        raise TypeError(
            f"{self.name}: model must be a folder, a hub id, a RewardModel or a sequence-classification model, "
            f"got {type(model).__name__}"
        )

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def truncated(self) -> int:
        """Rows cut to ``max_length`` so far."""
        return self.encoder.truncated

    def _score(self, prompts: list[str], completions: list[str]) -> Tensor:
        rows = self.encoder.encode(prompts, completions)
        out = torch.empty(len(rows))
        device = model_device(self.model)
        with evaluating(self.model):
            for indices, input_ids, attention, _ in self.encoder.batches(rows, left=not self.policylab):
                input_ids, attention = input_ids.to(device), attention.to(device)
                out[indices] = self._forward(input_ids, attention).float().cpu()
        return out

    def _forward(self, input_ids: Tensor, attention: Tensor) -> Tensor:
        if self.policylab:
            return self.model.reward(input_ids, attention)
        from policylab.nn.heads import position_ids

        config = self.model.config.get_text_config()
        pad = config.pad_token_id
        config.pad_token_id = -1  # no token is padding to the pooling: it reads the last position
        try:
            kwargs = {"position_ids": position_ids(attention)} if self._positions else {}
            logits = self.model(input_ids=input_ids, attention_mask=attention, **kwargs).logits
        finally:
            config.pad_token_id = pad
        if logits.dim() != 2 or logits.shape[-1] != 1:
            raise JudgeError(f"{self.name}: the model gave logits of shape {list(logits.shape)}, expected [B, 1]")
        return logits[:, 0]


class PreferenceModelJudge(PairwiseJudge):
    """``P(a beats b | x)`` from a preference model.

    ``model`` is one of:

    - a policylab :class:`~policylab.modules.preference.GeneralPreferenceModel` run's ``hf_model``
      folder (with ``preference_head.pt``; its embedding size is read from the head) or the
      module itself: ``sigma(s(a > b | x) / tau)`` with GPM's score ``<R^>(x) v_a, v_b>``, as the
      module's loss defines the probability (``tau``: the temperature the model was trained
      with; by default the run's ``hparams.yaml`` beside the folder says it, else GPM's 0.1; a
      module object brings its own);
    - a :class:`ScalarJudge` (a reward model, a verifier): Bradley-Terry ``sigma(r_a - r_b)``;
    - a reward model folder (what :class:`RewardModelJudge` loads): Bradley-Terry over it.

    Both are antisymmetric. :meth:`preference_matrix` reads each completion once (``N K`` rows
    through the model, or ``N K`` scalar scores) and forms all ``K x K`` probabilities from them;
    ``calls`` counts the pairs (``N K (K - 1) / 2``), a wrapped scalar judge counts its rows.
    """

    antisymmetric = True

    def __init__(
        self,
        model: str | ScalarJudge,
        tokenizer: Any = None,
        tau: float | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        device: str | None = None,
    ) -> None:
        if tau is not None and tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.reward: ScalarJudge | None = None
        self.model = None
        folder = local_folder(model, "preference model")
        if isinstance(model, ScalarJudge):
            self.reward = model
        elif folder is not None and (folder / PREFERENCE_HEAD).is_file():
            from policylab.modules.preference import GeneralPreferenceModel

            head = torch.load(folder / PREFERENCE_HEAD, weights_only=True)
            dim = head["embedding.weight"].shape[0]
            tau = tau if tau is not None else run_hyperparameter(folder, "tau")
            with quiet_progress_bars():
                gpm = GeneralPreferenceModel(
                    model=str(folder), value_head_dim=dim, **({} if tau is None else {"tau": tau})
                )
            self.model = gpm.requires_grad_(False).eval()
        elif isinstance(model, (str, Path)):
            self.reward = RewardModelJudge(model, tokenizer, batch_size, max_length, device)
        elif _is_module(model, "GeneralPreferenceModel"):
            self.model = model
        else:
            raise TypeError(
                f"PreferenceModelJudge: model must be a GeneralPreferenceModel (folder or module), a ScalarJudge "
                f"or a reward model folder, got {type(model).__name__}"
            )
        if self.model is not None:
            if device is not None:
                self.model.to(device)
            self.tau = tau if tau is not None else float(self.model.hparams.get("tau", 0.1))
            self.encoder = RowEncoder(load_tokenizer(tokenizer, model, self.name), batch_size, max_length)
        elif tau is not None:
            raise ValueError("tau is GPM's temperature; a Bradley-Terry judge over scalar rewards takes none")

    @property
    def name(self) -> str:
        return f"PreferenceModelJudge({self.reward.name})" if self.reward is not None else "PreferenceModelJudge(GPM)"

    def _embed(self, prompts: list[str], completions: list[str]) -> tuple[Tensor, Tensor]:
        """GPM's ``(v, lambda)`` of every row: ``[M, 2k]`` and ``[M, k]``, in row order."""
        rows = self.encoder.encode(prompts, completions)
        v = lam = None
        device = model_device(self.model)
        with evaluating(self.model):
            for indices, input_ids, attention, completion in self.encoder.batches(rows):
                batch = {
                    "input_ids": input_ids.to(device),
                    "attention_mask": attention.to(device),
                    "completion_mask": completion.to(device),
                }
                embedding, eigenvalues = (t.float().cpu() for t in self.model.embed(batch))
                if v is None:
                    v = torch.empty(len(rows), embedding.shape[-1])
                    lam = torch.empty(len(rows), eigenvalues.shape[-1])
                v[indices], lam[indices] = embedding, eigenvalues
        return v, lam

    def _gpm_probability(self, v_a: Tensor, v_b: Tensor, eigenvalues: Tensor) -> Tensor:
        from policylab.losses.reward import general_preference_score

        return torch.sigmoid(general_preference_score(v_a, v_b, eigenvalues) / self.tau)

    def _prefer(self, prompts: list[str], completions_a: list[str], completions_b: list[str]) -> Tensor:
        n = len(prompts)
        if self.reward is not None:
            where = [f"prompt {i}, completion {side}" for side in "ab" for i in range(n)]
            rewards = self.reward.score_rows(prompts + prompts, completions_a + completions_b, where)
            return torch.sigmoid(rewards[:n] - rewards[n:])
        v, lam = self._embed(prompts + prompts, completions_a + completions_b)
        return self._gpm_probability(v[:n], v[n:], lam[:n])

    def _preference_matrix(self, prompts: list[str], groups: list[list[str]]) -> Tensor:
        n, k = len(prompts), len(groups[0])
        flat_prompts = [p for p in prompts for _ in range(k)]
        flat = [c for g in groups for c in g]
        if self.reward is not None:
            where = [f"prompt {i}, completion {j}" for i in range(n) for j in range(k)]
            r = self.reward.score_rows(flat_prompts, flat, where).view(n, k)
            matrix = torch.sigmoid(r[:, :, None] - r[:, None, :])
        else:
            v, lam = self._embed(flat_prompts, flat)
            v, lam = v.view(n, k, -1), lam.view(n, k, -1)[:, :1, None]  # one operator per prompt
            matrix = self._gpm_probability(v[:, :, None], v[:, None, :], lam)
        matrix.diagonal(dim1=-2, dim2=-1).fill_(0.5)
        self.calls += n * k * (k - 1) // 2
        return matrix


def as_pairwise_judge(judge: Any, method: str = "this method") -> PairwiseJudge:
    """A pairwise judge as it is; a scalar judge (a reward model, a verifier), or a check's dotted
    path wrapped as a :class:`~policylab.judges.VerifierJudge`, as Bradley-Terry
    :class:`PreferenceModelJudge` (``P(a > b) = sigma(r_a - r_b)``). ``method`` names the caller in
    the error for anything else."""
    from policylab.judges.verifier import VerifierJudge

    if isinstance(judge, str):
        judge = VerifierJudge(judge)
    if isinstance(judge, ScalarJudge):
        return PreferenceModelJudge(judge)
    if not isinstance(judge, PairwiseJudge):
        raise ValueError(
            f"{method}'s judge must be a PairwiseJudge, a ScalarJudge or a check's dotted path, got {judge!r}"
        )
    return judge
