"""PRDC: its loss and nearest-neighbour target by hand, the two exact searches agree, it learns a toy task."""

import importlib.util

import lightning as L
import numpy as np
import pytest
import torch
from conftest import expert_action, quiet_trainer, write_expert_toy

from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses import dataset_constraint_key, prdc_actor_loss
from policylab.modules.offline import PRDC
from policylab.nn.neighbors import ExactNeighbors, KDTreeNeighbors, neighbor_search

HAS_SCIPY = importlib.util.find_spec("scipy") is not None
needs_scipy = pytest.mark.skipif(not HAS_SCIPY, reason="the KD-tree search needs scipy")


# ----------------------------------------------------------------------------- the loss by hand
def test_prdc_actor_loss_by_hand():
    q_pi = torch.tensor([1.0, -3.0])  # mean |Q| = 2 -> lambda = 2.5 / 2 = 1.25; mean Q = -1
    pi = torch.tensor([[0.5, 0.0], [0.0, 0.0]], requires_grad=True)
    neighbor = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # squared errors 0.25, 0, 0, 1 -> mean 0.3125
    loss, lam, constraint = prdc_actor_loss(q_pi, pi, neighbor, alpha=2.5)
    assert lam.item() == pytest.approx(1.25)
    assert constraint.item() == pytest.approx(0.3125)
    assert loss.item() == pytest.approx(1.25 + 0.3125)
    loss.backward()  # d/dpi of mean (pi - a^)^2 over 4 entries = (pi - a^) / 2; Q is a constant here
    torch.testing.assert_close(pi.grad, torch.tensor([[0.25, 0.0], [0.0, -0.5]]))


def test_dataset_constraint_key_scales_states_only():
    key = dataset_constraint_key(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5]]), beta=2.0)
    torch.testing.assert_close(key, torch.tensor([[2.0, -4.0, 0.5]]))


def test_neighbor_action_by_hand_may_come_from_another_state():
    """Dataset (s^, a^): (0, -1), (0.4, 0.9), (3, 0.8). For s = 0 and pi(s) = 0.9 the keys (beta=2)
    are (0, -1), (0.8, 0.9), (6, 0.8) against (0, 0.9): squared distances 3.61, 0.64, 36.01, so the
    target is 0.9, the action seen at s^ = 0.4, not the -1 seen at s itself (TD3+BC's target)."""
    model = PRDC(1, 1, neighbor_search="exact")
    model.set_dataset(torch.tensor([[0.0], [0.4], [3.0]]), torch.tensor([[-1.0], [0.9], [0.8]]))
    action, distance = model.nearest_dataset_action(torch.tensor([[0.0], [3.0]]), torch.tensor([[0.9], [-1.0]]))
    # second query (6, -1): squared distances 36, 27.04 + 3.61 = 30.65, 3.24 -> 0.8, at distance 1.8
    torch.testing.assert_close(action, torch.tensor([[0.9], [0.8]]))
    torch.testing.assert_close(distance, torch.tensor([0.8, 1.8]))


# ----------------------------------------------------------------------------- the two searches
def _brute_force(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Nearest key in float64, smallest index among exact ties (written with numpy, not torch)."""
    q, k = queries.astype(np.float64), keys.astype(np.float64)
    out = np.empty(len(q), np.int64)
    for i, row in enumerate(q):
        d = ((k - row) ** 2).sum(axis=1)
        out[i] = np.flatnonzero(d == d.min())[0]
    return out


def _keys_with_ties(rng):
    """Gaussian keys, with duplicated rows and queries placed exactly halfway between two keys."""
    keys = rng.normal(size=(3000, 5)).astype(np.float32)
    keys[2500:2510] = keys[10:20]  # duplicates: the smaller index must win
    queries = rng.normal(size=(200, 5)).astype(np.float32)
    queries[:10] = keys[10:20]
    # exact ties between distinct keys: integer keys, a query at the midpoint (exact in float32/64)
    keys[100], keys[2900] = [3, 3, 3, 3, 3], [3, 3, 3, 3, 5]
    queries[10] = [3, 3, 3, 3, 4]
    return keys, queries


def test_exact_search_matches_float64_brute_force_with_ties():
    rng = np.random.default_rng(0)
    keys, queries = _keys_with_ties(rng)
    expected = _brute_force(queries, keys)
    assert expected[10] == 100 and (expected[:10] == np.arange(10, 20)).all()
    for chunk in (3000, 257, 1):  # one chunk, uneven chunks, one key per chunk
        found = ExactNeighbors(torch.from_numpy(keys), chunk_size=chunk, candidates=4).query(torch.from_numpy(queries))
        np.testing.assert_array_equal(found.numpy(), expected)


@needs_scipy
def test_kdtree_and_exact_search_give_identical_indices():
    rng = np.random.default_rng(1)
    keys, queries = _keys_with_ties(rng)
    kdtree = KDTreeNeighbors(torch.from_numpy(keys)).query(torch.from_numpy(queries))
    exact = neighbor_search("exact", torch.from_numpy(keys), chunk_size=700).query(torch.from_numpy(queries))
    np.testing.assert_array_equal(kdtree.numpy(), exact.numpy())
    np.testing.assert_array_equal(kdtree.numpy(), _brute_force(queries, keys))


@needs_scipy
def test_kdtree_and_exact_prdc_give_identical_actions_and_losses():
    torch.manual_seed(0)
    obs, action = torch.randn(5000, 4), torch.rand(5000, 2) * 2 - 1
    models = {}
    for kind in ("kdtree", "exact"):
        torch.manual_seed(1)
        models[kind] = PRDC(4, 2, neighbor_search=kind, actor_hidden_dims=(32,), critic_hidden_dims=(32,))
        models[kind].set_dataset(obs, action)
    batch_obs = torch.randn(256, 4)
    pi = models["exact"].actor(batch_obs)
    a_tree, d_tree = models["kdtree"].nearest_dataset_action(batch_obs, pi)
    a_exact, d_exact = models["exact"].nearest_dataset_action(batch_obs, pi)
    assert torch.equal(a_tree, a_exact) and torch.equal(d_tree, d_exact)


def test_kdtree_without_scipy_says_what_to_do():
    with pytest.raises(ValueError, match="neighbor_search='exact'"):
        PRDC(3, 1, neighbor_search="kdtree", cuda_graph=True)
    with pytest.raises(ValueError, match="'kdtree' or 'exact'"):
        PRDC(3, 1, neighbor_search="ball")
    if not HAS_SCIPY:
        with pytest.raises(ImportError, match="needs scipy"):
            PRDC(3, 1, neighbor_search="kdtree")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are checked on a CUDA device")
def test_exact_search_does_not_sync_with_the_host():
    keys = torch.randn(100_000, 14, device="cuda")
    search = ExactNeighbors(keys, chunk_size=8192)
    queries = torch.randn(256, 14, device="cuda")
    search.query(queries)  # warm-up (allocations, kernels)
    torch.cuda.set_sync_debug_mode("error")
    try:
        index = search.query(queries)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = torch.cdist(queries.double(), keys.double()).argmin(1)
    assert torch.equal(index, expected)


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory):
    return write_expert_toy(tmp_path_factory.mktemp("toy") / "toy.npz", rows=10000)


def test_prdc_critic_loss_falls_and_actor_imitates(toy_npz):
    L.seed_everything(0)
    dm = OfflineTransitionDataModule(str(toy_npz), batch_size=256, normalize_observations=False)
    model = PRDC(
        dm.obs_dim,
        dm.action_dim,
        dm.max_action,
        discount=0.9,
        neighbor_search="exact",
        actor_hidden_dims=(64, 64),
        critic_hidden_dims=(64, 64),
    )
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    expert = torch.as_tensor(expert_action(fixed.obs.numpy()))
    data = dm.buffer.all()
    model.set_dataset(data.obs, data.action)  # fit builds the same key set again at setup

    def measure():
        with torch.no_grad():
            pi = model.actor(fixed.obs)
            distance = model.nearest_dataset_action(fixed.obs, pi)[1].mean().item()
            return model.critic_loss(fixed)[0].item(), (pi - expert).pow(2).mean().item(), distance

    critic_before, imitation_before, distance_before = measure()
    quiet_trainer(max_steps=1500).fit(model, datamodule=dm)
    critic_after, imitation_after, distance_after = measure()
    assert model.global_step == 1500
    assert critic_after < 0.5 * critic_before, (critic_before, critic_after)
    assert imitation_after < 0.1 * imitation_before and imitation_after < 0.02, (imitation_before, imitation_after)
    # the policy's state-action pairs moved onto the data: d_beta(s, pi(s)) shrank
    assert distance_after < 0.5 * distance_before, (distance_before, distance_after)
    (val,) = quiet_trainer(max_steps=1).validate(model, datamodule=dm, verbose=False)
    assert val["val/neighbor_distance"] == pytest.approx(distance_after, rel=0.5), val
