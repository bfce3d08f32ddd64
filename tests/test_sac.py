"""SAC: its math against independent formulas, the replay buffer, learning on a small task, resume."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from policylab.datamodules import TransitionBuffer
from policylab.losses import sac_actor_loss, sac_critic_target, sac_temperature_loss, squashed_gaussian_log_prob
from policylab.nn import TanhGaussianActor


@pytest.mark.parametrize("max_action", [1.0, 2.5])
def test_squashed_gaussian_log_prob_matches_torch_distributions(max_action):
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.rand(64, 3) * 2 - 1.5
    pre_tanh = mean + torch.randn(64, 3) * log_std.exp()
    reference = (
        TransformedDistribution(
            Normal(mean.double(), log_std.exp().double()), [TanhTransform(), AffineTransform(0.0, max_action)]
        )
        .log_prob(max_action * torch.tanh(pre_tanh.double()))
        .sum(-1)
    )
    ours = squashed_gaussian_log_prob(pre_tanh, mean, log_std, max_action)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


def test_squashed_gaussian_log_prob_is_finite_where_tanh_saturates():
    pre_tanh = torch.tensor([[30.0, -30.0]])
    value = squashed_gaussian_log_prob(pre_tanh, pre_tanh, torch.zeros(1, 2))
    # log(1 - tanh(30)^2) = log(4) - 60 - 2 log(1 + e^-60) ~ -58.6137; gaussian part at the mean: -log sqrt(2 pi)
    expected = 2 * (-0.5 * math.log(2 * math.pi)) - 2 * (math.log(4) - 60)
    assert math.isfinite(value.item()) and math.isclose(value.item(), expected, rel_tol=1e-5)


def test_sac_critic_target_by_hand():
    reward = torch.tensor([1.0, 0.5])
    terminal = torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[2.0, 7.0], [3.0, 5.0]])
    next_log_prob = torch.tensor([-1.0, 4.0])
    # row 0: 1 + 0.9 * (min(2, 3) - 0.2 * -1) = 1 + 0.9 * 2.2 = 2.98 ; row 1 is terminal: 0.5
    torch.testing.assert_close(
        sac_critic_target(reward, terminal, next_q, next_log_prob, 0.2, 0.9), torch.tensor([2.98, 0.5])
    )


def test_sac_actor_loss_by_hand():
    q_pi = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    log_prob = torch.tensor([-1.0, 2.0])
    # mean(0.5 * -1 - 0.5, 0.5 * 2 - (-2)) = mean(-1, 3) = 1
    assert math.isclose(sac_actor_loss(q_pi, log_prob, 0.5).item(), 1.0, rel_tol=1e-6)


def test_temperature_moves_alpha_toward_the_target_entropy():
    log_alpha = torch.zeros((), requires_grad=True)
    # entropy -log_prob = -5 is below the target -3: d loss / d log_alpha = -(5 - 3) < 0, alpha rises
    sac_temperature_loss(log_alpha, torch.full((8,), 5.0), target_entropy=-3.0).backward()
    assert math.isclose(log_alpha.grad.item(), -2.0, rel_tol=1e-6)
    log_alpha.grad = None
    # entropy 0.5 is above the target: gradient -(-0.5 - 3) = 3.5 > 0, alpha falls
    sac_temperature_loss(log_alpha, torch.full((8,), -0.5), target_entropy=-3.0).backward()
    assert math.isclose(log_alpha.grad.item(), 3.5, rel_tol=1e-6)


def test_tanh_gaussian_actor_samples_in_bounds_with_matching_log_prob():
    actor = TanhGaussianActor(5, 2, max_action=2.0, hidden_dims=(16,))
    obs = torch.randn(128, 5)
    action, log_prob = actor(obs, torch.Generator().manual_seed(0))
    assert action.abs().max() <= 2.0 and log_prob.shape == (128,)
    again, _ = actor(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(action, again)
    assert actor.deterministic(obs).shape == (128, 2)


def _rows(n, start=0.0):
    value = np.arange(start, start + n, dtype=np.float32)
    return {
        "obs": np.repeat(value[:, None], 2, 1),
        "action": value[:, None],
        "reward": value,
        "next_obs": np.repeat(value[:, None], 2, 1),
        "terminal": np.zeros(n),
        "timeout": np.zeros(n),
    }


def test_buffer_appends_keeps_initial_rows_and_wraps_over_appended_ones():
    initial = {k: v for k, v in _rows(3, start=100.0).items()}
    buffer = TransitionBuffer({**initial, "terminal": initial["terminal"], "timeout": initial["timeout"]}, capacity=6)
    assert len(buffer) == 3
    buffer.add(**_rows(2))
    assert len(buffer) == 5 and buffer.all().reward.tolist() == [100, 101, 102, 0, 1]
    buffer.add(**_rows(3, start=2.0))  # 2 fills the last row, 3 and 4 overwrite 0 and 1
    assert len(buffer) == 6 and buffer.all().reward.tolist() == [100, 101, 102, 3, 4, 2]
    assert buffer.appended == 5

    restored = TransitionBuffer({**initial}, capacity=6)
    restored.restore_appended(buffer.appended_rows(), buffer.appended)
    torch.testing.assert_close(restored.data, buffer.data)
    restored.add(**_rows(1, start=9.0))  # continues the ring where the original stopped
    assert restored.all().reward.tolist() == [100, 101, 102, 3, 4, 9]
    old_checkpoint = TransitionBuffer({**initial}, capacity=6)  # no ring position saved: it follows the count
    old_checkpoint.restore_appended(buffer.appended_rows(), buffer.appended)
    torch.testing.assert_close(old_checkpoint.data, buffer.data)

    # into a larger buffer (a run continued with a larger capacity): oldest first, nothing invalid
    larger = TransitionBuffer({**initial}, capacity=8)
    larger.restore_appended(buffer.appended_rows(), buffer.appended, buffer.next_position)
    assert larger.all().reward.tolist() == [100, 101, 102, 2, 3, 4]
    larger.add(**_rows(3, start=5.0))  # 5 and 6 fill the room, 7 overwrites the oldest (2)
    assert larger.all().reward.tolist() == [100, 101, 102, 7, 3, 4, 5, 6]
    # into a smaller one: the newest that fit
    smaller = TransitionBuffer({**initial}, capacity=5)
    smaller.restore_appended(larger.appended_rows(), larger.appended, larger.next_position)
    assert smaller.all().reward.tolist() == [100, 101, 102, 6, 7]
    smaller.add(**_rows(1, start=8.0))
    assert smaller.all().reward.tolist() == [100, 101, 102, 8, 7]


def test_empty_buffer_refuses_to_sample():
    buffer = TransitionBuffer(obs_dim=2, action_dim=1, capacity=4)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(2)


def test_sac_learns_to_balance_the_inverted_pendulum():
    """Online SAC through a plain Trainer: return of the deterministic policy rises from ~5
    (random-initialized, the pole falls at once) to well above it within 1500 steps."""
    import lightning as L

    from policylab.callbacks import EnvInteraction
    from policylab.datamodules import ReplayBufferDataModule
    from policylab.envs.evaluation import evaluate_policy
    from policylab.modules import SAC

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        L.seed_everything(0)
        data = ReplayBufferDataModule("InvertedPendulum-v5", capacity=10_000, batch_size=64).load()
        model = SAC(
            data.obs_dim,
            data.action_dim,
            data.max_action,
            actor_hidden_dims=(64, 64),
            critic_hidden_dims=(64, 64),
            actor_lr=1e-3,
            critic_lr=1e-3,
            alpha_lr=1e-3,
        )
        before = evaluate_policy(model.act, "InvertedPendulum-v5", 5, seed=1).mean()
        interaction = EnvInteraction(random_steps=500, seed=0)
        trainer = L.Trainer(
            max_steps=1500,
            logger=False,
            enable_checkpointing=False,
            callbacks=[interaction],
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(model, data)
        after = evaluate_policy(model.act, "InvertedPendulum-v5", 5, seed=1).mean()
    finally:
        torch.set_num_threads(threads)
    assert interaction.env_steps == 500 + 1500 and len(data.buffer) == 2000
    assert before < 15 and after > 40, (before, after)


def test_sac_cli_resume_keeps_the_replay_buffer(tmp_path):
    from conftest import ROOT, run_cli

    args = [
        "fit",
        "--config",
        str(ROOT / "configs/sac_hopper.yaml"),
        "--trainer.callbacks.init_args.random_steps",
        "100",
        "--data.init_args.capacity",
        "5000",
        "--evaluation.every_n_steps",
        "100",
        "--evaluation.n_episodes",
        "2",
        "--trainer.log_every_n_steps",
        "50",
        "--trainer.enable_progress_bar",
        "false",
    ]
    first = run_cli(*args, "--trainer.max_steps", "200", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / "runs/sac_hopper/version_0/checkpoints/last.ckpt"
    before = torch.load(last, weights_only=True)
    rows_before = before["ReplayBufferDataModule"]["appended_rows"]
    assert rows_before.shape[0] == 300 and before["ReplayBufferDataModule"]["appended"] == 300

    second = run_cli(*args, "--trainer.max_steps", "300", "--ckpt_path", "last", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    after = torch.load(last, weights_only=True)
    assert after["global_step"] == 300
    rows_after = after["ReplayBufferDataModule"]["appended_rows"]
    assert rows_after.shape[0] == 400
    torch.testing.assert_close(rows_after[:300], rows_before, rtol=0, atol=0)  # nothing collected was lost
    interaction = next(v for k, v in after["callbacks"].items() if k.startswith("EnvInteraction"))
    assert interaction["env_steps"] == 400
