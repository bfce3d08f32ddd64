"""Reward models: the Bradley-Terry loss and GPM's preference score against numbers computed
independently (``math`` scalars, the dense skew-symmetric matrix ``R`` written out), last-token
pooling against unpadded single-row forwards, learning on the single-digit addition task
(held-out pairs), and checkpoints that load back to the same scores."""

import math

import pytest
import torch

from policylab.losses import (
    bradley_terry_loss,
    general_preference_loss,
    general_preference_score,
)
from policylab.nn.heads import (
    PreferenceEmbeddingHead,
    ScalarRewardHead,
    last_token_hidden,
    last_token_index,
    prompt_end_index,
)


def softplus_neg(x: float) -> float:
    """-log sigma(x) = log(1 + e^-x), written without torch."""
    return math.log1p(math.exp(-x))


def dense_operator(eigenvalues: torch.Tensor) -> torch.Tensor:
    """``R = blockdiag(lambda_l [[0, -1], [1, 0]])`` as a full ``[2k, 2k]`` matrix."""
    k = eigenvalues.shape[0]
    R = torch.zeros(2 * k, 2 * k, dtype=eigenvalues.dtype)
    for block in range(k):
        R[2 * block, 2 * block + 1] = -eigenvalues[block]
        R[2 * block + 1, 2 * block] = eigenvalues[block]
    return R


# ----------------------------------------------------------------- losses
def test_bradley_terry_by_hand():
    chosen = torch.tensor([1.0, 0.5, -2.0, 3.0], dtype=torch.float64)
    rejected = torch.tensor([-1.0, 0.5, 1.0, 3.5], dtype=torch.float64)
    expected = [softplus_neg(w - r) for w, r in zip(chosen.tolist(), rejected.tolist())]
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-12)
    assert bradley_terry_loss(chosen, rejected)[1].item() == pytest.approx(math.log(2))
    margin = torch.tensor([0.5, 0.0, 1.0, 2.0], dtype=torch.float64)
    expected = [softplus_neg(w - r - m) for w, r, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist())]
    assert bradley_terry_loss(chosen, rejected, margin).tolist() == pytest.approx(expected, rel=1e-12)


def test_bradley_terry_gradient_is_minus_sigma_of_minus_gap():
    chosen = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.1, 0.4], dtype=torch.float64)
    bradley_terry_loss(chosen, rejected).sum().backward()
    gap = (chosen - rejected).detach()
    torch.testing.assert_close(chosen.grad, -torch.sigmoid(-gap))


def test_score_by_hand_in_two_dimensions():
    """k = 1, lambda = 1: s = v_i[0] v_j[1] - v_i[1] v_j[0] (R v_i rotates v_i by +90 degrees)."""
    one = torch.ones(1)
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert general_preference_score(e1, e2, one).item() == 1.0
    assert general_preference_score(e2, e1, one).item() == -1.0
    v_i, v_j = torch.tensor([0.6, 0.8]), torch.tensor([0.8, -0.6])
    assert general_preference_score(v_i, v_j, 2 * one).item() == pytest.approx(2 * (0.6 * -0.6 - 0.8 * 0.8))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_score_equals_the_dense_bilinear_form(k):
    """s = v_i^T R^T v_j = <R v_i, v_j> with R built as a matrix, for a batch of pairs."""
    g = torch.Generator().manual_seed(k)
    v_i, v_j = (
        torch.randn(5, 2 * k, generator=g, dtype=torch.float64),
        torch.randn(5, 2 * k, generator=g, dtype=torch.float64),
    )
    eigenvalues = torch.rand(5, k, generator=g, dtype=torch.float64)
    expected = torch.stack([v_i[b] @ dense_operator(eigenvalues[b]).T @ v_j[b] for b in range(5)])
    torch.testing.assert_close(general_preference_score(v_i, v_j, eigenvalues), expected)
    R = dense_operator(eigenvalues[0])
    torch.testing.assert_close(R.T, -R)  # the operator is skew-symmetric


def test_score_is_antisymmetric_and_zero_on_the_diagonal():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1)
    eigenvalues = torch.softmax(torch.randn(2, generator=g, dtype=torch.float64), -1)
    matrix = general_preference_score(v[:, None], v[None, :], eigenvalues)  # [6, 6] by broadcasting
    assert matrix.shape == (6, 6)
    torch.testing.assert_close(matrix, -matrix.T)
    torch.testing.assert_close(matrix.diagonal(), torch.zeros(6, dtype=torch.float64))
    loop = torch.tensor(
        [[general_preference_score(v[i], v[j], eigenvalues).item() for j in range(6)] for i in range(6)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(matrix, loop)
    tau = 0.1
    torch.testing.assert_close(
        torch.sigmoid(matrix / tau) + torch.sigmoid(matrix.T / tau), torch.ones(6, 6, dtype=torch.float64)
    )


def test_score_expresses_a_cycle_that_no_scalar_reward_can():
    """Three unit embeddings 120 degrees apart: a beats b, b beats c and c beats a."""
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
    a, b, c = torch.stack([angles.cos(), angles.sin()], -1)
    one = torch.ones(1, dtype=torch.float64)
    scores = [general_preference_score(x, y, one).item() for x, y in ((a, b), (b, c), (c, a))]
    assert scores == pytest.approx([math.sin(2 * math.pi / 3)] * 3)


def test_general_preference_loss_by_hand():
    v_w = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    v_l = torch.tensor([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    eigenvalues = torch.ones(3, 1, dtype=torch.float64)
    # s = [1, 0, -1]; loss = log(1 + exp(-s / tau))
    expected = [softplus_neg(s / 0.1) for s in (1.0, 0.0, -1.0)]
    assert general_preference_loss(v_w, v_l, eigenvalues, tau=0.1).tolist() == pytest.approx(expected, rel=1e-12)
    assert general_preference_loss(v_w, v_l, eigenvalues, tau=0.1)[1].item() == pytest.approx(math.log(2))
    expected = [softplus_neg((s - 0.5) / 0.2) for s in (1.0, 0.0, -1.0)]
    assert general_preference_loss(v_w, v_l, eigenvalues, tau=0.2, margin=0.5).tolist() == pytest.approx(
        expected, rel=1e-12
    )


def test_score_shape_errors_are_named():
    with pytest.raises(ValueError, match="even last dimension"):
        general_preference_score(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 1))
    with pytest.raises(ValueError, match="need last dimension k = 2"):
        general_preference_score(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 1))


# ----------------------------------------------------------------- heads and pooling
def test_token_indices_by_hand():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 3]
    completion = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 0]])
    assert prompt_end_index(completion).tolist() == [2, 0]
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    torch.testing.assert_close(last_token_hidden(hidden, right), torch.stack([hidden[0, 2], hidden[1, 4]]))
    with pytest.raises(ValueError, match="attention_mask"):
        last_token_hidden(hidden, right[:, :4])


def test_heads_shapes_norms_and_gate():
    torch.manual_seed(0)
    h = torch.randn(7, 16)
    assert ScalarRewardHead(16)(h).shape == (7,)
    head = PreferenceEmbeddingHead(16, dim=6)
    v, eigenvalues = head.embed(h), head.eigenvalues(h)
    assert v.shape == (7, 6) and eigenvalues.shape == (7, 3)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(7))
    assert (eigenvalues >= 0).all()
    torch.testing.assert_close(eigenvalues.sum(-1), torch.ones(7))
    torch.testing.assert_close(PreferenceEmbeddingHead(16, dim=2).eigenvalues(h), torch.ones(7, 1))
    with pytest.raises(ValueError, match="must be even"):
        PreferenceEmbeddingHead(16, dim=3)


# ----------------------------------------------------------------- modules on the addition task
transformers = pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from policylab.datamodules import PreferenceDataModule  # noqa: E402
from policylab.modules.preference import GeneralPreferenceModel, RewardModel  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("addition")
    build_tokenizer(folder / "tok")
    for name, seed, n in (("train", 0, 3000), ("val", 99, 300)):
        write_jsonl(AdditionTask(max_operand=9, seed=seed).preference_rows(n), folder / f"{name}.jsonl")
    return folder


def _datamodule(folder, **kwargs):
    return PreferenceDataModule(
        str(folder / "train.jsonl"),
        str(folder / "tok"),
        val_file=str(folder / "val.jsonl"),
        batch_size=32,
        max_length=16,
        max_prompt_length=8,
        **kwargs,
    )


def _batch(folder):
    dm = _datamodule(folder)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _perturbed(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return module.eval()


def _alone(module, batch, i):
    """Final hidden states of row ``i`` alone, unpadded: ``[n, H]``."""
    n = int(batch["attention_mask"][i].sum())
    return module.policy.base_model(input_ids=batch["input_ids"][i : i + 1, :n]).last_hidden_state[0]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_reward_is_read_at_the_last_real_token_and_the_loss_is_the_pure_one(task_files):
    """The module's rewards (one right-padded forward of all rows) equal the head on the last
    token of each row forwarded alone; the training loss is bradley_terry_loss of them; left
    padding gives the same rewards."""
    torch.manual_seed(0)
    batch = _batch(task_files)
    assert (batch["attention_mask"][:, 0] == 1).all() and (batch["attention_mask"] == 0).any()  # right-padded
    model = _perturbed(RewardModel(build_model(seed=0)))
    with torch.no_grad():
        rewards = model.score(batch)
        by_row = torch.stack([model.head(_alone(model, batch, i)[-1]) for i in range(rewards.shape[0])])
        torch.testing.assert_close(rewards, by_row, atol=1e-5, rtol=1e-5)
        pairs = rewards.shape[0] // 2
        loss, _ = model.shared_step(batch)
        torch.testing.assert_close(
            loss, bradley_terry_loss(by_row[:pairs], by_row[pairs:]).mean(), atol=1e-5, rtol=1e-5
        )
        # the same rows padded on the left
        lengths = batch["attention_mask"].sum(-1)
        shift = (batch["input_ids"].shape[1] - lengths).tolist()
        left_ids = torch.stack([row.roll(s) for row, s in zip(batch["input_ids"], shift)])
        left_mask = torch.stack([row.roll(s) for row, s in zip(batch["attention_mask"], shift)])
        torch.testing.assert_close(model.reward(left_ids, left_mask), rewards, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_gpm_embeds_the_last_token_and_gates_on_the_prompt_end(task_files):
    """GPM's embeddings come from each row's last token and its eigenvalues from the prompt's
    last token, as in single-row forwards; score(batch) is s(y_w > y_l)."""
    torch.manual_seed(0)
    batch = _batch(task_files)
    model = _perturbed(GeneralPreferenceModel(build_model(seed=0), value_head_dim=4))
    with torch.no_grad():
        v, eigenvalues = model.embed(batch)
        rows = v.shape[0]
        prompt_end = prompt_end_index(batch["completion_mask"]).tolist()
        alone = [_alone(model, batch, i) for i in range(rows)]
        torch.testing.assert_close(v, torch.stack([model.head.embed(h[-1]) for h in alone]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            eigenvalues,
            torch.stack([model.head.eigenvalues(h[e]) for h, e in zip(alone, prompt_end)]),
            atol=1e-5,
            rtol=1e-5,
        )
        pairs = rows // 2
        torch.testing.assert_close(
            eigenvalues[:pairs], eigenvalues[pairs:], atol=1e-5, rtol=1e-5
        )  # same prompt, same gate
        torch.testing.assert_close(
            model.score(batch), general_preference_score(v[:pairs], v[pairs:], eigenvalues[:pairs])
        )
        loss, _ = model.shared_step(batch)
        torch.testing.assert_close(loss, general_preference_loss(v[:pairs], v[pairs:], eigenvalues[:pairs], 0.1).mean())


def _fit_and_validate(model, dm, steps):
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]


@pytest.mark.parametrize("module", ["reward", "gpm"])
def test_reward_models_learn_to_prefer_right_sums(task_files, module):
    L.seed_everything(0)
    dm = _datamodule(task_files)
    if module == "reward":
        model = RewardModel(build_model(seed=0), lr=7e-4)
    else:
        model = GeneralPreferenceModel(build_model(seed=0), value_head_dim=2, tau=0.1, lr=7e-4)
    before = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]
    after = _fit_and_validate(model, dm, steps=500)  # about 15 s on one thread
    assert after["val/accuracy"] > 0.7 and after["val/accuracy"] > before["val/accuracy"] + 0.15, (before, after)
    assert after["val/loss"] < before["val/loss"], (before, after)


@pytest.mark.parametrize("cls", [RewardModel, GeneralPreferenceModel])
def test_checkpoint_and_hf_model_load_back_to_the_same_scores(task_files, tmp_path, cls):
    L.seed_everything(0)
    dm = _datamodule(task_files)
    model = cls(build_model(seed=0), lr=1e-3)
    trainer = L.Trainer(
        max_steps=3,
        logger=CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    batch = _batch(task_files)
    model.eval()
    with torch.no_grad():
        expected = model.score(batch)
    trainer.save_checkpoint(tmp_path / "model.ckpt")  # also writes <log_dir>/hf_model, the head beside it
    hf_model = tmp_path / "lightning_logs/version_0/hf_model"
    assert (hf_model / cls.head_file).is_file()

    loaded = cls.load_from_checkpoint(tmp_path / "model.ckpt", model=build_model(seed=1), weights_only=True).eval()
    from_path = cls(str(hf_model)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(batch), expected)
        torch.testing.assert_close(from_path.score(batch), expected)
    assert not torch.allclose(cls(build_model(seed=1)).eval().score(batch), expected)  # a fresh model differs


def test_a_run_without_logger_exports_no_model_folder_into_the_working_directory(task_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Lightning's log_dir without a logger is the working directory
    model = RewardModel(build_model(seed=0), lr=1e-3)
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0
    )
    trainer.fit(model, _datamodule(task_files))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    assert (tmp_path / "model.ckpt").is_file() and not (tmp_path / "hf_model").exists()
