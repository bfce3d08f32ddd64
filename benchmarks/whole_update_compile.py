"""Does compiling a whole TD3+BC update pay on a CPU? Eager against one ``torch.compile`` of the
entire step: the forward passes, the backward (through compiled autograd), fused Adam and the
target lerp. Plain PyTorch, Hopper-sized, batch 256, twin 256-256 critics. Not
``plain_references.PlainTD3BC``: that loop samples with numpy and updates targets parameter by
parameter, which would break the graph; this one gives the compiler the whole step.

    python benchmarks/whole_update_compile.py [--steps 600] [--threads 2]

Each mode runs in its own process (compiled autograd is a process-wide switch), eager first.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

OBS_DIM, ACT_DIM, BATCH, N = 11, 3, 256, 200_000


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, outputs))


def steps_per_second(compiled: bool, steps: int) -> float:
    torch.manual_seed(0)
    actor, q1, q2 = (
        nn.Sequential(mlp(OBS_DIM, ACT_DIM), nn.Tanh()),
        mlp(OBS_DIM + ACT_DIM, 1),
        mlp(OBS_DIM + ACT_DIM, 1),
    )
    actor_target, q1_target, q2_target = (copy.deepcopy(m).requires_grad_(False) for m in (actor, q1, q2))
    critic_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=3e-4, fused=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4, fused=True)
    online = [*q1.parameters(), *q2.parameters(), *actor.parameters()]
    targets = [*q1_target.parameters(), *q2_target.parameters(), *actor_target.parameters()]
    data = [torch.randn(N, d) for d in (OBS_DIM, ACT_DIM, 1, OBS_DIM, 1)]

    def update(obs, action, reward, next_obs, done, noise, actor_step: bool):
        with torch.no_grad():
            next_action = (actor_target(next_obs) + noise.clamp(-0.5, 0.5)).clamp(-1, 1)
            next_input = torch.cat([next_obs, next_action], 1)
            target = reward + (1 - done) * 0.99 * torch.min(q1_target(next_input), q2_target(next_input))
        current = torch.cat([obs, action], 1)
        critic_loss = F.mse_loss(q1(current), target) + F.mse_loss(q2(current), target)
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        if actor_step:
            pi = actor(obs)
            q = q1(torch.cat([obs, pi], 1))
            actor_loss = -2.5 / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, action)
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            actor_opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(targets, online, 0.005)

    if compiled:
        torch._dynamo.config.compiled_autograd = True
        update = torch.compile(update)

    def one_step(k: int) -> None:
        rows = torch.randint(0, N, (BATCH,))
        update(*(column[rows] for column in data), 0.2 * torch.randn(BATCH, ACT_DIM), k % 2 == 1)

    for k in range(30):  # warm-up and compilation
        one_step(k)
    start = time.perf_counter()
    for k in range(steps):
        one_step(k)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["eager", "compiled"], help="(internal) time one mode in this process")
    args = parser.parse_args()
    if args.mode:
        torch.set_num_threads(args.threads)
        print(steps_per_second(args.mode == "compiled", args.steps))
        return
    rates = {}
    for mode in ("eager", "compiled"):
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        rates[mode] = float(out.stdout.strip().splitlines()[-1])
        print(f"{mode}: {rates[mode]:.1f} steps/s", flush=True)
    print(f"compiled/eager = {rates['compiled'] / rates['eager']:.3f}")


if __name__ == "__main__":
    main()
