"""EGPO: the online IPO loss against hand numbers; preferences against y'' as the authors' code forms
them; the extragradient step schedule against a two-step computation written out by hand (SGD and
Adam, both gradient points); a run resumed between a half step and its full step ends where the
uninterrupted run does; learning on the addition task (held-out prompts)."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import mean_verifier_score  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import PreferenceModelJudge, VerifierJudge  # noqa: E402
from policylab.losses.egpo import online_ipo_loss, variance_reduced_preferences  # noqa: E402
from policylab.modules.preference.egpo import EGPO  # noqa: E402
from policylab.modules.preference.online_dpo import OnlineDPO  # noqa: E402
from policylab.tasks.arithmetic import build_model, is_correct  # noqa: E402

QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


class _Table(VerifierJudge):
    """A scalar judge reading the score from the completion text (a number)."""

    def __init__(self):
        super().__init__(lambda prompt, completion: float(completion))


def test_online_ipo_loss_by_hand():
    # h = (0.5 - (-0.3)) - (0.1 - 0.4) = 1.1; target = (0.7 - 0.2) / 0.5 = 1.0 -> (0.1)^2
    loss = online_ipo_loss(
        torch.tensor([0.5 - (-0.3), 0.0]),
        torch.tensor([0.1 - 0.4, 0.2]),
        torch.tensor([0.7, 0.5]),
        torch.tensor([0.2, 0.5]),
        beta=0.5,
    )
    torch.testing.assert_close(loss, torch.tensor([0.01, 0.04]))
    p, half = variance_reduced_preferences(torch.tensor([0.8]))
    reduced = online_ipo_loss(torch.tensor([1.0]), torch.tensor([0.0]), p, half, beta=0.1)
    assert reduced.item() == pytest.approx((1.0 - (0.8 - 0.5) / 0.1) ** 2, rel=1e-6)
    theta = torch.tensor([0.3], requires_grad=True)  # the targets carry no gradient
    online_ipo_loss(theta, torch.zeros(1), theta * 2, torch.zeros(1), beta=1.0).sum().backward()
    assert theta.grad.item() == pytest.approx(2 * (0.3 - 0.6))
    with pytest.raises(ValueError, match="beta"):
        online_ipo_loss(theta, theta, theta, theta, beta=0.0)


def test_preferences_against_the_opponent_sample():
    module = EGPO(build_model(seed=0), judge=_Table())
    assert isinstance(module.judge, PreferenceModelJudge)
    assert module.samples_opponent  # temperature 2, top-k 10: y'' is drawn
    completions = SimpleNamespace(prompts=["a", "b"], texts=["1", "0", "2", "2"])
    module._opponents = SimpleNamespace(texts=["0", "3"])
    scores = module.score_completions(completions)
    # (P(y > y''), P(y' > y'')) per prompt, Bradley-Terry over the table's scores
    expected = [_sigmoid(1 - 0), _sigmoid(0 - 0), _sigmoid(2 - 3), _sigmoid(2 - 3)]
    torch.testing.assert_close(scores, torch.tensor(expected))
    assert module.judge.calls == 4  # two comparisons per prompt
    pairs = module.make_pairs(scores.reshape(2, 2), torch.Generator().manual_seed(0))
    assert pairs.chosen.tolist() == [0, 2] and pairs.rejected.tolist() == [1, 3]  # ties kept, in order
    assert pairs.dropped_ties == 0

    reduced = EGPO(build_model(seed=0), judge=_Table(), temperature=1.0, top_k=0)
    assert not reduced.samples_opponent
    reduced._opponents = None
    torch.testing.assert_close(reduced.score_completions(completions), torch.tensor([_sigmoid(1), 0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="generate_every_n_steps 1"):
        EGPO(build_model(seed=0), gradient_at="midpoint", generate_every_n_steps=2)
    with pytest.raises(ValueError, match="PairwiseJudge"):
        EGPO(build_model(seed=0), judge=object())


# ----------------------------------------------------------------------------- the step schedule
A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])  # a rotation: the field of a bilinear game


def _gradient(theta, phi):
    """d/dtheta of 0.5 |theta - tanh(A phi)|^2 + 0.1 sum(theta^3), written out."""
    return theta - torch.tanh(A @ phi) + 0.3 * theta**2


class _Toy(EGPO):
    """EGPO's schedule on a 2-parameter 'policy': the loss of an iteration is
    L(theta; phi) = 0.5 |theta - tanh(A phi)|^2 + 0.1 sum(theta^3), phi = the weights it sampled with."""

    def __init__(self, optimizer: str, **kwargs):
        super().__init__(torch.nn.Linear(2, 1, bias=False), judge=_Table(), **kwargs)
        self.optimizer_name = optimizer

    def configure_optimizers(self):
        params = [self.policy.weight]
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=0.1)
        return torch.optim.Adam(params, lr=0.1, betas=(0.9, 0.99), eps=1e-8)

    def on_fit_start(self):
        pass

    def online_data(self):
        return self.data

    def shared_step(self, batch):
        theta = self.policy.weight[0]
        loss = 0.5 * ((theta - torch.tanh(A @ self.data.sampled_at)) ** 2).sum() + 0.1 * (theta**3).sum()
        return loss, {}

    def batch_size(self, batch):
        return 1


def _fake_iteration(self, data, iteration):
    """Stands for sampling: the iteration's data is the weights it was sampled with."""
    data.iteration = iteration
    data.sampled_at = self.policy.weight[0].detach().clone()


def _run_toy(monkeypatch, optimizer, steps, **kwargs):
    monkeypatch.setattr(OnlineDPO, "run_iteration", _fake_iteration)
    module = _Toy(optimizer, **kwargs)
    with torch.no_grad():
        module.policy.weight.copy_(torch.tensor([[0.5, -0.2]]))
    module.data = SimpleNamespace(iteration=-1, sampled_at=None, step_batch=lambda *args: {})
    L.Trainer(max_steps=steps, accelerator="cpu", enable_checkpointing=False, **QUIET).fit(
        module, train_dataloaders=torch.utils.data.DataLoader([0] * steps, batch_size=None)
    )
    return module.policy.weight[0].detach()


def test_extragradient_step_by_hand_sgd(monkeypatch):
    lr, theta = 0.1, torch.tensor([0.5, -0.2])
    half = theta - lr * _gradient(theta, theta)
    # the authors' step: back to theta_t, gradient there on the half-step policy's samples
    expected = theta - lr * _gradient(theta, half)
    torch.testing.assert_close(_run_toy(monkeypatch, "sgd", 2), expected)
    # textbook extragradient: theta_t - lr * grad(theta_t - lr * grad(theta_t))
    textbook = theta - lr * _gradient(half, half)
    torch.testing.assert_close(_run_toy(monkeypatch, "sgd", 2, gradient_at="midpoint"), textbook)
    # online IPO: two plain steps
    second = half - lr * _gradient(half, half)
    torch.testing.assert_close(_run_toy(monkeypatch, "sgd", 2, estimate_extra_grad=False), second)
    # two full iterations: the second starts from the first's full step
    theta1 = expected
    half1 = theta1 - lr * _gradient(theta1, theta1)
    torch.testing.assert_close(_run_toy(monkeypatch, "sgd", 4), theta1 - lr * _gradient(theta1, half1))


def test_extragradient_restores_the_optimizer_state(monkeypatch):
    """Adam by hand: the full step's moments and step count are those of theta_t's state, not the half step's."""
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8

    def adam(theta, g, m, v, t):
        m, v, t = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2, t + 1
        return theta - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps), m, v, t

    theta, m, v, t = torch.tensor([0.5, -0.2]), torch.zeros(2), torch.zeros(2), 0
    for _ in range(2):  # two extragradient iterations
        half = adam(theta, _gradient(theta, theta), m, v, t)[0]
        theta, m, v, t = adam(theta, _gradient(theta, half), m, v, t)
    assert t == 2
    torch.testing.assert_close(_run_toy(monkeypatch, "adam", 4), theta)


# ----------------------------------------------------------------------------- the task
def _module(policy, **kwargs):
    settings = dict(
        judge=VerifierJudge(is_correct),
        beta=0.1,
        generate_every_n_steps=2,
        max_new_tokens=4,
        temperature=1.0,
        top_k=0,
        lr=1e-3,
        num_sample_texts=0,
    )
    return EGPO(copy.deepcopy(policy).train(), **{**settings, **kwargs})


def _data(folder, tokenizer, prompts=32):
    return OnlinePromptDataModule(
        str(folder / "prompts.jsonl"), tokenizer, prompts_per_iteration=prompts, batch_size=16, max_prompt_length=8
    )


def test_resume_between_half_and_full_step_matches_the_uninterrupted_run(addition, tmp_path):
    folder, tokenizer, policy, _ = addition
    kwargs = dict(generate_every_n_steps=1, temperature=2.0, top_k=10)  # y'' drawn; fresh samples every step
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=1, save_top_k=-1)
    module = _module(policy, **kwargs)
    L.Trainer(max_steps=4, callbacks=[checkpoints], **QUIET).fit(module, _data(folder, tokenizer, 8))
    # step 3 ended a half step: its checkpoint holds theta_t and the optimizer state of the full step to come
    middle = next(tmp_path.glob("*step=3.ckpt"))
    assert "egpo_anchor" in torch.load(middle, weights_only=False)
    assert "egpo_anchor" not in torch.load(next(tmp_path.glob("*step=4.ckpt")), weights_only=False)
    resumed = _module(policy, **kwargs)
    L.Trainer(max_steps=4, enable_checkpointing=False, **QUIET).fit(
        resumed, _data(folder, tokenizer, 8), ckpt_path=str(middle)
    )
    for (name, a), b in zip(module.policy.named_parameters(), resumed.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_egpo_raises_the_verifier_score_on_held_out_prompts(addition):
    folder, tokenizer, policy, held_out = addition
    before = mean_verifier_score(policy, tokenizer, held_out)
    L.seed_everything(0)
    module = _module(policy)
    L.Trainer(max_steps=120, enable_checkpointing=False, **QUIET).fit(module, _data(folder, tokenizer))
    after = mean_verifier_score(module.policy, tokenizer, held_out)
    print(f"verifier score on held-out prompts: SFT {before:.3f} -> EGPO {after:.3f}")
    assert not module.samples_opponent  # temperature 1: target (P(y > y') - 1/2) / beta, one call per prompt
    assert module.judge.calls == 60 * 32  # 60 iterations (30 half, 30 full) of 32 prompts
    assert after > before + 0.1, (before, after)
