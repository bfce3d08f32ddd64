"""The data shipped in the package (Hopper, HalfCheetah and Walker2d medium-replay; Walker2d's expert
policy): found by name, consistent with its card, and its policies score what the card says."""

import re

import numpy as np
import pytest
import torch

from policylab.data import bundle_dir, bundled_dataset
from policylab.datamodules import OfflineTransitionDataModule, read_d4rl_hdf5
from policylab.datasets.build import BuildConfig, dataset_statistics, evaluate_snapshot

# family, env, obs and action dimensions, D4RL reference scores, episodes re-scored for the card check
BUNDLES = [
    ("hopper", "Hopper-v5", 11, 3, (-20.272305, 3234.3), 20),
    ("halfcheetah", "HalfCheetah-v5", 17, 6, (-280.178953, 12135.0), 5),  # 1000 steps each: 5 episodes
    ("walker2d", "Walker2d-v5", 17, 6, (1.629008, 4592.3), 10),
]


@pytest.mark.parametrize("family, env_id, obs_dim, action_dim, refs, episodes", BUNDLES)
def test_bundled_medium_replay_loads_by_name_and_matches_its_card(family, env_id, obs_dim, action_dim, refs, episodes):
    path = bundled_dataset(f"{family}-medium-replay-v5")
    assert path is not None and path.is_file()
    dm = OfflineTransitionDataModule(f"{family}-medium-replay-v5").load()
    assert dm.env_id == env_id and dm.obs_dim == obs_dim and dm.action_dim == action_dim
    assert dm.reference_scores == refs
    arrays, attrs = read_d4rl_hdf5(path)
    stats = dataset_statistics(arrays, env_id)
    if "next_observations" in arrays:  # every row is a transition
        assert len(dm.buffer) == stats["transitions"]
    else:  # shipped without them to fit 30 MB (Walker2d): D4RL's rule drops the rows at timeouts and the last
        assert len(dm.buffer) == stats["transitions"] - 1 - int(arrays["timeouts"][:-1].sum())
        assert "without infos and next_observations" in (bundle_dir(family) / "README.md").read_text()
    card = (bundle_dir(family) / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith(f"| {path.name}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) == stats["transitions"] and int(cells[2]) == stats["episodes"]
    assert float(cells[3]) == round(stats["return_mean"], 1) and float(cells[7]) == round(
        stats["normalized_score_mean"], 1
    )
    assert attrs["medium_policy_step"] > 0 and not np.isnan(arrays["observations"]).any()


@pytest.mark.parametrize("family, env_id, obs_dim, action_dim, refs, episodes", BUNDLES)
def test_bundled_medium_policy_scores_as_its_card_says(family, env_id, obs_dim, action_dim, refs, episodes):
    snapshot = torch.load(bundle_dir(family) / "medium_policy.pt", weights_only=True)
    assert 25 <= snapshot["score"] <= 60  # D4RL's medium policies score about a third of expert (hopper 44)
    card = (bundle_dir(family) / "README.md").read_text()
    assert re.search(
        rf"\| medium_policy.pt \| {snapshot['step']} \| {snapshot['env_steps']} \| {snapshot['score']:.1f} \|", card
    )
    # fresh deterministic episodes, as the builder scored it (20)
    score = evaluate_snapshot(BuildConfig(family=family), snapshot, episodes=episodes)
    assert abs(score - snapshot["score"]) < 10, (score, snapshot["score"])


def test_the_bundled_walker2d_expert_policy_is_the_bundles_expert_and_scores_as_its_card_says():
    from policylab.datasets.build import bundle_policies

    bundle = bundle_dir("walker2d")
    picked = bundle_policies(BuildConfig(family="walker2d", policies_from=str(bundle)))
    expert = torch.load(bundle / "expert_policy.pt", weights_only=True)
    assert picked["expert"]["path"].endswith("expert_policy.pt") and picked["expert"]["step"] == expert["step"]
    assert expert["score"] >= 90 and picked["final"]["score"] < 90  # the 300k-step final policy is not
    card = (bundle / "README.md").read_text()
    assert (
        f"SAC step {expert['step']} ({expert['env_steps']} env steps), normalized score {expert['score']:.1f}" in card
    )
    score = evaluate_snapshot(BuildConfig(family="walker2d"), expert, episodes=5)
    assert abs(score - expert["score"]) < 10, (score, expert["score"])
