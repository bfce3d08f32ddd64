"""policylab's A2PR against the authors' public A2PR code on the same data, seeds and evaluation.

The authors' code (github.com/ltlhuuu/A2PR) is not part of policylab: give a local checkout by
path. Only its ``A2PR.py`` (agent) and ``core/network`` (networks) and ``utils/buffer.py`` (replay
buffer) are imported; its ``main.py``/``utils/config.py`` need ``gym`` + ``d4rl`` and are not used.
What the script reproduces of their ``main.py``: the D4RL arrays in their ``ReplayBuffer``
(``D4RL_convert``), states standardized by their ``normalize_states`` (mean, std + 1e-3), one
``policy.train(buffer, 256)`` per step, with their argument defaults (``utils/config.py``) and the
README's per-task values (``--mask``, ``--discount``, ``--alpha``, ``--vae-weight``).

Both agents learn from the same arrays (the policylab dataset named by ``--dataset``, D4RL layout)
and are scored by the same function: :func:`policylab.envs.evaluation.evaluate_policy` on the
gymnasium v5 env, ``--episodes`` episodes seeded ``1000 * seed + k`` for evaluation ``k``, the
D4RL normalized score. Rounds alternate (authors, policylab) per seed, one thread each.

    git -C /work/.mirror/ltlhuuu+A2PR/repo archive HEAD | tar -x -C /tmp/a2pr_authors
    python benchmarks/a2pr_vs_authors.py --authors-repo /tmp/a2pr_authors --seeds 0 1 2 \\
        --steps 30000 --eval-every 5000 --out benchmarks/out/a2pr_vs_authors

Writes ``curves.csv`` (implementation, seed, step, normalized score, seconds) and ``summary.md``
(mean and spread per evaluation step, steps per second) into ``--out``; a finished (implementation,
seed) is read back instead of retrained, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policylab.datamodules import OfflineTransitionDataModule  # noqa: E402
from policylab.envs.evaluation import evaluate_policy  # noqa: E402
from policylab.envs.scores import normalized_score  # noqa: E402
from policylab.modules import A2PR  # noqa: E402

FIELDS = ("implementation", "seed", "step", "normalized_score", "seconds")


def dataset_arrays(dataset: str) -> tuple[dict[str, np.ndarray], str, tuple[float, float]]:
    """The raw (unnormalized) transitions of a policylab dataset in ``d4rl.qlearning_dataset``'s
    names, its env id and its reference scores."""
    data = OfflineTransitionDataModule(dataset, normalize_observations=False).load()
    rows = data.buffer.all()
    arrays = {
        "observations": rows.obs.numpy().astype(np.float64),
        "actions": rows.action.numpy().astype(np.float64),
        "next_observations": rows.next_obs.numpy().astype(np.float64),
        "rewards": rows.reward.numpy().astype(np.float64),
        "terminals": rows.terminal.numpy().astype(np.float64),
    }
    return arrays, data.env_id, data.reference_scores


def score(act, env_id: str, refs, mean: np.ndarray, std: np.ndarray, episodes: int, seed: int) -> float:
    """Mean D4RL normalized score of ``act`` (normalized observations -> actions) over ``episodes``."""
    returns = evaluate_policy(act, env_id, episodes, seed=seed, obs_mean=mean, obs_std=std)
    return float(normalized_score(returns, *refs).mean())


def train_authors(repo: Path, arrays, env_id, refs, seed: int, args) -> list[tuple[int, float, float]]:
    sys.path.insert(0, str(repo))
    try:
        from A2PR import A2PR as AuthorsA2PR  # the authors' agent
        from utils.buffer import ReplayBuffer
    finally:
        sys.path.remove(str(repo))
    torch.manual_seed(seed)
    np.random.seed(seed)  # their buffer samples with numpy's global generator
    obs_dim, action_dim = arrays["observations"].shape[1], arrays["actions"].shape[1]
    buffer = ReplayBuffer(obs_dim, action_dim, "cpu", env_id, scale=1, shift=0)
    buffer.D4RL_convert(dict(arrays))
    mean, std = buffer.normalize_states()  # their main.py: mean, std + 1e-3
    agent = AuthorsA2PR(
        state_dim=obs_dim,
        action_dim=action_dim,
        max_action=1.0,
        device="cpu",
        discount=args.discount,
        tau=0.005,
        policy_noise=0.2,
        noise_clip=0.5,
        policy_freq=2,
        actor_lr=3e-4,
        critic_lr=3e-4,
        alpha=args.alpha,
        mask=args.mask,
        vae_weight=args.vae_weight,
    )
    mean, std = mean.reshape(-1).astype(np.float32), std.reshape(-1).astype(np.float32)

    @torch.no_grad()
    def act(obs: np.ndarray) -> np.ndarray:
        agent.actor.eval()
        action = agent.actor(torch.as_tensor(obs, dtype=torch.float32))
        agent.actor.train()
        return (action[0] if isinstance(action, tuple) else action).numpy()

    curve, started = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        agent.train(buffer, 256)
        if step % args.eval_every == 0:
            seconds = time.perf_counter() - started
            value = score(act, env_id, refs, mean, std, args.episodes, 1000 * seed + step // args.eval_every)
            curve.append((step, value, seconds))
            print(f"authors  seed {seed} step {step}: {value:.1f} ({seconds:.0f} s)", flush=True)
    return curve


class _Evaluate(L.Callback):
    """policylab's side of the protocol: ``score`` every ``every`` steps, as for the authors' agent."""

    def __init__(self, env_id, refs, mean, std, seed: int, args) -> None:
        self.env_id, self.refs, self.mean, self.std, self.seed, self.args = env_id, refs, mean, std, seed, args
        self.curve: list[tuple[int, float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self.args.eval_every
        if step % every or (self.curve and self.curve[-1][0] == step):
            return
        seconds = time.perf_counter() - self.started
        pl_module.eval()
        value = score(pl_module.act, self.env_id, self.refs, self.mean, self.std, self.args.episodes,
                      1000 * self.seed + step // every)  # fmt: skip
        pl_module.train()
        self.curve.append((step, value, seconds))
        print(f"policylab seed {self.seed} step {step}: {value:.1f} ({seconds:.0f} s)", flush=True)


def train_policylab(env_id, refs, dataset: str, seed: int, args) -> list[tuple[int, float, float]]:
    """policylab's A2PR through ``Trainer.fit`` (the path a user runs), same values as the authors'."""
    L.seed_everything(seed, verbose=False)
    data = OfflineTransitionDataModule(dataset, batch_size=256, seed=seed).load()
    model = A2PR(
        data.obs_dim,
        data.action_dim,
        data.max_action,
        alpha=args.alpha,
        mask=args.mask,
        vae_weight=args.vae_weight,
        discount=args.discount,
    )
    mean, std = (t.numpy() for t in data.observation_statistics)
    evaluate = _Evaluate(env_id, refs, mean, std, seed, args)
    trainer = L.Trainer(
        max_steps=args.steps,
        callbacks=[evaluate],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    return evaluate.curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-repo", type=Path, required=True, help="a checkout of ltlhuuu/A2PR")
    parser.add_argument("--dataset", default="hopper-medium-replay-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--episodes", type=int, default=10)
    # the authors' README command for hopper: --alpha 2.5 --vae_weight 1.0 --mask 0.4 --discount 0.995
    parser.add_argument("--alpha", type=float, default=2.5)
    parser.add_argument("--vae-weight", type=float, default=1.0)
    parser.add_argument("--mask", type=float, default=0.4)
    parser.add_argument("--discount", type=float, default=0.995)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/a2pr_vs_authors"))
    args = parser.parse_args(argv)
    if not (args.authors_repo / "A2PR.py").is_file():
        parser.error(f"{args.authors_repo}: no A2PR.py there; give a checkout of github.com/ltlhuuu/A2PR")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    curves_file = args.out / "curves.csv"
    done: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    if curves_file.exists():
        with curves_file.open() as f:
            for row in csv.DictReader(f):
                key = (row["implementation"], int(row["seed"]))
                done.setdefault(key, []).append(
                    (int(row["step"]), float(row["normalized_score"]), float(row["seconds"]))
                )
    arrays, env_id, refs = dataset_arrays(args.dataset)
    for seed in args.seeds:
        for name in ("authors", "policylab"):
            if len(done.get((name, seed), [])) >= args.steps // args.eval_every:
                continue
            if name == "authors":
                curve = train_authors(args.authors_repo, arrays, env_id, refs, seed, args)
            else:
                curve = train_policylab(env_id, refs, args.dataset, seed, args)
            done[(name, seed)] = curve
            new = not curves_file.exists()
            with curves_file.open("a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(FIELDS)
                writer.writerows((name, seed, step, f"{value:.3f}", f"{sec:.1f}") for step, value, sec in curve)
    write_summary(args, done)


def write_summary(args, done) -> None:
    steps = sorted({step for curve in done.values() for step, _, _ in curve})
    lines = [
        f"A2PR, authors' code vs policylab: {args.dataset}, seeds {args.seeds}, {args.steps} steps, "
        f"{args.episodes} episodes per evaluation (alpha {args.alpha}, mask {args.mask}, discount {args.discount}, "
        f"vae_weight {args.vae_weight}).",
        "",
        "| step | authors mean | authors min..max | policylab mean | policylab min..max |",
        "|---|---|---|---|---|",
    ]
    for step in steps:
        cells = [str(step)]
        for name in ("authors", "policylab"):
            values = [v for (n, _), curve in done.items() if n == name for s, v, _ in curve if s == step]
            cells += [f"{statistics.mean(values):.1f}", f"{min(values):.1f}..{max(values):.1f}"] if values else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for name in ("authors", "policylab"):
        rates = [curve[-1][0] / curve[-1][2] for (n, _), curve in done.items() if n == name and curve]
        if rates:
            lines.append(f"\n{name}: {statistics.median(rates):.0f} steps/s (median over seeds, evaluation included)")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
