"""Networks that produce or take a per-state balance coefficient (FamO2O, Wang et al., NeurIPS 2023,
https://arxiv.org/abs/2310.17966; authors' code LeapLabTHU/FamO2O, ``jax_iql/``).

- :func:`sinusoid_encoding`: a scalar coefficient as ``d`` sines and cosines of falling frequency
  (the positional encoding of Transformers, applied to the coefficient's value);
- :class:`UniversalActor`: one Gaussian policy for a whole family of coefficients,
  ``pi_u(a | s, beta) = N(max_action * tanh(MLP([s, enc(beta)])), diag(std)^2)``;
- :class:`BalanceModel`: ``pi_b(beta | s)``, a tanh-squashed Gaussian mapped onto a coefficient range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.losses.sac import squashed_gaussian_log_prob
from policylab.nn.mlp import mlp
from policylab.nn.policies import GaussianActor


def sinusoid_encoding(coefficient: Tensor, dim: int = 6, base: float = 10000.0) -> Tensor:
    """``[B]`` (or ``[B, 1]``) coefficients to ``[B, dim]`` features, interleaved as
    ``enc[2i] = sin(beta / base^(2i/dim))``, ``enc[2i+1] = cos(beta / base^(2i/dim))``,
    ``i = 0 .. dim/2 - 1`` (the authors' ``sin_cos_skill_func``, ``jax_iql/family_utils.py``)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoid_encoding needs an even dim >= 2 (sine and cosine pairs), got {dim}")
    beta = coefficient.reshape(-1, 1)
    exponents = torch.arange(0, dim // 2, device=beta.device, dtype=beta.dtype) * (2.0 / dim)
    angles = beta / base**exponents  # [B, dim/2]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(beta.shape[0], dim)


def coefficient_from_unit(unit: Tensor, low: float, high: float) -> Tensor:
    """``u`` in ``[-1, 1]`` to ``beta = low + (u + 1) / 2 * (high - low)`` (the IQL version's map;
    the authors' CQL version uses ``u * (high - low) + low`` instead)."""
    return low + (unit + 1.0) * (0.5 * (high - low))


class UniversalActor(nn.Module):
    """``pi_u(a | s, beta)``: IQL's Gaussian actor (state-independent ``log std``, initialized at 0)
    on the state concatenated with :func:`sinusoid_encoding` of the coefficient. The authors clamp
    its ``log std`` to ``[-5, 2]`` (``jax_iql/family_learner.py``)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        hidden_dims: Sequence[int] = (256, 256),
        encoding_dim: int = 6,
        encoding_base: float = 10000.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.encoding_dim, self.encoding_base = int(encoding_dim), float(encoding_base)
        self.policy = GaussianActor(
            obs_dim + encoding_dim, action_dim, max_action, hidden_dims, log_std_min, log_std_max
        )
        self.max_action = self.policy.max_action

    def conditioned(self, obs: Tensor, coefficient: Tensor) -> Tensor:
        """The actor's input ``[s, enc(beta)]``."""
        return torch.cat([obs, sinusoid_encoding(coefficient, self.encoding_dim, self.encoding_base)], dim=-1)

    def mean(self, obs: Tensor, coefficient: Tensor) -> Tensor:
        return self.policy.mean(self.conditioned(obs, coefficient))

    def std(self) -> Tensor:
        return self.policy.std()

    def log_prob(self, obs: Tensor, coefficient: Tensor, action: Tensor) -> Tensor:
        """``log pi_u(a | s, beta)`` summed over action dimensions, ``[B]``."""
        return self.policy.log_prob(self.conditioned(obs, coefficient), action)

    def rsample(self, obs: Tensor, coefficient: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterized sample ``mean + std * eps``, not clipped (gradients reach ``beta``)."""
        mean = self.mean(obs, coefficient)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return mean + noise * self.std()

    def sample(self, obs: Tensor, coefficient: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample clipped to the action box (online exploration)."""
        return self.policy.sample(self.conditioned(obs, coefficient), generator)


class BalanceModel(nn.Module):
    """``pi_b(beta | s)``: ``u = tanh(z)``, ``z ~ N(m(s), exp(log_std)^2)`` with an MLP mean and a
    state-independent ``log_std`` (initialized at 0, clamped to ``[-10, 2]``), and
    ``beta = coefficient_from_unit(u, *coefficient_range)``. :meth:`forward` is the deterministic
    coefficient ``beta(tanh(m(s)))`` the authors act with."""

    def __init__(
        self,
        obs_dim: int,
        coefficient_range: Sequence[float] = (1.0, 5.0),
        hidden_dims: Sequence[int] = (256, 256),
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in coefficient_range)
        if not low < high:
            raise ValueError(
                f"BalanceModel: coefficient_range must be (low, high) with low < high, got {coefficient_range}"
            )
        self.low, self.high, self.log_std_min, self.log_std_max = low, high, log_std_min, log_std_max
        self.net = mlp(obs_dim, 1, hidden_dims)
        self.log_std = nn.Parameter(torch.zeros(1))

    def forward(self, obs: Tensor) -> Tensor:
        """The deterministic coefficient of each state, ``[B]``."""
        return coefficient_from_unit(torch.tanh(self.net(obs)).squeeze(-1), self.low, self.high)

    def rsample(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterized coefficient ``[B]`` and ``log pi_b(u | s)`` ``[B]`` of its squashed value
        ``u`` (the density of ``u``, as the authors' entropy estimate uses; the affine map to
        ``beta`` adds only a constant)."""
        mean = self.net(obs)
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max).expand_as(mean)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        pre_tanh = mean + noise * log_std.exp()
        log_prob = squashed_gaussian_log_prob(pre_tanh, mean, log_std)
        return coefficient_from_unit(torch.tanh(pre_tanh).squeeze(-1), self.low, self.high), log_prob
