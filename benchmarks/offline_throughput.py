"""Gradient steps per second of TD3+BC: policylab's module through ``Trainer.fit`` against a plain
PyTorch loop of the same update, in one process, same data, batch size and thread count, alternating.

    python benchmarks/offline_throughput.py [--steps 2000] [--rounds 3] [--threads 2] [--device cpu]

The plain loop is written the way single-file implementations (CORL's ``td3_bc.py``) write it:
two separate critic networks with their own Adam, a replay buffer of device tensors indexed with
numpy-drawn indices each step, and a Python loop of Polyak updates.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policylab.datamodules import OfflineTransitionDataModule
from policylab.modules.offline import TD3BC

OBS_DIM, ACT_DIM, N = 11, 3, 200_000  # Hopper-sized


def make_dataset(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "bench.npz"
    np.savez(
        path,
        observations=rng.normal(size=(N, OBS_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(N, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(N, ACT_DIM)).astype(np.float32),
        rewards=rng.normal(size=N).astype(np.float32),
        terminals=rng.random(N) < 0.01,
        timeouts=np.zeros(N, bool),
    )
    return path


# ----------------------------------------------------------------------------- plain reference
class Actor(nn.Module):
    def __init__(self, state_dim, action_dim, max_action):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, action_dim), nn.Tanh())
        self.max_action = max_action

    def forward(self, state):
        return self.max_action * self.net(state)


class Critic(nn.Module):
    def __init__(self, state_dim, action_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim + action_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))

    def forward(self, state, action):
        return self.net(torch.cat([state, action], 1))


def soft_update(target, source, tau):
    for target_param, source_param in zip(target.parameters(), source.parameters()):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


class PlainTD3BC:
    def __init__(self, data: dict[str, torch.Tensor], device, max_action=1.0, discount=0.99, tau=0.005, policy_noise=0.2, noise_clip=0.5, policy_freq=2, alpha=2.5):
        self.data, self.device = data, device
        self.actor = Actor(OBS_DIM, ACT_DIM, max_action).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_1, self.critic_2 = Critic(OBS_DIM, ACT_DIM).to(device), Critic(OBS_DIM, ACT_DIM).to(device)
        self.critic_1_target, self.critic_2_target = copy.deepcopy(self.critic_1), copy.deepcopy(self.critic_2)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=3e-4)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=3e-4)
        self.max_action, self.discount, self.tau = max_action, discount, tau
        self.policy_noise, self.noise_clip, self.policy_freq, self.alpha = policy_noise * max_action, noise_clip * max_action, policy_freq, alpha
        self.total_it = 0

    def sample(self, batch_size=256):
        indices = np.random.randint(0, len(self.data["obs"]), size=batch_size)
        return [self.data[k][indices] for k in ("obs", "action", "reward", "next_obs", "terminal")]

    def train_step(self):
        self.total_it += 1
        state, action, reward, next_state, done = self.sample()
        reward, done = reward.unsqueeze(1), done.unsqueeze(1)
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q = torch.min(self.critic_1_target(next_state, next_action), self.critic_2_target(next_state, next_action))
            target_q = reward + (1 - done) * self.discount * target_q
        current_q1, current_q2 = self.critic_1(state, action), self.critic_2(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        if self.total_it % self.policy_freq == 0:
            pi = self.actor(state)
            q = self.critic_1(state, pi)
            lmbda = self.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            soft_update(self.critic_1_target, self.critic_1, self.tau)
            soft_update(self.critic_2_target, self.critic_2, self.tau)
            soft_update(self.actor_target, self.actor, self.tau)


# ----------------------------------------------------------------------------- timing
def time_plain(agent: PlainTD3BC, steps: int, device) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        agent.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def time_policylab(dm: OfflineTransitionDataModule, model: TD3BC, steps: int, device) -> float:
    trainer = L.Trainer(
        accelerator=device.type, devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as folder:
        dm = OfflineTransitionDataModule(str(make_dataset(Path(folder))), batch_size=256)
        dm.load()  # outside the timed region
    data = {k: v.to(device) for k, v in dm.buffer.all()._asdict().items()}
    plain = PlainTD3BC(data, device)
    model = TD3BC(OBS_DIM, ACT_DIM, 1.0)
    # warm-up both (allocator, first-call overheads); the policylab warm-up also restores nothing later
    time_plain(plain, 200, device)
    time_policylab(dm, model, 200, device)
    plain_rates, lab_rates = [], []
    for r in range(args.rounds):
        plain_rates.append(time_plain(plain, args.steps, device))
        lab_rates.append(time_policylab(dm, model, args.steps, device))
        print(f"round {r}: plain {plain_rates[-1]:.1f} steps/s   policylab {lab_rates[-1]:.1f} steps/s", flush=True)
    p, q = statistics.median(plain_rates), statistics.median(lab_rates)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"TD3+BC batch 256, {args.steps} steps x {args.rounds} rounds on {name}, torch {torch.__version__}")
    print(f"plain PyTorch: {p:.1f} steps/s | policylab Trainer.fit: {q:.1f} steps/s | policylab/plain = {q / p:.3f}")


if __name__ == "__main__":
    main()
