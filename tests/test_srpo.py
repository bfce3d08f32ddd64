"""SRPO: L_alpha on hand values; both of its terms vanish at the solution of the min-max game found by
numerical optimization of the objective itself (a 3-answer problem); the six row blocks of the data;
and learning on the addition task: on held-out pairs the generator prefers the right sum and the
improver prefers revising a wrong answer into it."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers", reason="the language-model extras (pip install -e '.[lm]')")
import lightning as L  # noqa: E402
from conftest import quiet_trainer  # noqa: E402

from policylab.datamodules.self_improvement import BLOCKS, SelfImprovementDataModule, revision_prompt  # noqa: E402
from policylab.losses.srpo import SelfImprovementRatios, srpo_loss, srpo_terms  # noqa: E402
from policylab.modules.preference.srpo import SRPO, SelfRevisionAccuracy  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, write_jsonl  # noqa: E402


def _ratios(*values):
    return SelfImprovementRatios(*(torch.tensor([v]) for v in values))


def test_l_alpha_hand_values():
    # h(y_w), h(y_l), h(y_w|y_l), h(y_l|y_l), h(y_w|y_w), h(y_l|y_w)
    r = _ratios(0.4, -0.2, 1.0, 0.1, 0.3, -0.5)
    self_term, robust = srpo_terms(r, beta=0.5)  # targets (p - 1/2)/beta = 1 and (2p - 1)/beta = 2
    assert self_term.item() == pytest.approx(0.5 * ((0.9 - 1.0) ** 2 + (0.8 - 1.0) ** 2), rel=1e-5)
    assert robust.item() == pytest.approx((1.5 + 0.6 - 2.0) ** 2, rel=1e-5)
    assert srpo_loss(r, beta=0.5, alpha=0.3).item() == pytest.approx(0.3 * 0.025 + 0.7 * 0.01, rel=1e-5)
    # a soft label p = 0.75 halves the targets
    self_term, robust = srpo_terms(r, beta=0.5, preference=torch.tensor([0.75]))
    assert robust.item() == pytest.approx((1.5 + 0.6 - 1.0) ** 2, rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        srpo_loss(r, beta=0.5, alpha=1.5)


def _maximize(objective, shape, steps=3000):
    logits = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        (-objective(torch.softmax(logits, -1))).sum().backward()
        opt.step()
    return torch.softmax(logits, -1).detach()


def test_both_terms_vanish_at_the_solution_of_the_game():
    """min_pi max_dag E_{y~pi, y'~dag(.|y)}[P(y' > y)] - beta KL(dag || ref(.|y)) + beta KL(pi || ref),
    solved numerically on 3 answers (no closed form used); L_self and L_robust are 0 there for every
    ordered pair, and not at the reference."""
    torch.manual_seed(0)
    beta = 0.7
    skill = torch.tensor([0.0, 1.0, -0.5], dtype=torch.float64)
    prefer = torch.sigmoid(skill[:, None] - skill[None, :])  # prefer[a, b] = P(a > b), 1/2 on the diagonal
    ref = torch.softmax(torch.randn(3, dtype=torch.float64), -1)
    ref_revise = torch.softmax(torch.randn(3, 3, dtype=torch.float64), -1)  # ref_revise[y, y'] = ref(y' | y)

    def inner(dag):  # dag[y, y'] = dag(y' | y); one value per previous answer y
        kl = (dag * (dag.log() - ref_revise.log())).sum(-1)
        return (dag * prefer.T).sum(-1) - beta * kl

    dag = _maximize(inner, (3, 3))
    value = inner(dag).detach()
    pi = _maximize(lambda p: -((p * value).sum(-1) + beta * (p * (p.log() - ref.log())).sum(-1)), (3,))
    h, h_dag = (pi / ref).log(), (dag / ref_revise).log()

    for w in range(3):
        for lo in range(3):
            if w == lo:
                continue
            r = _ratios(h[w], h[lo], h_dag[lo, w], h_dag[lo, lo], h_dag[w, w], h_dag[w, lo])
            self_term, robust = srpo_terms(r, beta, preference=prefer[w, lo])
            assert self_term.item() < 1e-6 and robust.item() < 1e-6, (w, lo, self_term, robust)
    at_reference = srpo_terms(_ratios(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), beta, preference=prefer[1, 0])
    assert min(t.item() for t in at_reference) > 0.01


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    write_jsonl([{"prompt": "12+3=", "chosen": "15", "rejected": "16"}], folder / "one.jsonl")
    return folder


def test_six_row_blocks_and_the_revision_prompt(pairs_file, addition):
    _, tokenizer, _, _ = addition
    dm = SelfImprovementDataModule(
        str(pairs_file / "one.jsonl"),
        tokenizer,
        batch_size=1,
        max_length=16,
        max_prompt_length=12,
        revision_marker="-=",
    )
    dm.setup("fit")
    batch = next(iter(dm.ordered_dataloader("train")))
    assert batch["input_ids"].shape[0] == len(BLOCKS) == 6
    texts = []
    for ids, attention, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
        prompt = tokenizer.decode(ids[attention.bool() & ~completion.bool()], skip_special_tokens=True)
        texts.append((prompt, tokenizer.decode(ids[completion.bool()], skip_special_tokens=True)))
    assert texts == [
        ("12+3=", "15"),
        ("12+3=", "16"),
        ("12+3=16-=", "15"),
        ("12+3=16-=", "16"),
        ("12+3=15-=", "15"),
        ("12+3=15-=", "16"),
    ]
    assert revision_prompt("12+3=", "16", "-=") == "12+3=16-="
    with pytest.raises(ValueError, match="revision_marker"):
        SelfImprovementDataModule(str(pairs_file / "one.jsonl"), tokenizer, revision_marker="?")
    with pytest.raises(ValueError, match="alpha"):
        SRPO(build_model(seed=0), alpha=2.0)
    with pytest.raises(ValueError, match="precompute_reference"):
        SRPO(build_model(seed=0), precompute_reference=True)


def test_srpo_learns_both_roles_on_held_out_pairs(tmp_path, addition):
    """Held-out pairs (prompts never trained on): the generator prefers the right sum, and after the
    wrong answer the improver prefers writing the right one; the revision evaluation runs on them."""
    folder, tokenizer, policy, held_out = addition
    train_prompts = {json.loads(line)["prompt"] for line in (folder / "prompts.jsonl").read_text().splitlines()}
    rows = AdditionTask(max_operand=9, seed=1).preference_rows(3000)
    write_jsonl([r for r in rows if r["prompt"] in train_prompts], tmp_path / "train.jsonl")
    write_jsonl([r for r in rows if r["prompt"] not in train_prompts][:200], tmp_path / "val.jsonl")
    write_jsonl([{"prompt": p} for p in held_out], tmp_path / "held_out.jsonl")
    dm = SelfImprovementDataModule(
        str(tmp_path / "train.jsonl"),
        tokenizer,
        val_file=str(tmp_path / "val.jsonl"),
        batch_size=16,
        max_length=14,
        max_prompt_length=10,
        revision_marker="-=",
    )
    L.seed_everything(0)
    module = SRPO(copy.deepcopy(policy).train(), beta=0.5, alpha=0.5, lr=3e-4)
    before = quiet_trainer().validate(module, dm, verbose=False)[0]
    quiet_trainer(max_steps=80, limit_val_batches=0).fit(module, dm)
    after = quiet_trainer().validate(module, dm, verbose=False)[0]
    evaluation = SelfRevisionAccuracy(str(tmp_path / "held_out.jsonl"), revision_marker="-=", max_new_tokens=4)
    greedy = evaluation.evaluate(SimpleNamespace(datamodule=dm), module)
    metrics = evaluation.step_metrics(greedy)
    print({k: round(v, 3) for k, v in {**after, **metrics}.items()})
    assert set(metrics) == {"eval/accuracy", "eval/revision_accuracy_1"}
    assert after["val/loss"] < before["val/loss"], (before, after)
    assert after["val/reward_accuracy"] > 0.6, after
    assert after["val/revision_accuracy"] > 0.6, after
