"""The judge interfaces: a scalar judge scores completions, a pairwise judge gives the
probability that one completion beats another, and :func:`win_rates` estimates how often each of
``K`` samples beats the others (SPPO's ``P(y > pi_t)``). Every judge checks what it returns
(one finite value per row, probabilities in ``[0, 1]``) and counts its evaluations in ``calls``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class JudgeError(ValueError):
    """A judge returned something unusable (wrong number of values, NaN or infinite values, a
    probability outside ``[0, 1]``); the message names the judge, the prompt and the value."""


def check_texts(judge: str, prompts: Sequence[str], *columns: tuple[str, Sequence[str]]) -> None:
    """Every column as long as ``prompts`` and every entry a string (an empty string is valid)."""
    for name, texts in (("prompts", prompts), *columns):
        if len(texts) != len(prompts):
            raise ValueError(f"{judge}: {len(texts)} {name} for {len(prompts)} prompts; give one per prompt")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{judge}: {name}[{i}] is {type(text).__name__}, expected a string")


def check_values(
    judge: str,
    values,
    n: int,
    what: str,
    item: str,
    probability: bool = False,
    where: Sequence[str] | None = None,
) -> Tensor:
    """``values`` as a float32 CPU tensor ``[n]`` after checking its shape, that every value is
    finite and, for a ``probability``, in ``[0, 1]``; a JudgeError names the judge, the row
    (``where[i]``, by default ``"prompt i"``) and the value (``item``: what one value is) otherwise."""
    try:
        out = torch.as_tensor(values).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        raise JudgeError(f"{judge} returned {type(values).__name__} ({err}): expected {n} {what} as a tensor") from None
    if out.shape != (n,):
        raise JudgeError(
            f"{judge} returned {what} of shape {list(out.shape)} for {n} rows: expected shape [{n}], one per row"
        )
    out = out.to("cpu", torch.float32)
    bad = ~torch.isfinite(out)
    problem = "is not finite"
    if probability and not bad.any():
        bad = (out < 0) | (out > 1)
        problem = "is outside [0, 1]"
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        row = where[i] if where is not None else f"prompt {i}"
        count = f" ({int(bad.sum())} such values)" if int(bad.sum()) > 1 else ""
        raise JudgeError(f"{judge}: {item} {out[i].item():g} for {row} {problem}{count}")
    return out


class ScalarJudge:
    """Scores completions: ``score(prompts, completions)`` -> ``[N]`` float32 (CPU), one value per
    (prompt, completion) row, higher is better.

    A subclass implements :meth:`_score` (any tensor, list or array of ``N`` numbers); the base
    checks it and counts the rows in ``calls``.
    """

    #: (prompt, completion) rows scored so far; set it to 0 to start a new count
    calls: int = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        return self.score_rows(prompts, completions)

    def score_rows(self, prompts: Sequence[str], completions: Sequence[str], where: list[str] | None = None) -> Tensor:
        """:meth:`score`, with ``where[i]`` naming row ``i`` in errors (default ``"prompt i"``):
        for callers that flatten groups of completions."""
        check_texts(self.name, prompts, ("completions", completions))
        if not prompts:
            return torch.zeros(0)
        raw = self._score(list(prompts), list(completions))
        out = check_values(self.name, raw, len(prompts), "scores", "score", where=where)
        self.calls += len(prompts)
        return out

    def _score(self, prompts: list[str], completions: list[str]):
        raise NotImplementedError(f"{self.name} must implement _score(prompts, completions)")


class PairwiseJudge:
    """Compares completions: ``prefer(prompts, completions_a, completions_b)`` -> ``[N]`` float32
    (CPU), the probability that ``a`` beats ``b`` for each prompt.

    A subclass implements :meth:`_prefer`; the base checks it (shape, finite, in ``[0, 1]``) and
    counts the pairs in ``calls``. ``antisymmetric = True`` (the default) declares
    ``P(b beats a) = 1 - P(a beats b)``, so :meth:`preference_matrix` compares each unordered pair
    once; a judge with a position bias sets it False and is asked both orders. A subclass that can
    compare ``K`` completions cheaper than pair by pair (a scalar reward scored once per completion)
    overrides :meth:`_preference_matrix`.
    """

    #: pairs compared so far; set it to 0 to start a new count
    calls: int = 0
    antisymmetric: bool = True

    @property
    def name(self) -> str:
        return type(self).__name__

    def prefer(self, prompts: Sequence[str], completions_a: Sequence[str], completions_b: Sequence[str]) -> Tensor:
        return self.prefer_rows(prompts, completions_a, completions_b)

    def prefer_rows(
        self,
        prompts: Sequence[str],
        completions_a: Sequence[str],
        completions_b: Sequence[str],
        where: list[str] | None = None,
    ) -> Tensor:
        """:meth:`prefer`, with ``where[i]`` naming row ``i`` in errors (default ``"prompt i"``)."""
        check_texts(self.name, prompts, ("completions_a", completions_a), ("completions_b", completions_b))
        if not prompts:
            return torch.zeros(0)
        raw = self._prefer(list(prompts), list(completions_a), list(completions_b))
        out = check_values(self.name, raw, len(prompts), "probabilities", "probability", probability=True, where=where)
        self.calls += len(prompts)
        return out

    def _prefer(self, prompts: list[str], completions_a: list[str], completions_b: list[str]):
        raise NotImplementedError(f"{self.name} must implement _prefer(prompts, completions_a, completions_b)")

    def preference_matrix(self, prompts: Sequence[str], groups: Sequence[Sequence[str]]) -> Tensor:
        """``[N, K, K]`` with ``[n, k, j] = P(groups[n][k] beats groups[n][j])`` and 0.5 on the
        diagonal, from one batch of comparisons (``N K (K - 1) / 2`` pairs for an antisymmetric
        judge, ``N K (K - 1)`` otherwise)."""
        k = group_size(self.name, prompts, groups)
        matrix = self._preference_matrix(list(prompts), [list(g) for g in groups])
        n = len(prompts)
        if not isinstance(matrix, Tensor) or matrix.shape != (n, k, k):
            shape = list(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
            raise JudgeError(f"{self.name} returned a preference matrix of shape {shape}, expected [{n}, {k}, {k}]")
        where = [f"prompt {i}, completion {a} vs {b}" for i in range(n) for a in range(k) for b in range(k)]
        flat = check_values(
            self.name, matrix.reshape(-1), n * k * k, "probabilities", "probability", probability=True, where=where
        )
        return flat.view(n, k, k)

    def _preference_matrix(self, prompts: list[str], groups: list[list[str]]) -> Tensor:
        n, k = len(prompts), len(groups[0])
        first, second = torch.triu_indices(k, k, offset=1) if self.antisymmetric else _ordered_pairs(k)
        pairs = list(zip(first.tolist(), second.tolist()))
        rows = [(p, g[i], g[j]) for p, g in zip(prompts, groups) for i, j in pairs]
        where = [f"prompt {m}, completion {i} vs {j}" for m in range(n) for i, j in pairs]
        probabilities = self.prefer_rows(*zip(*rows), where=where).view(n, -1)
        matrix = torch.full((n, k, k), 0.5)
        matrix[:, first, second] = probabilities
        if self.antisymmetric:
            matrix[:, second, first] = 1 - probabilities
        return matrix


def _ordered_pairs(k: int) -> Tensor:
    """All ``(i, j)`` with ``i != j``, as two rows."""
    grid = torch.cartesian_prod(torch.arange(k), torch.arange(k))
    grid = grid[grid[:, 0] != grid[:, 1]]
    return grid.T


def group_size(judge: str, prompts: Sequence[str], groups: Sequence[Sequence[str]]) -> int:
    """``K``, checking that there is one group per prompt, all of the same size ``K >= 2``."""
    if len(groups) != len(prompts):
        raise ValueError(f"{judge}: {len(groups)} groups for {len(prompts)} prompts; give one group per prompt")
    if not groups:
        raise ValueError(f"{judge}: no prompts to compare completions for")
    k = len(groups[0])
    for n, group in enumerate(groups):
        if len(group) != k:
            raise ValueError(f"{judge}: group {n} has {len(group)} completions, group 0 has {k}; all need the same K")
    if k < 2:
        raise ValueError(f"{judge}: win rates compare K >= 2 completions per prompt, got K = {k}")
    return k


def win_rates(
    judge: PairwiseJudge, prompts: Sequence[str], groups: Sequence[Sequence[str]], include_self: bool = False
) -> Tensor:
    """``[N, K]``: for each prompt, how often each of its ``K`` completions beats the others,
    ``P_hat(y_k > pi) = 1 / (K - 1) * sum_{j != k} P(y_k > y_j)``: SPPO's Monte-Carlo estimate of
    ``P(y > pi_t)`` (Wu et al., 2024, "Self-Play Preference Optimization for Language Model
    Alignment", arXiv:2405.00675, the estimate from ``K`` samples of ``pi_t`` in its practical
    algorithm). All pairs go to the judge in one batch (:meth:`PairwiseJudge.preference_matrix`).

    ``include_self=True`` gives the authors' code instead (uclaml/SPPO ``scripts/compute_prob.py``:
    the ``K x K`` matrix of ``sigma(s_i - s_j)`` over PairRM scores, self-comparisons 0.5 included,
    row sums divided by ``K``), which equals ``((K - 1) * P_hat + 0.5) / K``: the same ranking,
    shrunk towards 0.5.
    """
    if not isinstance(judge, PairwiseJudge):
        hint = (
            " (wrap it as PreferenceModelJudge(judge) for Bradley-Terry probabilities)"
            if isinstance(judge, ScalarJudge)
            else ""
        )
        raise TypeError(f"win_rates needs a PairwiseJudge, got {type(judge).__name__}{hint}")
    matrix = judge.preference_matrix(prompts, groups)
    k = matrix.shape[-1]
    if include_self:
        return matrix.mean(-1)
    return (matrix.sum(-1) - matrix.diagonal(dim1=-2, dim2=-1)) / (k - 1)
