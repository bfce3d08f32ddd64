"""What the diagnostic benchmarks (``cdsa_ablation.py``, ``famo2o_coefficients.py``) read from a
sweep's run folder: the trained module in one of its checkpoints, the dataset it trained on, and
fresh evaluations of a policy on that dataset's environment."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from policylab.datamodules import OfflineTransitionDataModule
from policylab.envs.evaluation import evaluate_policy
from policylab.envs.scores import normalized_score, reference_scores
from policylab.modules.offline.cdsa import load_policy_checkpoint


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The run folders and the evaluation settings both diagnostics take."""
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=70_000)
    parser.add_argument("--states", type=int, default=5000)


def load_run(run: Path, checkpoint: str = "last.ckpt") -> tuple[Path, torch.nn.Module, OfflineTransitionDataModule]:
    """``(checkpoint path, module in eval mode, loaded dataset)`` of the run folder ``run``; the
    checkpoint is the last match of ``checkpoint`` (a name or glob) under ``<run>/checkpoints``."""
    matches = sorted((run / "checkpoints").glob(checkpoint))
    if not matches:
        sys.exit(f"error: no checkpoint {checkpoint!r} under {run / 'checkpoints'}")
    dataset = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["dataset"]
    return matches[-1], load_policy_checkpoint(str(matches[-1])), OfflineTransitionDataModule(dataset).load()


def dataset_states(data: OfflineTransitionDataModule, n: int, seed: int) -> torch.Tensor:
    """``n`` normalized states drawn from the dataset with generator seed ``seed``."""
    return data.buffer.sample(n, torch.Generator().manual_seed(seed)).obs


def normalized_scores(
    act: Callable[[np.ndarray], np.ndarray], data: OfflineTransitionDataModule, episodes: int, seed: int
) -> np.ndarray:
    """The D4RL-normalized score of each of ``episodes`` episodes (seeds ``seed + i``) of ``act``,
    which maps normalized observations to actions, in the dataset's environment."""
    refs = data.reference_scores or reference_scores(data.env_id)
    mean, std = (t.numpy() for t in data.observation_statistics)
    returns = evaluate_policy(act, data.env_id, episodes, seed=seed, obs_mean=mean, obs_std=std)
    return np.asarray(normalized_score(returns, *refs))
