import numpy as np
import pytest

from policylab.envs import evaluate_policy, make_env, normalized_score, reference_scores


def test_normalized_score_reference_values():
    # d4rl/infos.py hopper: REF_MIN -20.272305, REF_MAX 3234.3
    assert reference_scores("Hopper-v5") == reference_scores("hopper-medium-replay-v2") == (-20.272305, 3234.3)
    ref_min, ref_max = reference_scores("Hopper-v5")
    assert normalized_score(ref_min, ref_min, ref_max) == 0.0
    assert normalized_score(ref_max, ref_min, ref_max) == pytest.approx(100.0)
    # 1607.0139475 is half-way: (1607.0139475 + 20.272305) / 3254.572305 = 0.5
    assert normalized_score(1607.0139475, ref_min, ref_max) == pytest.approx(50.0)
    assert reference_scores("walker2d-medium-v2") == (1.629008, 4592.3)
    assert reference_scores("CartPole-v1") is None


def test_unknown_env_id_names_it():
    with pytest.raises(ValueError, match="'Hoper-v5'.*Hopper-v5"):
        make_env("Hoper-v5")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"])
def test_v5_envs_build(env_id):
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    env.close()


def test_normalizing_wrapper_applies_fixed_statistics():
    raw = make_env("Hopper-v5")
    obs, _ = raw.reset(seed=3)
    mean, std = np.full(11, 0.5, np.float32), np.full(11, 2.0, np.float32)
    wrapped = make_env("Hopper-v5", mean, std)
    obs_n, _ = wrapped.reset(seed=3)
    np.testing.assert_allclose(obs_n, (obs - 0.5) / 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        make_env("Hopper-v5", np.zeros(5), np.ones(5))


def test_vectorized_evaluation_equals_sequential_episodes():
    def policy(obs):
        return np.tanh(obs[:, :3])

    returns = evaluate_policy(policy, "Hopper-v5", n_episodes=3, seed=5)
    for i in range(3):
        env = make_env("Hopper-v5")
        obs, _ = env.reset(seed=5 + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs[None])[0].astype(np.float32))
            total += r
            done = term or trunc
        assert returns[i] == pytest.approx(total)
