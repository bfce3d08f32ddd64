"""CDSA: score matching against analytic scores, the adjustment by hand, the plug-in on a
deliberately perturbed policy of the toy task, the backbone loaded from a checkpoint."""

import lightning as L
import numpy as np
import pytest
import torch
from conftest import expert_action, quiet_trainer, write_expert_toy

from policylab.datamodules import OfflineTransitionDataModule
from policylab.losses.cdsa import (
    cdsa_adjust_action,
    denoise,
    denoising_score_matching_loss,
    geometric_noise_levels,
)
from policylab.modules.offline import BC
from policylab.modules.offline.cdsa import CDSA, load_policy_checkpoint
from policylab.nn.score import NoiseConditionalScore


# ----------------------------------------------------------------------------- the pieces by hand
def test_denoising_score_matching_loss_by_hand():
    score = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    noise = torch.tensor([[0.5, 1.0], [1.0, -1.0]])
    sigma = torch.tensor([0.5, 0.25])
    # row 1: 0.5 * [1, -2] + [0.5, 1] = [1, 0] -> 1;  row 2: 0.25 * [0, 4] + [1, -1] = [1, 0] -> 1
    assert denoising_score_matching_loss(score, noise, sigma).item() == pytest.approx(0.5 * (1 + 1) / 2)


def test_geometric_noise_levels_have_equal_ratios():
    torch.testing.assert_close(geometric_noise_levels(1.0, 0.01, 3), torch.tensor([1.0, 0.1, 0.01]))
    assert geometric_noise_levels(0.5, 0.5, 1).tolist() == [0.5]
    with pytest.raises(ValueError, match="sigma_min"):
        geometric_noise_levels(0.1, 1.0, 3)


# ----------------------------------------------------------------------------- a 1-D Gaussian mixture
MEANS, TAU, WEIGHTS = np.array([-1.0, 1.0]), 0.2, np.array([0.3, 0.7])


def _mixture_samples(n, rng):
    component = rng.choice(2, size=n, p=WEIGHTS)
    return MEANS[component] + TAU * rng.normal(size=n)


def _mixture_score(x, sigma):
    """grad log of the mixture smoothed by N(0, sigma^2): components N(mu_k, tau^2 + sigma^2)."""
    var = TAU**2 + sigma**2
    log_w = np.log(WEIGHTS)[None] - 0.5 * (x[:, None] - MEANS[None]) ** 2 / var
    resp = np.exp(log_w - log_w.max(1, keepdims=True))
    resp /= resp.sum(1, keepdims=True)
    return (resp * -(x[:, None] - MEANS[None]) / var).sum(1)


def test_the_analytic_score_minimizes_the_loss_with_the_predicted_excess():
    """E[L(s* + d)] - E[L(s*)] = sigma^2 d^2 / 2 for a constant shift d, since E[eps | x~] = -sigma s*(x~)."""
    rng = np.random.default_rng(0)
    sigma, shift, n = 0.3, 1.0, 400_000
    clean, noise = _mixture_samples(n, rng), rng.normal(size=n)
    best = _mixture_score(clean + sigma * noise, sigma)

    def loss(score):
        return denoising_score_matching_loss(torch.tensor(score)[:, None], torch.tensor(noise)[:, None], sigma).item()

    assert loss(best + shift) - loss(best) == pytest.approx(0.5 * sigma**2 * shift**2, abs=3e-3)
    unsmoothed = _mixture_score(clean + sigma * noise, 0.0)  # the clean data's score is worse
    assert loss(unsmoothed) > loss(best) + 0.01


def test_learned_score_approaches_the_analytic_score_of_a_1d_mixture():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    data = torch.tensor(_mixture_samples(50_000, rng), dtype=torch.float32)[:, None]
    levels = geometric_noise_levels(0.6, 0.15, 3)
    model = NoiseConditionalScore(1, hidden_dims=(64, 64))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(900):
        x = data[torch.randint(len(data), (256,))]
        sigma = levels[torch.randint(3, (256,))][:, None]
        noise = torch.randn_like(x)
        loss = denoising_score_matching_loss(model(x + sigma * noise, sigma), noise, sigma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = np.linspace(-1.8, 1.8, 181)
    for sigma in levels.tolist():
        exact = _mixture_score(grid, sigma)
        # weighted by the smoothed density: the Fisher divergence the loss measures, relative
        density = (WEIGHTS[None] * np.exp(-0.5 * (grid[:, None] - MEANS[None]) ** 2 / (TAU**2 + sigma**2))).sum(1)
        with torch.no_grad():
            learned = model(torch.tensor(grid, dtype=torch.float32)[:, None], sigma).squeeze(1).numpy()
        relative = (density * (learned - exact) ** 2).sum() / (density * exact**2).sum()
        assert relative < 0.1, (sigma, relative)


# ----------------------------------------------------------------------------- the adjustment by hand
def test_action_steps_shrink_the_distance_to_a_gaussian_behaviour_by_the_tweedie_factor():
    """Behaviour a | s ~ N(tanh(s), tau^2): at level sigma the score is -(a - mu) / (tau^2 + sigma^2),
    so each step multiplies the distance by 1 - eta sigma^2 / (tau^2 + sigma^2) = 1 - 0.5 * 0.01 / 0.0125 = 0.6."""
    tau = 0.05
    obs = torch.tensor([[0.3], [-0.5]])
    mu = torch.tanh(obs)

    def score(a, sigma, s):
        return -(a - torch.tanh(s)) / (tau**2 + sigma**2)

    action = mu + torch.tensor([[0.5], [-0.25]])
    adjusted = cdsa_adjust_action(obs, action, score, sigma=0.1, step_size=0.5, steps=2)
    torch.testing.assert_close(adjusted - mu, torch.tensor([[0.5], [-0.25]]) * 0.36)
    # annealed denoising with eta = 1 at one level is Tweedie's mean: tau^2 / (tau^2 + sigma^2) of the distance
    tweedie = denoise(action, lambda a, sigma: score(a, sigma, obs), [0.1], step_size=1.0)
    torch.testing.assert_close(tweedie - mu, torch.tensor([[0.5], [-0.25]]) * 0.2)


def test_state_guidance_by_hand():
    """s' = s + 0.5 a, I(s, s') = (s' - s) / 0.5, states ~ N(1, 0.03): from s = 0, a = 0.4 the next
    state 0.2 has smoothed score -(0.2 - 1) / (0.03 + 0.01) = 20 at sigma 0.1; it is denoised to
    0.2 + 0.01 * 20 = 0.4, and the action becomes 0.4 + (0.8 - 0.4) = 0.8."""
    adjusted = cdsa_adjust_action(
        torch.tensor([[0.0]]),
        torch.tensor([[0.4]]),
        action_score=lambda a, sigma, s: torch.zeros_like(a),
        steps=0,
        state_score=lambda x, sigma: -(x - 1.0) / (0.03 + sigma**2),
        forward_model=lambda s, a: s + 0.5 * a,
        inverse_dynamics=lambda s, nxt: (nxt - s) / 0.5,
        state_sigma=0.1,
        state_weight=1.0,
    )
    torch.testing.assert_close(adjusted, torch.tensor([[0.8]]))
    with pytest.raises(ValueError, match="together"):
        cdsa_adjust_action(
            torch.zeros(1, 1), torch.zeros(1, 1), lambda a, sig, s: a, state_score=lambda x, sig: x, state_weight=1.0
        )


# ----------------------------------------------------------------------------- the toy offline task
def toy_reward(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The toy data's reward, 1 - 5 ||a - expert(s)||^2 (tests/conftest.py writes it)."""
    return 1.0 - 5.0 * ((action - expert_action(obs)) ** 2).sum(1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy data module and CDSA's score models trained on it (500 steps)."""
    path = write_expert_toy(tmp_path_factory.mktemp("toy") / "toy.npz", rows=10000)
    dm = OfflineTransitionDataModule(str(path), batch_size=256, normalize_observations=False)
    L.seed_everything(0)
    cdsa = CDSA(dm.obs_dim, dm.action_dim, dm.max_action, hidden_dims=(64, 64))
    fixed = dm.buffer.sample(2048, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = cdsa.score_losses(fixed)["dsm_action"].item()
    quiet_trainer(max_steps=500).fit(cdsa, datamodule=dm)
    with torch.no_grad():
        after = cdsa.score_losses(fixed)["dsm_action"].item()
    return dm, cdsa, before, after


def test_score_models_learn_and_move_off_data_actions_toward_the_data(toy):
    dm, cdsa, before, after = toy
    assert cdsa.global_step == 500
    assert after < 0.8 * before, (before, after)  # the loss has a floor: E||eps||^2 / 2 is not all explainable
    obs = torch.randn(2000, 6, generator=torch.Generator().manual_seed(1))
    expert = torch.as_tensor(expert_action(obs.numpy()))
    off_data = expert + 0.3 * torch.sign(torch.randn(expert.shape, generator=torch.Generator().manual_seed(2)))
    off_data = off_data.clamp(-1, 1)
    with torch.no_grad():
        adjusted = cdsa.adjust(obs, off_data)
    distance_before = (off_data - expert).abs().mean().item()
    distance_after = (adjusted - expert).abs().mean().item()
    assert distance_after < 0.9 * distance_before, (distance_before, distance_after)
    # without a backbone it acts with its denoised behaviour action (from a = 0), near the expert
    with torch.no_grad():
        behavior_error = (cdsa.behavior_action(obs) - expert).abs().mean().item()
    assert behavior_error < 0.35 * expert.abs().mean().item(), (behavior_error, expert.abs().mean().item())


def test_plugin_improves_a_perturbed_policy_loaded_from_its_checkpoint(toy, tmp_path):
    dm, trained, _, _ = toy
    L.seed_everything(0)
    policy = BC(dm.obs_dim, dm.action_dim, dm.max_action, actor_hidden_dims=(64, 64), actor_lr=1e-3)
    quiet_trainer(max_steps=400).fit(policy, datamodule=dm)
    with torch.no_grad():  # deliberately perturbed: every action pushed off the data by the last layer's bias
        policy.actor.net[-1].bias.add_(torch.tensor([0.5, -0.5]))
    # a checkpoint as `python cli.py fit` writes it: weights and hyperparameters with the class path
    path = tmp_path / "bc.ckpt"
    hparams = {**dict(policy.hparams), "_class_path": "policylab.modules.offline.BC"}
    torch.save({"state_dict": policy.state_dict(), "hyper_parameters": hparams, "global_step": 400}, path)

    cdsa = CDSA(dm.obs_dim, dm.action_dim, dm.max_action, backbone_checkpoint=str(path), hidden_dims=(64, 64))
    own = {k: v for k, v in trained.state_dict().items() if not k.startswith("backbone.")}
    cdsa.load_state_dict({**cdsa.state_dict(), **own})
    assert not any(p.requires_grad for p in cdsa.backbone.parameters())

    obs = np.random.default_rng(3).normal(size=(4000, 6)).astype(np.float32)
    base = policy.eval().act(obs)
    np.testing.assert_array_equal(cdsa.backbone.act(obs), base)  # the same policy came back
    adjusted = cdsa.eval().act(obs)
    base_reward, adjusted_reward = toy_reward(obs, base).mean(), toy_reward(obs, adjusted).mean()
    assert adjusted_reward > base_reward + 0.1, (base_reward, adjusted_reward)


def test_a_backbone_built_under_lightning_cli_keeps_its_own_hyperparameters(tmp_path):
    """LightningCLI hands the module it instantiates its hyperparameters through a context variable;
    an IQL backbone loaded inside CDSA's __init__ there must record IQL's, not CDSA's (its
    ``policy_action`` reads ``deterministic_actor``)."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    from policylab.modules import IQL

    iql = IQL(6, 2, deterministic_actor=True)
    path = tmp_path / "iql.ckpt"
    hparams = {**dict(iql.hparams), "_class_path": "policylab.modules.IQL"}
    torch.save({"state_dict": iql.state_dict(), "hyper_parameters": hparams, "global_step": 1}, path)
    with _given_hyperparameters_context({"backbone_checkpoint": str(path)}, "lightning.pytorch.cli.instantiate_module"):
        backbone = load_policy_checkpoint(str(path))
    assert backbone.hparams.deterministic_actor is True and "backbone_checkpoint" not in backbone.hparams
    obs = torch.randn(4, 6)
    torch.testing.assert_close(backbone.policy_action(obs), iql.actor(obs))


def test_unusable_backbone_checkpoints_are_refused(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"obs_dim": 3}}, path)
    with pytest.raises(ValueError, match="_class_path"):
        CDSA(3, 1, backbone_checkpoint=str(path))
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "torch.nn.Linear"}}, path)
    with pytest.raises(ValueError, match="not a policylab module"):
        CDSA(3, 1, backbone_checkpoint=str(path))
