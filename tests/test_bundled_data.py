"""The Hopper data shipped in the package: found by name, consistent with its card, and its medium
policy scores what the card says."""

import re

import numpy as np
import torch

from policylab.data import bundle_dir, bundled_dataset
from policylab.datamodules import OfflineTransitionDataModule, read_d4rl_hdf5
from policylab.datasets.build import BuildConfig, dataset_statistics, evaluate_snapshot


def test_bundled_medium_replay_loads_by_name_and_matches_its_card():
    path = bundled_dataset("hopper-medium-replay-v5")
    assert path is not None and path.is_file()
    dm = OfflineTransitionDataModule("hopper-medium-replay-v5").load()
    assert dm.env_id == "Hopper-v5" and dm.obs_dim == 11 and dm.action_dim == 3
    assert dm.reference_scores == (-20.272305, 3234.3)
    arrays, attrs = read_d4rl_hdf5(path)
    stats = dataset_statistics(arrays, "Hopper-v5")
    assert len(dm.buffer) == stats["transitions"]  # every row has next_observations: no row dropped
    card = (bundle_dir("hopper") / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith(f"| {path.name}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) == stats["transitions"] and int(cells[2]) == stats["episodes"]
    assert float(cells[3]) == round(stats["return_mean"], 1) and float(cells[7]) == round(
        stats["normalized_score_mean"], 1
    )
    assert attrs["medium_policy_step"] > 0 and not np.isnan(arrays["observations"]).any()


def test_bundled_medium_policy_scores_as_its_card_says():
    snapshot = torch.load(bundle_dir("hopper") / "medium_policy.pt", weights_only=True)
    assert 25 <= snapshot["score"] <= 60  # D4RL's hopper medium policy scores about 44
    card = (bundle_dir("hopper") / "README.md").read_text()
    assert re.search(
        rf"\| medium_policy.pt \| {snapshot['step']} \| {snapshot['env_steps']} \| {snapshot['score']:.1f} \|", card
    )
    # 20 fresh deterministic episodes, as the builder scored it
    score = evaluate_snapshot(BuildConfig(), snapshot, episodes=20)
    assert abs(score - snapshot["score"]) < 10, (score, snapshot["score"])
