"""SFT, offline DPO and every online method on the addition task at an EQUAL BUDGET OF JUDGED
COMPLETIONS, several seeds: greedy accuracy on the held-out sums, KL to the SFT model, and the
judged completions each run used (issue 18). Also the on-policy-versus-offline study of Tajwar et
al. 2024 ("Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data", arXiv
2404.14367): on-policy sampling vs offline data x negative gradient (DPO) vs maximum likelihood
only (the ``sft`` loss: SFT on the chosen response), and HyPO's coverage claim (HyPO >= DPO with
a lower KL) once ``configs/hypo_arithmetic.yaml`` exists.

    python benchmarks/online_table.py --seeds 0 1 2 --out data/bench/online_table        # run, then the table
    python benchmarks/online_table.py --out data/bench/online_table --table-only         # the table of what exists
    python benchmarks/online_table.py --list                                             # the rows and their settings

The budget unit is one judged completion (:mod:`policylab.callbacks.judge_budget`: a verifier
call on one answer; a pairwise comparison reads two). The default budget, 76,800, is what online
DPO's config judges in 600 steps (64 prompts x 2 samples per step). Each row spends it as follows:

- online methods (every ``configs/*_arithmetic.yaml`` whose model is an OnlineDPO subclass: one row
  per config, so a new method's config joins the table; per-method changes in ``OVERRIDES``):
  trained until :class:`~policylab.callbacks.judge_budget.JudgeBudget` stops them at the end of the
  iteration that spends the budget (``--step-cap`` steps at most);
- the maximum-likelihood arms on the same loop (``loss_type: sft``): online Pref-FT (K = 2, the
  right answer of two samples) and iterated best-of-8 SFT;
- offline pairs from the SFT model's own samples (Tajwar's offline arm): the online DPO config with
  ONE iteration at step 0 that samples 2 answers for ``budget / 2`` prompts from the SFT model and
  judges them (the whole budget), then as many steps as online DPO takes, with DPO or ``sft``;
- offline DPO on the task's pair file (``configs/dpo_arithmetic.yaml``, its tuned beta 1): a pair
  costs two judged completions, so ``budget / 2`` pairs are trained on, ``budget / (2 * 64)``
  steps of 64 pairs (the 20k-pair file is then visited about twice: 40k distinct labels); Pref-FT
  on the same pairs (``loss_type: sft``); every other ``*_arithmetic.yaml`` whose model is a DPO
  subclass (HyPO: DPO on those pairs plus a KL term on unjudged fresh samples; SRPO) the same way,
  ``budget / 2`` pairs at its config's batch size;
- SFT: the starting model, evaluated once (no judge calls).

Every run goes through ``python cli.py fit`` with the config and ``--seed_everything S
--data.init_args.seed S`` (the SFT model is the same for every seed), under ``nice`` with one
thread, one run at a time, its output in ``<out>/runs/<row>/seed<S>/run.log`` beside its
TensorBoard events and checkpoints. A finished run (``final.json``) is skipped; an interrupted one
resumes from ``last.ckpt`` (``--ckpt_path last``). After each run its final policy (the run's
``hf_model``) is evaluated here: greedy accuracy on ``eval.jsonl`` with GreedyAccuracy's own
decoding and judge, and ``KL(pi || pi_SFT)`` as the mean over 4 samples per held-out prompt
(temperature 1) of the exact per-token KL summed over the answer. ``<out>/table.md``,
``table.csv`` (per row), ``runs.csv`` (per run) and ``scores.csv`` (every ``eval/accuracy`` point)
are rewritten after every run.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import importlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: judged completions of online DPO's config in 600 steps (64 prompts x 2 samples per step)
DEFAULT_BUDGET = 76_800
SFT_MODEL = "runs/sft_arithmetic/version_0/hf_model"
EVAL_FILE = "data/arithmetic/eval.jsonl"
TOKENIZER = "data/arithmetic/tokenizer"
JUDGE = "policylab.tasks.arithmetic.is_correct"
EVAL_EVERY = 100
MAX_NEW_TOKENS = 5
KL_SAMPLES = 4
FINAL = "final.json"

#: per-method changes to a discovered online config (dotted CLI keys): each makes an iteration's
#: cost divide the default budget, so that no run ends short of it
OVERRIDES: dict[str, dict[str, object]] = {
    # 320 prompts x 32 candidates = 10,240 per iteration would stop at 71,680; 300 x 32 x 8 = 76,800
    "rso_arithmetic": {"data.init_args.prompts_per_iteration": 300},
}
#: configs on the arithmetic task that are not online methods (their rows are built below)
NOT_ONLINE = {"sft_arithmetic", "dpo_arithmetic", "reward_arithmetic", "gpm_arithmetic"}
ML = {"model.init_args.loss_type": "sft"}
BEST_OF_8 = {
    "model.init_args.num_generations": 8,
    "model.init_args.pair_rule": "best_vs_worst",
    "model.init_args.generate_every_n_steps": 20,
    "data.init_args.prompts_per_iteration": 640,
}


@dataclass(frozen=True)
class Row:
    """One row of the table: a config and the CLI values that make it this row.

    ``budgeted``: stopped by JudgeBudget (an online run); else its steps are its label budget.
    ``sampling`` and ``gradient``: its cell in Tajwar et al.'s study (empty: not part of it).
    ``labels``: judged completions behind an offline row (None: counted during the run)."""

    name: str
    config: str
    label: str
    settings: dict = field(default_factory=dict, hash=False)
    budgeted: bool = False
    sampling: str = ""
    gradient: str = ""
    labels: int | None = None
    train: bool = True


def config_class(config: Path):
    """The model class a config names (imported), or the import error as a string."""
    import yaml

    path = yaml.safe_load(config.read_text()).get("model", {}).get("class_path", "")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except Exception as err:  # noqa: BLE001 - a half-written method: reported, the table goes on
        return f"{path}: {type(err).__name__}: {err}"


def method_configs(configs: Path) -> tuple[list[Path], list[Path], list[str]]:
    """The ``*_arithmetic.yaml`` configs of online methods (OnlineDPO subclasses) and of offline
    pairwise methods (DPO subclasses: HyPO, SRPO, ...), and notes on the configs left out."""
    from policylab.modules.preference.dpo import DPO
    from policylab.modules.preference.online_dpo import OnlineDPO

    online, offline, notes = [], [], []
    for config in sorted(configs.glob("*_arithmetic.yaml")):
        if config.stem in NOT_ONLINE:
            continue
        cls = config_class(config)
        if isinstance(cls, str):
            notes.append(f"{config.name} left out: {cls}")
        elif isinstance(cls, type) and issubclass(cls, OnlineDPO):
            online.append(config)
        elif isinstance(cls, type) and issubclass(cls, DPO):
            offline.append(config)
    return online, offline, notes


def _batch_size(config: Path) -> int:
    import yaml

    return int(((yaml.safe_load(config.read_text()).get("data") or {}).get("init_args") or {}).get("batch_size", 64))


def build_rows(budget: int = DEFAULT_BUDGET, configs: Path | None = None, step_cap: int | None = None) -> list[Row]:
    """Every row of the table at ``budget`` judged completions (see the module docstring)."""
    configs = configs or ROOT / "configs"
    rel = lambda p: os.path.relpath(p, ROOT)  # noqa: E731
    oaif_steps = max(1, budget // (2 * 64))  # online DPO: 64 prompts x 2 samples per step
    step_cap = step_cap or 2 * oaif_steps
    rows = [Row("sft", rel(configs / "sft_arithmetic.yaml"), "SFT (the starting model)", train=False, labels=0)]
    dpo = configs / "dpo_arithmetic.yaml"
    if dpo.is_file():
        pair_steps = max(1, budget // (2 * 64))  # 64 pairs per step, two judged completions per pair
        steps = {"trainer.max_steps": pair_steps}
        labels = pair_steps * 64 * 2
        rows += [
            Row(
                "dpo_pairs",
                rel(dpo),
                "offline DPO, the task's pairs (beta 1)",
                steps,
                False,
                "offline",
                "negative",
                labels,
            ),
            Row(
                "pref_ft_pairs",
                rel(dpo),
                "offline Pref-FT, the task's pairs (sft loss)",
                {**steps, **ML},
                False,
                "offline",
                "max-likelihood",
                labels,
            ),
        ]
    online, offline_methods, _ = method_configs(configs)
    for config in offline_methods:  # labels: its pairs, two judged completions each (HyPO's own samples are unjudged)
        batch = _batch_size(config)
        steps = max(1, budget // (2 * batch))
        label = f"{config_class(config).__name__} ({config.name}, offline pairs)"
        rows.append(
            Row(
                config.stem.removesuffix("_arithmetic"),
                rel(config),
                label,
                {"trainer.max_steps": steps},
                labels=steps * batch * 2,
            )
        )
    for config in online:
        cap = {"trainer.max_steps": step_cap}
        rows.append(
            Row(
                config.stem.removesuffix("_arithmetic"),
                rel(config),
                f"{config_class(config).__name__} ({config.name})",
                {**cap, **OVERRIDES.get(config.stem, {})},
                True,
            )
        )
        if config.stem != "online_dpo_arithmetic":
            continue
        rows[-1] = Row("online_dpo", rel(config), "online DPO (OAIF, K=2)", cap, True, "on-policy", "negative")
        offline = {
            "trainer.max_steps": oaif_steps,
            "model.init_args.generate_every_n_steps": oaif_steps,
            "data.init_args.prompts_per_iteration": budget // 2,
        }
        rows += [
            Row(
                "online_pref_ft",
                rel(config),
                "online Pref-FT (K=2, sft loss)",
                {**cap, **ML},
                True,
                "on-policy",
                "max-likelihood",
            ),
            Row(
                "best_of_8_dpo",
                rel(config),
                "iterative best-of-8 DPO",
                {**cap, **BEST_OF_8},
                True,
                "on-policy",
                "negative",
            ),
            Row(
                "best_of_8_sft",
                rel(config),
                "iterated best-of-8 SFT (sft loss)",
                {**cap, **BEST_OF_8, **ML},
                True,
                "on-policy",
                "max-likelihood",
            ),
            Row(
                "offline_samples_dpo",
                rel(config),
                "offline DPO on SFT samples (one iteration, K=2)",
                offline,
                True,
                "offline",
                "negative",
            ),
            Row(
                "offline_samples_pref_ft",
                rel(config),
                "offline Pref-FT on SFT samples (one iteration, K=2)",
                {**offline, **ML},
                True,
                "offline",
                "max-likelihood",
            ),
        ]
    return rows


# ------------------------------------------------------------------------------------ running
def run_folder(out: Path, row: Row, seed: int) -> Path:
    return out / "runs" / row.name / f"seed{seed}"


def cli_args(row: Row, seed: int, out: Path, budget: int, resume: bool) -> list[str]:
    """The ``python cli.py`` arguments of ``row`` with ``seed``."""
    folder = run_folder(out, row, seed)
    args = ["fit", "--config", row.config, "--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
    args += [
        "--trainer.logger.init_args.save_dir",
        str(folder.parents[1]),
        "--trainer.logger.init_args.name",
        row.name,
        "--trainer.logger.init_args.version",
        folder.name,
        "--trainer.enable_progress_bar",
        "false",
    ]
    for key, value in row.settings.items():
        args += [f"--{key}", str(value)]
    if row.budgeted:
        args += [
            "--trainer.callbacks+=policylab.callbacks.judge_budget.JudgeBudget",
            f"--trainer.callbacks.budget={budget}",
        ]
    return args + (["--ckpt_path", "last"] if resume else [])


def train(row: Row, seed: int, out: Path, budget: int, nice: int) -> int:
    """Train (or resume) one run in a child process; its exit status."""
    folder = run_folder(out, row, seed)
    folder.mkdir(parents=True, exist_ok=True)
    resume = (folder / "checkpoints" / "last.ckpt").is_file()
    command = [sys.executable, "cli.py", *cli_args(row, seed, out, budget, resume)]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(folder / "run.log", "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        return subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


# ------------------------------------------------------------------------------------ evaluation
def sequence_kl(policy, reference, completions):
    """``[N]``: for each sampled answer, ``sum_t KL(pi(. | y_<t) || pi_ref(. | y_<t))`` over its tokens,
    an estimate of the sequence-level ``KL(pi || pi_ref)`` (the answers drawn from ``pi``) with less
    variance than ``log pi(y) - log pi_ref(y)``."""
    import torch

    from policylab.nn.heads import position_ids

    ids, attention = completions.input_ids, completions.attention_mask.long()
    positions = position_ids(attention)
    with torch.no_grad():
        logp = policy(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].log_softmax(-1)
        logq = reference(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].log_softmax(-1)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    return (per_token * completions.completion_mask[:, 1:].float()).sum(-1)


def evaluate_model(model_dir: Path, sft_dir: Path, seed: int = 0) -> dict:
    """Greedy accuracy on the held-out sums (GreedyAccuracy's decoding and judge) and
    ``KL(pi || pi_SFT)`` (mean of :func:`sequence_kl` over ``KL_SAMPLES`` answers per prompt)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylab.callbacks.generation import GreedyAccuracy
    from policylab.sampling import HFSampler

    tokenizer = AutoTokenizer.from_pretrained(ROOT / TOKENIZER)
    policy = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
    greedy = GreedyAccuracy(str(ROOT / EVAL_FILE), JUDGE, every_n_steps=0, max_new_tokens=MAX_NEW_TOKENS)
    answers = greedy.answers(policy, tokenizer)
    accuracy = sum(bool(greedy.judge(p, a)) for p, a in zip(greedy.prompts, answers)) / len(answers)
    sampler = HFSampler(tokenizer, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, batch_size=128)
    kls = []
    for start in range(0, len(greedy.prompts), 128):
        completions = sampler.sample(policy, greedy.prompts[start : start + 128], KL_SAMPLES, seed=seed + start)
        kls.append(sequence_kl(policy, reference, completions))
    kl = torch.cat(kls)
    return {"accuracy": accuracy, "kl": kl.mean().item(), "kl_stderr": (kl.std() / math.sqrt(len(kl))).item()}


def finish(row: Row, seed: int, out: Path, sft_dir: Path) -> dict:
    """Evaluate a trained (or, for SFT, the starting) model and write ``final.json``."""
    folder = run_folder(out, row, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "hf_model" if row.train else sft_dir
    record = {"row": row.name, "seed": seed, "step": 0, "judged_completions": row.labels, "stopped_by_budget": None}
    if row.train:
        budget_file = folder / "judge_budget.json"
        if row.budgeted:
            spent = json.loads(budget_file.read_text())
            record.update(judged_completions=spent["judged_completions"], stopped_by_budget=spent["stopped_by_budget"])
        import torch

        record["step"] = int(
            torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        )
    record.update(evaluate_model(model_dir, sft_dir, seed))
    (folder / FINAL).write_text(json.dumps(record) + "\n")
    return record


# ------------------------------------------------------------------------------------ the table
def accuracy_curve(folder: Path) -> dict[int, float]:
    from policylab.sweep import scores_of_run

    return scores_of_run(folder, "eval/accuracy") if folder.is_dir() else {}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def gather(rows: list[Row], seeds: list[int], out: Path) -> list[dict]:
    """Per row: its finished runs' ``final.json`` records and accuracy curves."""
    gathered = []
    for row in rows:
        runs = []
        for seed in seeds if row.train else seeds[:1]:
            path = run_folder(out, row, seed) / FINAL
            if path.is_file():
                record = json.loads(path.read_text())
                record["curve"] = accuracy_curve(path.parent) if row.train else {}
                runs.append(record)
        gathered.append({"row": row, "runs": runs})
    return gathered


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return ""
    mean, std = _mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def summarize(gathered: list[dict]) -> list[dict]:
    sft = next((g for g in gathered if g["row"].name == "sft" and g["runs"]), None)
    sft_accuracy = sft["runs"][0]["accuracy"] if sft else None
    summary = []
    for g in gathered:
        row, runs = g["row"], g["runs"]
        acc = [r["accuracy"] for r in runs]
        best = [max([*r["curve"].values(), r["accuracy"]]) for r in runs]  # the evaluations and the final one
        summary.append(
            {
                "row": row.name,
                "method": row.label,
                "sampling": row.sampling,
                "gradient": row.gradient,
                "seeds": len(runs),
                "accuracy": acc,
                "accuracy_mean": _mean_std(acc)[0] if acc else float("nan"),
                "accuracy_std": _mean_std(acc)[1] if acc else float("nan"),
                "vs_sft_points": 100 * (_mean_std(acc)[0] - sft_accuracy) if acc and sft_accuracy is not None else None,
                "kl": [r["kl"] for r in runs],
                "judged": [r["judged_completions"] for r in runs if r["judged_completions"] is not None],
                "steps": [r["step"] for r in runs],
                "best_eval": best,
                "stopped_by_budget": [r["stopped_by_budget"] for r in runs],
            }
        )
    return summary


def comparisons(summary: list[dict]) -> list[str]:
    """The issue's claims, from the rows present: online DPO and SPPO against offline DPO, HyPO
    against DPO (accuracy and KL), and Tajwar et al.'s two axes."""
    by = {s["row"]: s for s in summary if s["accuracy"]}
    lines = []

    def diff(a: str, b: str) -> str | None:
        if a not in by or b not in by:
            return None
        x, y = by[a], by[b]
        d = 100 * (x["accuracy_mean"] - y["accuracy_mean"])
        spread = 100 * math.hypot(x["accuracy_std"], y["accuracy_std"])
        kl = _mean_std(x["kl"])[0] - _mean_std(y["kl"])[0]
        return (
            f"- {x['method']} vs {y['method']}: {d:+.1f} points of greedy accuracy (std of the difference "
            f"~{spread:.1f}), KL {kl:+.2f} nats"
        )

    for a in ("online_dpo", "best_of_8_dpo", "sppo", "rso"):
        for b in ("dpo_pairs", "offline_samples_dpo"):
            line = diff(a, b)
            if line:
                lines.append(line)
    for a, b in (
        ("online_dpo", "online_pref_ft"),
        ("best_of_8_dpo", "best_of_8_sft"),
        ("offline_samples_dpo", "offline_samples_pref_ft"),
        ("dpo_pairs", "pref_ft_pairs"),
        ("online_pref_ft", "offline_samples_pref_ft"),
    ):
        line = diff(a, b)
        if line:
            lines.append(line)
    if "hypo" in by:
        for b in ("dpo_pairs", "offline_samples_dpo"):
            if b in by:
                h, d = by["hypo"], by[b]
                holds = h["accuracy_mean"] >= d["accuracy_mean"] and _mean_std(h["kl"])[0] < _mean_std(d["kl"])[0]
                lines.append(
                    diff("hypo", b) + f" (HyPO's claim, accuracy >= and KL <: {'holds' if holds else 'fails'})"
                )
    return lines


def tajwar_grid(summary: list[dict]) -> list[str]:
    cells: dict[tuple[str, str], list[str]] = {}
    for s in summary:
        if s["sampling"] and s["gradient"] and s["accuracy"]:
            text = f"{s['row']}: {_fmt(s['accuracy'])} (KL {_fmt(s['kl'], 2)})"
            cells.setdefault((s["sampling"], s["gradient"]), []).append(text)
    if not cells:
        return []
    lines = ["| data | negative gradient (DPO) | maximum likelihood only (sft loss) |", "|---|---|---|"]
    for sampling in ("on-policy", "offline"):
        grad = ["<br>".join(cells.get((sampling, g), [])) for g in ("negative", "max-likelihood")]
        lines.append(f"| {sampling} | {grad[0]} | {grad[1]} |")
    return lines


def write_table(rows: list[Row], seeds: list[int], out: Path, budget: int, notes: list[str]) -> str:
    gathered = gather(rows, seeds, out)
    summary = summarize(gathered)
    fields = [
        "row",
        "method",
        "sampling",
        "gradient",
        "seeds",
        "accuracy_mean",
        "accuracy_std",
        "vs_sft_points",
        "kl_mean",
        "kl_std",
        "judged_mean",
        "steps_mean",
        "best_eval_mean",
    ]
    with open(out / "table.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for s in summary:
            mean = lambda v: _mean_std(v)[0] if v else ""  # noqa: E731
            writer.writerow(
                {
                    **{k: s[k] for k in fields[:8]},
                    "kl_mean": mean(s["kl"]),
                    "kl_std": _mean_std(s["kl"])[1] if s["kl"] else "",
                    "judged_mean": mean(s["judged"]),
                    "steps_mean": mean(s["steps"]),
                    "best_eval_mean": mean(s["best_eval"]),
                }
            )
    with open(out / "runs.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["row", "seed", "accuracy", "kl", "kl_stderr", "judged_completions", "step", "stopped_by_budget"]
        )
        for g in gathered:
            for r in g["runs"]:
                writer.writerow(
                    [
                        g["row"].name,
                        r["seed"],
                        r["accuracy"],
                        r["kl"],
                        r["kl_stderr"],
                        r["judged_completions"],
                        r["step"],
                        r["stopped_by_budget"],
                    ]
                )
    with open(out / "scores.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "seed", "step", "accuracy"])
        for g in gathered:
            for r in g["runs"]:
                for step, value in sorted(r["curve"].items()):
                    writer.writerow([g["row"].name, r["seed"], step, value])
    lines = [
        f"Budget: {budget:,} judged completions per run; greedy accuracy of the final policy on the 500 held-out "
        f"sums, mean ± std over seeds ({', '.join(map(str, seeds))}); KL(pi || pi_SFT) in nats per answer.",
        "",
        "| method | data | gradient | seeds | greedy accuracy | per seed | vs SFT (points) | KL to SFT | "
        "judged completions | steps | best evaluation (every 100 steps and the end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        per_seed = ", ".join(f"{a:.3f}" for a in s["accuracy"])
        vs = f"{s['vs_sft_points']:+.1f}" if s["vs_sft_points"] is not None and s["row"] != "sft" else ""
        judged = f"{_mean_std(s['judged'])[0]:,.0f}" if s["judged"] else ""
        if s["judged"] and min(s["judged"]) != max(s["judged"]):
            judged += f" ({min(s['judged']):,}-{max(s['judged']):,})"
        steps = f"{_mean_std(s['steps'])[0]:.0f}" if s["steps"] else ""
        if any(flag is False for flag in s["stopped_by_budget"]):
            steps += " (step cap)"
        lines.append(
            f"| {s['method']} | {s['sampling']} | {s['gradient']} | {s['seeds']} | {_fmt(s['accuracy'])} | "
            f"{per_seed} | {vs} | {_fmt(s['kl'], 2)} | {judged} | {steps} | {_fmt(s['best_eval'])} |"
        )
    grid = tajwar_grid(summary)
    if grid:
        lines += ["", "On-policy vs offline x negative gradient vs maximum likelihood (Tajwar et al. 2024):", "", *grid]
    claims = comparisons(summary)
    if claims:
        lines += ["", "Differences of the means:", "", *claims]
    if notes:
        lines += ["", *[f"Note: {n}" for n in notes]]
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    return table


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--out", default="data/bench/online_table", help="results folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="judged completions per run")
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (names as --list shows)")
    parser.add_argument("--step-cap", type=int, default=None, help="most steps of a budgeted run (2x online DPO's)")
    parser.add_argument("--sft-model", default=SFT_MODEL)
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the rows and their settings")
    options = parser.parse_args(argv)
    os.chdir(ROOT)
    import torch

    torch.set_num_threads(1)
    rows = build_rows(options.budget, step_cap=options.step_cap)
    _, _, notes = method_configs(ROOT / "configs")
    if options.rows:
        unknown = set(options.rows) - {r.name for r in rows}
        if unknown:
            parser.error(f"--rows: unknown {', '.join(sorted(unknown))}; rows: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in options.rows or r.name == "sft"]
    if options.list:
        for row in rows:
            print(f"{row.name:26s} {row.config:36s} {'budgeted' if row.budgeted else ''} {row.settings}")
        for note in notes:
            print("note:", note)
        return
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    sft_dir = Path(options.sft_model)
    if not (sft_dir / "config.json").is_file():
        sys.exit(f"error: no SFT model at {sft_dir}: run python cli.py fit --config configs/sft_arithmetic.yaml first")
    failed = []
    if not options.table_only:
        lock = open(out / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(f"error: another online_table.py is running on {out} (its .lock is held)")
        for seed in options.seeds:  # seed-major: a partial table has every row
            for row in rows:
                if not row.train and seed != options.seeds[0]:
                    continue
                folder = run_folder(out, row, seed)
                if (folder / FINAL).is_file():
                    print(f"skip   {folder}", flush=True)
                    continue
                started = time.time()
                if row.train:
                    print(f"train  {folder}", flush=True)
                    code = train(row, seed, out, options.budget, options.nice)
                    if code != 0:
                        print(f"FAILED {folder} (exit {code}; see run.log)", flush=True)
                        failed.append(folder)
                        continue
                record = finish(row, seed, out, sft_dir)
                print(
                    f"done   {folder}: accuracy {record['accuracy']:.3f}, KL {record['kl']:.3f}, judged "
                    f"{record['judged_completions']}, step {record['step']} ({time.time() - started:.0f} s)",
                    flush=True,
                )
                write_table(rows, options.seeds, out, options.budget, notes)
    print(write_table(rows, options.seeds, out, options.budget, notes), end="")
    if failed:
        sys.exit(f"error: {len(failed)} run(s) failed: " + ", ".join(map(str, failed)))


if __name__ == "__main__":
    main()
