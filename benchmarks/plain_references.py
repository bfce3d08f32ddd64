"""Plain PyTorch updates of TD3+BC, A2PR, IQL and SAC, written the way published single-file
implementations write them (CORL, the A2PR authors' code, CleanRL): separate critic networks
with ``torch.cat``-ed inputs, a batch drawn with numpy indices every step, Python loops of
Polyak updates, ``.item()``-free steps. They are the yardstick of ``offline_throughput.py``:
what a user would otherwise run. Each takes the same data dict and exposes ``train_step()``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: list[int], output_activation: type[nn.Module] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class Critic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp([state_dim + action_dim, *hidden, 1])

    def forward(self, state, action):
        return self.net(torch.cat([state, action], 1))


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


class ReplaySample:
    """``sample()`` as single-file code writes it: numpy indices into device tensors."""

    def __init__(self, data: dict[str, torch.Tensor], batch_size: int = 256):
        self.data, self.batch_size = data, batch_size

    def sample(self):
        indices = np.random.randint(0, len(self.data["obs"]), size=self.batch_size)
        state, action, reward, next_state, done = (
            self.data[k][indices] for k in ("obs", "action", "reward", "next_obs", "terminal")
        )
        return state, action, reward.unsqueeze(1), next_state, done.unsqueeze(1)


# ----------------------------------------------------------------------------- TD3+BC (CORL td3_bc.py)
class PlainTD3BC(ReplaySample):
    def __init__(
        self,
        data,
        obs_dim,
        act_dim,
        device,
        max_action=1.0,
        discount=0.99,
        tau=0.005,
        policy_noise=0.2,
        noise_clip=0.5,
        policy_freq=2,
        alpha=2.5,
    ):
        super().__init__(data)
        self.actor = mlp([obs_dim, 256, 256, act_dim], nn.Tanh).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_1, self.critic_2 = (
            Critic(obs_dim, act_dim, [256, 256]).to(device),
            Critic(obs_dim, act_dim, [256, 256]).to(device),
        )
        self.critic_1_target, self.critic_2_target = copy.deepcopy(self.critic_1), copy.deepcopy(self.critic_2)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=3e-4)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=3e-4)
        self.max_action, self.discount, self.tau = max_action, discount, tau
        self.policy_noise, self.noise_clip, self.policy_freq, self.alpha = (
            policy_noise * max_action,
            noise_clip * max_action,
            policy_freq,
            alpha,
        )
        self.total_it = 0

    def train_step(self):
        self.total_it += 1
        state, action, reward, next_state, done = self.sample()
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (self.max_action * self.actor_target(next_state) + noise).clamp(
                -self.max_action, self.max_action
            )
            target_q = torch.min(
                self.critic_1_target(next_state, next_action), self.critic_2_target(next_state, next_action)
            )
            target_q = reward + (1 - done) * self.discount * target_q
        current_q1, current_q2 = self.critic_1(state, action), self.critic_2(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        if self.total_it % self.policy_freq == 0:
            pi = self.max_action * self.actor(state)
            q = self.critic_1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.critic_1_target, self.critic_1, self.tau)
            soft_update(self.critic_2_target, self.critic_2, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)


# ----------------------------------------------------------------------------- A2PR (authors' A2PR.py)
class VAE(nn.Module):
    def __init__(self, state_dim, action_dim, latent_dim, max_action):
        super().__init__()
        self.e1, self.e2 = nn.Linear(state_dim + action_dim, 750), nn.Linear(750, 750)
        self.mean, self.log_std = nn.Linear(750, latent_dim), nn.Linear(750, latent_dim)
        self.d1, self.d2, self.d3 = (
            nn.Linear(state_dim + latent_dim, 750),
            nn.Linear(750, 750),
            nn.Linear(750, action_dim),
        )
        self.max_action, self.latent_dim = max_action, latent_dim

    def forward(self, state, action):
        z = F.relu(self.e2(F.relu(self.e1(torch.cat([state, action], 1)))))
        mean, log_std = self.mean(z), self.log_std(z).clamp(-4, 15)
        std = torch.exp(log_std)
        z = mean + std * torch.randn_like(std)
        return self.decode(state, z), mean, std

    def decode(self, state, z):
        a = F.relu(self.d2(F.relu(self.d1(torch.cat([state, z], 1)))))
        return self.max_action * torch.tanh(self.d3(a))


class TwinCritic(nn.Module):
    def __init__(self, state_dim, action_dim):
        super().__init__()
        self.q1, self.q2 = (
            mlp([state_dim + action_dim, 256, 256, 256, 256, 1]),
            mlp([state_dim + action_dim, 256, 256, 256, 256, 1]),
        )

    def forward(self, state, action):
        sa = torch.cat([state, action], 1)
        return self.q1(sa), self.q2(sa)

    def Q1(self, state, action):
        return self.q1(torch.cat([state, action], 1))


class PlainA2PR(ReplaySample):
    def __init__(
        self,
        data,
        obs_dim,
        act_dim,
        device,
        max_action=1.0,
        discount=0.995,
        tau=0.005,
        policy_noise=0.2,
        noise_clip=0.5,
        policy_freq=2,
        alpha=2.5,
        mask=0.4,
        vae_weight=1.0,
    ):
        super().__init__(data)
        self.actor = mlp([obs_dim, 256, 256, 256, act_dim], nn.Tanh).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic = TwinCritic(obs_dim, act_dim).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=3e-4)
        self.value = mlp([obs_dim, 256, 256, 256, 256, 1]).to(device)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=3e-4)
        self.vae = VAE(obs_dim, act_dim, 2 * act_dim, max_action).to(device)
        self.vae_optimizer = torch.optim.Adam(self.vae.parameters())
        self.max_action, self.discount, self.tau, self.policy_freq = max_action, discount, tau, policy_freq
        self.policy_noise, self.noise_clip, self.alpha, self.mask, self.vae_weight = (
            policy_noise,
            noise_clip,
            alpha,
            mask,
            vae_weight,
        )
        self.total_it = 0

    def train_step(self):
        self.total_it += 1
        state, action, reward, next_state, done = self.sample()
        not_done = 1 - done
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (self.max_action * self.actor_target(next_state) + noise).clamp(
                -self.max_action, self.max_action
            )
            target_q = reward + not_done * self.discount * torch.min(*self.critic_target(next_state, next_action))
        current_q1, current_q2 = self.critic(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        with torch.no_grad():
            targ_q = reward + not_done * self.discount * torch.min(*self.critic(next_state, next_action))
            t_q = torch.min(targ_q, target_q)
        value = self.value(state)
        value_loss = F.mse_loss(value, t_q)
        self.value_optimizer.zero_grad()
        value_loss.backward()
        self.value_optimizer.step()
        recon, mean, std = self.vae(state, action)
        q_vae = self.critic.Q1(state, action)
        recon_loss = (self.vae_weight * (q_vae > value) * torch.square(recon - action)).mean()
        kl_loss = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        vae_loss = recon_loss + 0.5 * kl_loss
        self.vae_optimizer.zero_grad()
        vae_loss.backward()
        self.vae_optimizer.step()
        if self.total_it % self.policy_freq == 0:
            pi = self.max_action * self.actor(state)
            q = self.critic.Q1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean()
            recon_pi, _, _ = self.vae(state, pi)
            q_new = self.critic.Q1(state, action)
            q_pi = self.critic.Q1(state, recon_pi)
            adv_action, adv_pi = q_new - value, q_pi - value
            target = recon_pi * (adv_pi >= adv_action) + action * (adv_action > adv_pi)
            weight = self.mask * ((q_pi.detach() >= value.detach()).float() + (q_new.detach() > value.detach()).float())
            bc_loss = (torch.square(pi - target) * weight).mean()
            self.actor_optimizer.zero_grad()
            (actor_loss + bc_loss).backward()
            self.actor_optimizer.step()
            soft_update(self.critic_target, self.critic, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)


# ----------------------------------------------------------------------------- IQL (CORL iql.py)
class GaussianPolicy(nn.Module):
    def __init__(self, state_dim, act_dim, max_action):
        super().__init__()
        self.net = mlp([state_dim, 256, 256, act_dim], nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.max_action = max_action

    def forward(self, obs):
        return torch.distributions.Normal(self.net(obs), torch.exp(self.log_std.clamp(-20.0, 2.0)))


class PlainIQL(ReplaySample):
    def __init__(
        self,
        data,
        obs_dim,
        act_dim,
        device,
        max_action=1.0,
        discount=0.99,
        tau=0.005,
        beta=3.0,
        iql_tau=0.7,
        max_steps=1_000_000,
    ):
        super().__init__(data)
        self.qf = TwinCriticIQL(obs_dim, act_dim).to(device)
        self.q_target = copy.deepcopy(self.qf).requires_grad_(False)
        self.vf = mlp([obs_dim, 256, 256, 1]).to(device)
        self.actor = GaussianPolicy(obs_dim, act_dim, max_action).to(device)
        self.v_optimizer = torch.optim.Adam(self.vf.parameters(), lr=3e-4)
        self.q_optimizer = torch.optim.Adam(self.qf.parameters(), lr=3e-4)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.actor_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, max_steps)
        self.discount, self.tau, self.beta, self.iql_tau = discount, tau, beta, iql_tau

    def train_step(self):
        observations, actions, rewards, next_observations, dones = self.sample()
        rewards, dones = rewards.squeeze(-1), dones.squeeze(-1)
        with torch.no_grad():
            next_v = self.vf(next_observations).squeeze(-1)
            target_q = self.q_target(observations, actions)
        v = self.vf(observations).squeeze(-1)
        adv = target_q - v
        v_loss = torch.mean(torch.abs(self.iql_tau - (adv < 0).float()) * adv**2)
        self.v_optimizer.zero_grad()
        v_loss.backward()
        self.v_optimizer.step()
        targets = rewards + (1.0 - dones) * self.discount * next_v.detach()
        qs = self.qf.both(observations, actions)
        q_loss = sum(F.mse_loss(q, targets) for q in qs) / len(qs)
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        soft_update(self.q_target, self.qf, self.tau)
        exp_adv = torch.exp(self.beta * adv.detach()).clamp(max=100.0)
        bc_losses = -self.actor(observations).log_prob(actions).sum(-1)
        policy_loss = torch.mean(exp_adv * bc_losses)
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        self.actor_lr_schedule.step()


class TwinCriticIQL(nn.Module):
    def __init__(self, state_dim, action_dim):
        super().__init__()
        self.q1, self.q2 = mlp([state_dim + action_dim, 256, 256, 1]), mlp([state_dim + action_dim, 256, 256, 1])

    def both(self, state, action):
        sa = torch.cat([state, action], 1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

    def forward(self, state, action):
        return torch.min(*self.both(state, action))


# ----------------------------------------------------------------------------- SAC (CleanRL sac_continuous_action.py)
class SACActor(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(obs_dim, 256), nn.Linear(256, 256)
        self.fc_mean, self.fc_logstd = nn.Linear(256, act_dim), nn.Linear(256, act_dim)

    def get_action(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        mean, log_std = self.fc_mean(x), self.fc_logstd(x).clamp(-20, 2)
        normal = torch.distributions.Normal(mean, log_std.exp())
        x_t = normal.rsample()
        y_t = torch.tanh(x_t)
        log_prob = normal.log_prob(x_t) - torch.log(1 - y_t.pow(2) + 1e-6)
        return y_t, log_prob.sum(1, keepdim=True)


class PlainSAC(ReplaySample):
    def __init__(self, data, obs_dim, act_dim, device, discount=0.99, tau=0.005):
        super().__init__(data)
        self.actor = SACActor(obs_dim, act_dim).to(device)
        self.qf1, self.qf2 = (
            Critic(obs_dim, act_dim, [256, 256]).to(device),
            Critic(obs_dim, act_dim, [256, 256]).to(device),
        )
        self.qf1_target, self.qf2_target = copy.deepcopy(self.qf1), copy.deepcopy(self.qf2)
        self.q_optimizer = torch.optim.Adam(list(self.qf1.parameters()) + list(self.qf2.parameters()), lr=3e-4)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.target_entropy = -float(act_dim)
        self.log_alpha = torch.zeros(1, requires_grad=True, device=device)
        self.a_optimizer = torch.optim.Adam([self.log_alpha], lr=3e-4)
        self.discount, self.tau = discount, tau

    def train_step(self):
        obs, actions, rewards, next_obs, dones = self.sample()
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.get_action(next_obs)
            min_next = (
                torch.min(self.qf1_target(next_obs, next_actions), self.qf2_target(next_obs, next_actions))
                - alpha * next_log_pi
            )
            next_q = rewards + (1 - dones) * self.discount * min_next
        qf_loss = F.mse_loss(self.qf1(obs, actions), next_q) + F.mse_loss(self.qf2(obs, actions), next_q)
        self.q_optimizer.zero_grad()
        qf_loss.backward()
        self.q_optimizer.step()
        pi, log_pi = self.actor.get_action(obs)
        actor_loss = ((alpha * log_pi) - torch.min(self.qf1(obs, pi), self.qf2(obs, pi))).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        alpha_loss = (-self.log_alpha.exp() * (log_pi.detach() + self.target_entropy)).mean()
        self.a_optimizer.zero_grad()
        alpha_loss.backward()
        self.a_optimizer.step()
        soft_update(self.qf1_target, self.qf1, self.tau)
        soft_update(self.qf2_target, self.qf2, self.tau)


PLAIN = {"td3bc": PlainTD3BC, "a2pr": PlainA2PR, "iql": PlainIQL, "sac": PlainSAC}
