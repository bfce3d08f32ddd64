"""Reward-model losses: the Bradley-Terry reward model and the General Preference Model (GPM),
as pure functions.

Symbols (per pair of a prompt ``x`` with a chosen response ``y_w`` and a rejected ``y_l``):

- Bradley-Terry: a scalar reward ``r(x, y)`` per response, ``r_w = r(x, y_w)`` and
  ``r_l = r(x, y_l)``; ``P(y_w > y_l | x) = sigma(r_w - r_l)``.
- GPM (Zhang et al., 2024, "General Preference Modeling with Preference Representations for
  Aligning Language Models", arXiv:2410.02197; published as "Beyond Bradley-Terry Models: A
  General Preference Model for Language Model Alignment", ICML 2025): a preference embedding
  ``v_{y|x}`` in ``R^{2k}`` per response and the skew-symmetric operator
  ``R^>(x) = blockdiag(lambda_1(x) J, ..., lambda_k(x) J)`` with ``J = [[0, -1], [1, 0]]`` and
  eigenvalue scales ``lambda_l(x) >= 0``; the preference score is
  ``s(y_i > y_j | x) = <R^> v_i, v_j> = v_i^T R^>^T v_j`` and
  ``P(y_i > y_j | x) = sigma(s(y_i > y_j | x) / tau)``.

Every loss returns the per-pair loss ``[B]``; the module averages.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(chosen_reward: Tensor, rejected_reward: Tensor, margin: Tensor | float = 0.0) -> Tensor:
    """The Bradley-Terry reward-model loss (Ouyang et al., 2022, "Training language models to
    follow instructions with human feedback", eq. 1, per pair): ``-log sigma(r_w - r_l)``.

    ``margin`` ``m`` (a scalar or a per-pair ``[B]`` tensor) gives the margin loss of Llama 2
    (Touvron et al., 2023, eq. 2): ``-log sigma(r_w - r_l - m)``, which asks for a larger
    reward gap on pairs rated as more clearly different. ``m = 0`` is the plain loss.
    """
    return -F.logsigmoid(chosen_reward - rejected_reward - margin)


def general_preference_score(v_i: Tensor, v_j: Tensor, eigenvalues: Tensor) -> Tensor:
    """GPM's preference score (arXiv:2410.02197): ``s(y_i > y_j | x) = <R^> v_i, v_j>``
    with ``R^> = blockdiag(lambda_l J)``, ``J = [[0, -1], [1, 0]]``, computed block by block
    without building the matrix:

    ``s = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l])``.

    ``v_i`` and ``v_j`` are ``[..., 2k]`` preference embeddings, ``eigenvalues`` ``[..., k]`` the
    ``lambda_l(x)`` (all three broadcast, so one prompt's ``K`` responses ``[K, 1, 2k]`` against
    ``[1, K, 2k]`` give the ``[K, K]`` score matrix). The score is antisymmetric,
    ``s(i > j) = -s(j > i)``, and ``s(i > i) = 0``: a response never beats itself and the
    probabilities ``sigma(s / tau)`` of the two orders sum to one.
    """
    if v_i.shape[-1] % 2 or v_j.shape[-1] != v_i.shape[-1]:
        raise ValueError(
            f"preference embeddings need one even last dimension 2k, got {tuple(v_i.shape)} and {tuple(v_j.shape)}"
        )
    k = v_i.shape[-1] // 2
    if eigenvalues.shape[-1] != k:
        raise ValueError(
            f"eigenvalues {tuple(eigenvalues.shape)} need last dimension k = {k} for embeddings of size {2 * k}"
        )
    a, b = v_i.unflatten(-1, (k, 2)), v_j.unflatten(-1, (k, 2))
    return (eigenvalues * (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])).sum(-1)


def general_preference_loss(
    chosen_embedding: Tensor,
    rejected_embedding: Tensor,
    eigenvalues: Tensor,
    tau: float = 0.1,
    margin: Tensor | float = 0.0,
) -> Tensor:
    """GPM's training loss (arXiv:2410.02197): the negative log-likelihood of the
    observed preference under ``P(y_w > y_l | x) = sigma(s(y_w > y_l | x) / tau)``,
    ``-log sigma((s(y_w > y_l | x) - m) / tau)``, with :func:`general_preference_score`.

    ``tau`` is the temperature (0.1 in the authors' code); with unit-norm embeddings and
    eigenvalues summing to one, ``|s| <= 1``, so ``tau`` sets the largest logit ``1 / tau``.
    ``margin`` ``m`` is optional (scalar or ``[B]``), as in the authors' code; 0 by default.
    """
    return -F.logsigmoid((general_preference_score(chosen_embedding, rejected_embedding, eigenvalues) - margin) / tau)
