"""Policy networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.losses.sac import gaussian_log_density, squashed_gaussian_log_prob
from policylab.nn.mlp import mlp


class DeterministicActor(nn.Module):
    """``a = max_action * tanh(MLP(s))``: the TD3 / TD3+BC actor."""

    def __init__(
        self, obs_dim: int, action_dim: int, max_action: float = 1.0, hidden_dims: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        self.max_action = float(max_action)
        self.net = mlp(obs_dim, action_dim, hidden_dims)

    def forward(self, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.net(obs))


class TanhGaussianActor(nn.Module):
    """SAC's policy: ``a = max_action * tanh(u)``, ``u ~ N(mean(s), std(s)^2)``, with mean and
    ``log std`` (clamped to ``[log_std_min, log_std_max]``) from one MLP."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        hidden_dims: Sequence[int] = (256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.max_action, self.log_std_min, self.log_std_max = float(max_action), log_std_min, log_std_max
        self.net = mlp(obs_dim, 2 * action_dim, hidden_dims)
        # constructor arguments, saved next to the weights in policy snapshots
        self.config = {
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "max_action": self.max_action,
            "hidden_dims": list(hidden_dims),
            "log_std_min": log_std_min,
            "log_std_max": log_std_max,
        }

    def mean_and_log_std(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterized sample and its log-probability: ``(action [B, A], log_prob [B])``."""
        mean, log_std = self.mean_and_log_std(obs)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        pre_tanh = mean + noise * log_std.exp()
        log_prob = squashed_gaussian_log_prob(pre_tanh, mean, log_std, self.max_action)
        return self.max_action * torch.tanh(pre_tanh), log_prob

    def deterministic(self, obs: Tensor) -> Tensor:
        """The evaluation action ``max_action * tanh(mean(s))``."""
        return self.max_action * torch.tanh(self.mean_and_log_std(obs)[0])


class GaussianActor(nn.Module):
    """IQL's policy (as in CORL): ``N(max_action * tanh(MLP(s)), diag(exp(log_std))^2)`` with a
    state-independent ``log_std`` parameter clamped to ``[log_std_min, log_std_max]``."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        hidden_dims: Sequence[int] = (256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.max_action, self.log_std_min, self.log_std_max = float(max_action), log_std_min, log_std_max
        self.net = mlp(obs_dim, action_dim, hidden_dims)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def mean(self, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.net(obs))

    def std(self) -> Tensor:
        return self.log_std.clamp(self.log_std_min, self.log_std_max).exp()

    def log_prob(self, obs: Tensor, action: Tensor) -> Tensor:
        """``log pi(a | s)`` summed over action dimensions, ``[B]``: the diagonal Gaussian
        density in closed form (``torch.distributions`` would validate its arguments with a
        host-device sync on every call)."""
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return gaussian_log_density(action, self.mean(obs), log_std).sum(-1)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample clipped to the action box (online exploration)."""
        mean = self.mean(obs)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return (mean + noise * self.std()).clamp(-self.max_action, self.max_action)
