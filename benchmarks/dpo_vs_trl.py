"""policylab's ``DPO`` against HF TRL's ``DPOTrainer`` (trl 1.16), side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py --threads 1          # shared machine
    python benchmarks/dpo_vs_trl.py [--steps 1000] [--batch-size 32] [--rounds 3] [--device cuda]
    # a real vocabulary's LM head:
    python benchmarks/dpo_vs_trl.py --skip-agreement --vocab-size 32000 --steps 60 --warmup 10
    python benchmarks/dpo_vs_trl.py --skip-speed                    # the loss agreement table only

1. Loss agreement. For every loss type both implement, the same tiny Llama (``build_model``,
   perturbed so that policy and reference differ) and the same batch of addition pairs go
   through TRL's own ``DPOTrainer.compute_loss`` (a trainer built with that ``loss_type``) and
   through policylab (``DPO.sequence_stats`` and the module's ``objective``, the entry of
   ``policylab.losses.pairwise.PAIRWISE_LOSSES``, or the pure function of
   ``policylab.losses.preference``). Reported: the largest |loss difference| and
   gradient difference over every parameter (relative to the largest gradient entry) across
   batches and three perturbation sizes. Agreement: the loss difference <= 1e-5 (relative to the
   loss where it exceeds 1: SPPO and IPO losses reach the hundreds) and the relative gradient
   difference <= 1e-5. Pairings whose formulas differ are run too, and labelled. Not compared:
   TRL's aot, aot_unpaired, apo_down, discopop and sigmoid_norm (policylab has no such loss)
   and policylab's simpo and sem_dpo (not in TRL's DPOTrainer; SimPO is in
   ``trl.experimental``'s CPOTrainer).
2. Speed and memory. The same model, rows, batch size and number of steps through
   ``DPOTrainer.train()`` and through ``lightning.Trainer.fit`` on ``DPO``, alternating
   (TRL, policylab, TRL, ...). Tokens/s counts the non-pad tokens (``attention_mask`` sum over
   the chosen and rejected rows) of the steps after a warm-up, measured by the same counting
   wrapper around each side's collate function and a clock ticked after each optimizer step.
   Peak memory: on CPU the rise of the process's peak RSS during ``train()``/``fit()`` (the kernel's
   high-water mark, reset just before, after returning freed heap with ``malloc_trim``); on CUDA
   ``torch.cuda.max_memory_allocated`` above what was allocated before.

Making both sides do the same work per step: float32 (TRL's config defaults to bf16: off),
no gradient checkpointing (TRL's default: on), batch ``--batch-size`` pairs with no gradient
accumulation, ``torch.optim.AdamW`` with the same lr, betas, eps and no weight decay (TRL's
default is the fused AdamW: set to ``adamw_torch``), constant lr, no gradient clipping (TRL
still computes the gradient norm every step for its logs, as it always does), a reference
forward on every step (TRL's ``precompute_ref_log_probs`` and policylab's
``precompute_reference`` off), no padding-free batches, the same ``max_length`` (no row is
truncated on either side). Tokenization: TRL appends the EOS string
to each completion and tokenizes prompt and prompt+completion; policylab tokenizes the prompt
(with BOS) and the completion (plus the EOS id) separately. With the arithmetic task's
character-level tokenizer both give identical ids, which the script checks row by row, and
both collators right-pad ``[chosen rows; rejected rows]`` the same way. What stays different is
each library's own per-step machinery: TRL's fused chunked LM head and its per-step metrics
(entropy, mean logits, top-1 accuracy, several ``.item()`` calls), Lightning's loop and
``self.log_dict``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import io
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import datasets
import lightning as L
import torch
import transformers
import trl
from transformers import PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer

from policylab.datamodules import PreferenceDataModule
from policylab.losses import preference as P
from policylab.modules.preference import DPO
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, write_jsonl

MAX_LENGTH, MAX_PROMPT_LENGTH = 32, 16
TOLERANCE = 1e-5
PERTURBATIONS = ((0.05, 1), (0.3, 2), (1.0, 3))  # (std of the noise added to the policy's weights, seed)


# ----------------------------------------------------------------------------- shared setup
def trl_trainer(
    policy, reference, tokenizer, rows: list[dict], out_dir: Path, device: str, callbacks=(), **config
) -> DPOTrainer:
    """A ``DPOTrainer`` on copies of ``policy`` and ``reference`` (TRL patches the models it gets),
    configured for the same work per step as policylab (see the module docstring)."""
    args = DPOConfig(
        output_dir=str(out_dir),
        report_to="none",
        use_cpu=device == "cpu",
        bf16=False,
        gradient_checkpointing=False,
        max_length=MAX_LENGTH,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
        **config,
    )
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    return DPOTrainer(
        model=copy.deepcopy(policy),
        ref_model=copy.deepcopy(reference),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


def policylab_datamodule(rows: list[dict], tokenizer, folder: Path, batch_size: int) -> PreferenceDataModule:
    path = write_jsonl(rows, folder / f"pairs_{len(rows)}.jsonl")
    return PreferenceDataModule(
        str(path), tokenizer, batch_size=batch_size, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH
    )


def check_same_tokens(trainer: DPOTrainer, dm: PreferenceDataModule, rows: list[dict]) -> None:
    """Stop unless TRL's tokenized rows equal policylab's, id for id."""
    tokenized = trainer.train_dataset
    columns = [tokenized[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")]
    for i, row in enumerate(rows):
        ours = dm.tokenize_row(row)
        theirs = {"prompt": columns[0][i], "chosen": columns[1][i], "rejected": columns[2][i]}
        if any(ours[key] != theirs[key] for key in theirs):
            sys.exit(f"row {i} tokenizes differently: TRL {theirs}, policylab {ours}")


def perturbed(model, scale: float, seed: int):
    """A copy of ``model`` with Gaussian noise of std ``scale`` added to every weight."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return other


def quiet():
    """Silence TRL's dataset-map progress bars and deprecation warnings (stdout/stderr noise)."""
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- 1. loss agreement
def _module_loss(module: DPO, batch: dict) -> torch.Tensor:
    return module.objective(module.sequence_stats(batch), module.hparams.beta).mean()


def _bco_without_shift(module: DPO, batch: dict) -> torch.Tensor:
    return P.bco_pair_loss(*module.sequence_stats(batch).ratios(), module.hparams.beta, delta=0.0).mean()


# (label, TRL config, policylab's loss of (module, batch), DPO kwargs, expected to agree, note)
CASES = [
    ("sigmoid", {"loss_type": ["sigmoid"]}, _module_loss, {"loss_type": "sigmoid"}, True, ""),
    (
        "robust, eps 0.1",
        {"loss_type": ["robust"], "label_smoothing": 0.1},
        _module_loss,
        {"loss_type": "robust", "loss_kwargs": {"flip_rate": 0.1}},
        True,
        "",
    ),
    ("ipo", {"loss_type": ["ipo"]}, _module_loss, {"loss_type": "ipo"}, True, "both on per-token averaged log-ratios"),
    ("hinge", {"loss_type": ["hinge"]}, _module_loss, {"loss_type": "hinge"}, True, ""),
    ("nca_pair", {"loss_type": ["nca_pair"]}, _module_loss, {"loss_type": "nca_pair"}, True, ""),
    (
        "sppo = sppo_hard",
        {"loss_type": ["sppo_hard"]},
        _module_loss,
        {"loss_type": "sppo"},
        True,
        "policylab without win rates = hard labels",
    ),
    (
        "bco_pair, shift 0 (pure loss)",
        {"loss_type": ["bco_pair"]},
        _bco_without_shift,
        {"loss_type": "bco_pair"},
        True,
        "policylab.losses.preference.bco_pair_loss(delta=0)",
    ),
    (
        "bco_pair (module, running shift)",
        {"loss_type": ["bco_pair"]},
        _module_loss,
        {"loss_type": "bco_pair"},
        False,
        "TRL 1.16 has no reward shift delta; the paper and policylab do",
    ),
    (
        "rpo = sigmoid + sft, mixed lengths",
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},
        _module_loss,
        {"loss_type": "rpo", "loss_kwargs": {"alpha": 1.0}},
        False,
        "TRL's sft: mean over all chosen tokens; RPO paper: per-pair mean",
    ),
    (
        "rpo = sigmoid + sft, equal lengths",
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]},
        _module_loss,
        {"loss_type": "rpo", "loss_kwargs": {"alpha": 1.0}},
        True,
        "the two NLL means coincide when all chosen lengths are equal",
    ),
    ("apo_zero", {"loss_type": ["apo_zero"]}, _module_loss, {"loss_type": "apo_zero"}, True, ""),
    (
        "exo_pair, eps 1e-3",
        {"loss_type": ["exo_pair"], "label_smoothing": 1e-3},
        _module_loss,
        {"loss_type": "exo_pair", "loss_kwargs": {"epsilon": 1e-3}},
        True,
        "TRL's label_smoothing is EXO's epsilon",
    ),
    (
        "exo_pair, eps 0.2",
        {"loss_type": ["exo_pair"], "label_smoothing": 0.2},
        _module_loss,
        {"loss_type": "exo_pair", "loss_kwargs": {"epsilon": 0.2}},
        True,
        "",
    ),
    (
        "cDPO: sigmoid, label_smoothing 0.1",
        {"loss_type": ["sigmoid"], "label_smoothing": 0.1},
        _module_loss,
        {"loss_type": "sigmoid", "loss_kwargs": {"label_smoothing": 0.1}},
        False,
        "TRL 1.16's sigmoid ignores label_smoothing (no cDPO)",
    ),
]


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def loss_agreement(tokenizer, folder: Path, beta: float = 0.1) -> list[dict]:
    """Largest loss and gradient differences between TRL and policylab for each case."""
    reference = build_model(seed=0)
    mixed = AdditionTask(seed=1).preference_rows(48)
    equal = [r for r in AdditionTask(seed=2).preference_rows(400) if len(r["chosen"]) == 2][
        :48
    ]  # every chosen: 2 digits + EOS
    dm = policylab_datamodule(mixed + equal, tokenizer, folder, batch_size=16)
    results = []
    for label, trl_config, ours, module_kwargs, expect, note in CASES:
        rows = equal if "equal lengths" in label else mixed
        batches = [dm.collate([dm.tokenize_row(r) for r in rows[i : i + 16]]) for i in range(0, len(rows), 16)]
        worst_loss = worst_grad = 0.0
        agree = True
        for scale, seed in PERTURBATIONS:
            policy = perturbed(reference, scale, seed)
            trainer = trl_trainer(
                policy, reference, tokenizer, rows, folder / "trl_loss", "cpu", beta=beta, **trl_config
            )
            tokenized = trainer.train_dataset
            for k, batch in enumerate(batches):
                theirs_batch = trainer.data_collator([tokenized[i] for i in range(16 * k, 16 * k + 16)])
                for key in ("input_ids", "attention_mask", "completion_mask"):
                    if not torch.equal(theirs_batch[key], batch[key]):
                        sys.exit(f"{label}: TRL's collated {key} differs from policylab's")
                module = DPO(
                    copy.deepcopy(policy), reference_model=copy.deepcopy(reference), beta=beta, **module_kwargs
                ).train()
                trainer.model.zero_grad()
                theirs = trainer.compute_loss(trainer.model, batch)
                theirs.backward()
                mine = ours(module, batch)
                mine.backward()
                loss_diff = (theirs - mine).abs().item()
                g_theirs, g_mine = _grads(trainer.model), _grads(module.policy)
                if g_theirs.keys() != g_mine.keys():
                    sys.exit(f"{label}: gradients on different parameters: {sorted(g_theirs.keys() ^ g_mine.keys())}")
                largest = max(g.abs().max().item() for g in g_mine.values())
                grad_diff = max((g_theirs[n] - g_mine[n]).abs().max().item() for n in g_mine) / max(largest, 1e-12)
                agree &= loss_diff <= TOLERANCE * max(1.0, abs(mine.item())) and grad_diff <= TOLERANCE
                worst_loss, worst_grad = max(worst_loss, loss_diff), max(worst_grad, grad_diff)
        results.append(
            {
                "label": label,
                "trl": "+".join(trl_config["loss_type"]),
                "policylab": module_kwargs["loss_type"],
                "loss": worst_loss,
                "grad": worst_grad,
                "agree": agree,
                "expect": expect,
                "note": note,
            }
        )
    return results


# ----------------------------------------------------------------------------- 2. speed and memory
class CountingCollate:
    """Wraps a collate function; records each batch's non-pad token count (in batch order)."""

    def __init__(self, collate):
        self.collate, self.tokens = collate, []

    def __call__(self, rows):
        batch = self.collate(rows)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


class StepClock:
    """Times of the ends of optimizer steps (after a device sync on CUDA)."""

    def __init__(self, device: str):
        self.device, self.times, self.threads = device, [], None

    def tick(self) -> None:
        if self.threads is None:
            self.threads = torch.get_num_threads()  # what the loop really ran with
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


class _TRLTick(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.tick()


class _LightningTick(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.tick()


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Peak memory added while the block runs, in MiB. CUDA: ``max_memory_allocated`` minus what was
    allocated at entry. CPU (Linux): the kernel's RSS high-water mark, reset at entry through
    ``/proc/self/clear_refs``; where that is not writable, a thread samples RSS every 2 ms."""

    def __init__(self, device: str):
        self.device, self.mib, self._stop = device, 0.0, threading.Event()

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        _malloc_trim()
        self.base = _rss_kib("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._thread = None
        except OSError:
            self._peak = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_kib("VmRSS"))

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self._thread is None:
            self.mib = (_rss_kib("VmHWM") - self.base) / 1024
        else:
            self._stop.set()
            self._thread.join()
            self.mib = (max(self._peak, _rss_kib("VmRSS")) - self.base) / 1024
        return False


def _summary(
    name: str, clock: StepClock, counter: CountingCollate, wall: float, memory: PeakMemory, steps: int, warmup: int
) -> dict:
    if len(clock.times) != steps or len(counter.tokens) < steps:
        sys.exit(f"{name}: {len(clock.times)} optimizer steps and {len(counter.tokens)} batches, expected {steps}")
    seconds = clock.times[-1] - clock.times[warmup - 1]
    tokens = sum(counter.tokens[warmup:steps])
    return {
        "tokens_per_s": tokens / seconds,
        "steps_per_s": (steps - warmup) / seconds,
        "wall_s": wall,
        "peak_mib": memory.mib,
        "tokens_per_step": tokens / (steps - warmup),
        "threads": clock.threads,
    }


def run_trl(base, tokenizer, rows, folder, args) -> dict:
    clock = StepClock(args.device)
    trainer = trl_trainer(
        base,
        base,
        tokenizer,
        rows,
        folder / "trl_run",
        args.device,
        callbacks=[_TRLTick(clock)],
        beta=0.1,
        loss_type=["sigmoid"],
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
    )
    trainer.remove_callback(PrinterCallback)  # no metrics dict printed at the end
    counter = CountingCollate(trainer.data_collator)
    trainer.data_collator = counter
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    return _summary("TRL", clock, counter, wall, memory, args.steps, args.warmup)


def run_policylab(base, dm, args) -> dict:
    L.seed_everything(0, verbose=False)
    clock = StepClock(args.device)
    counter = CountingCollate(type(dm).collate.__get__(dm))
    dm.collate = counter  # train_dataloader reads self.collate
    module = DPO(copy.deepcopy(base), loss_type="sigmoid", beta=0.1, lr=args.lr)
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision="32-true",
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[_LightningTick(clock)],
    )
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.fit(module, dm)
        wall = time.perf_counter() - start
    return _summary("policylab", clock, counter, wall, memory, args.steps, args.warmup)


def speed_model(args):
    """The task's tiny Llama; with ``--vocab-size`` its (tied) embedding and LM head widened to a
    real tokenizer's size: the task's ids still index the first rows, but every log-softmax runs
    over the full vocabulary, as it would with a real tokenizer."""
    model = build_model(seed=0, hidden_size=args.hidden_size, num_layers=args.layers, max_length=MAX_LENGTH)
    if args.vocab_size:
        model.resize_token_embeddings(args.vocab_size)
    return model


def speed_and_memory(tokenizer, folder: Path, args) -> dict[str, list[dict]]:
    rows = AdditionTask(seed=0).preference_rows(args.rows)
    base = speed_model(args)
    dm = policylab_datamodule(rows, tokenizer, folder, args.batch_size)
    dm.setup("fit")  # tokenize before timing, as TRL does in its constructor
    check_same_tokens(trl_trainer(base, base, tokenizer, rows, folder / "trl_check", "cpu"), dm, rows)
    results = {"TRL": [], "policylab": []}
    for round_ in range(args.rounds):
        results["TRL"].append(run_trl(base, tokenizer, rows, folder, args))
        results["policylab"].append(run_policylab(base, dm, args))
        t, p = results["TRL"][-1], results["policylab"][-1]
        print(
            f"round {round_}: TRL {t['tokens_per_s']:,.0f} tokens/s, peak +{t['peak_mib']:.1f} MiB | "
            f"policylab {p['tokens_per_s']:,.0f} tokens/s, peak +{p['peak_mib']:.1f} MiB | "
            f"policylab/TRL {p['tokens_per_s'] / t['tokens_per_s']:.3f}",
            flush=True,
        )
    return results


# ----------------------------------------------------------------------------- report
def print_report(agreement: list[dict], speed: dict[str, list[dict]], args) -> bool:
    ok = True
    if agreement:
        print(
            "\n### Loss agreement (same model and batch; max over 3 batches of 16 pairs x "
            f"{len(PERTURBATIONS)} perturbations; beta 0.1)\n"
        )
        print("| case | TRL loss_type | policylab | max abs diff, loss | max rel. diff, grad | agree (1e-5) | note |")
        print("|---|---|---|---|---|---|---|")
    for r in agreement:
        verdict = "yes" if r["agree"] else "**no**"
        if r["agree"] != r["expect"]:
            verdict += " (UNEXPECTED)"
            ok = False
        print(
            f"| {r['label']} | {r['trl']} | {r['policylab']} | {r['loss']:.2e} | {r['grad']:.2e} | {verdict} "
            f"| {r['note']} |"
        )
    if not speed:
        return ok
    median = {
        side: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for side, runs in speed.items()
    }
    t, p = median["TRL"], median["policylab"]
    model = speed_model(args)
    params, vocab = sum(x.numel() for x in model.parameters()), model.config.vocab_size
    print(
        f"\n### Training speed and memory (sigmoid DPO, {params:,}-parameter Llama, vocabulary {vocab:,}, "
        f"batch {args.batch_size} pairs, "
        f"{args.steps} steps, first {args.warmup} not timed; medians of {args.rounds} alternating rounds)\n"
    )
    memory = "peak CUDA memory allocated (MiB)" if args.device == "cuda" else "peak RSS increase (MiB)"
    print(f"| | tokens/s | steps/s | wall of train()/fit() (s) | {memory} |")
    print("|---|---|---|---|---|")
    for name, m in (("TRL DPOTrainer.train()", t), ("policylab DPO + Trainer.fit", p)):
        print(
            f"| {name} | {m['tokens_per_s']:,.0f} | {m['steps_per_s']:.1f} | {m['wall_s']:.1f} | {m['peak_mib']:.1f} |"
        )
    memory_ratio = f"{p['peak_mib'] / t['peak_mib']:.2f}" if t["peak_mib"] > 0 else "n/a"
    print(
        f"| policylab / TRL | {p['tokens_per_s'] / t['tokens_per_s']:.3f} "
        f"| {p['steps_per_s'] / t['steps_per_s']:.3f} | "
        f"{p['wall_s'] / t['wall_s']:.3f} | {memory_ratio} |"
    )
    print(
        f"\n{t['tokens_per_step']:.0f} (TRL) and {p['tokens_per_step']:.0f} (policylab) non-pad tokens per timed step; "
        f"torch threads inside the loops: TRL {t['threads']:.0f}, policylab {p['threads']:.0f}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50, help="first optimizer steps left out of the rates")
    parser.add_argument("--batch-size", type=int, default=32, help="preference pairs per step (2x sequences)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=4000, help="arithmetic preference pairs in the training set")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--vocab-size", type=int, default=0, help="widen the model's vocabulary (0: the task's 17 tokens)"
    )
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the loss agreement table")
    args = parser.parse_args()
    if not 0 < args.warmup < args.steps:
        parser.error("need 0 < --warmup < --steps")
    torch.set_num_threads(args.threads)
    quiet()
    print(
        f"{args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, trl {trl.__version__}, "
        f"transformers {transformers.__version__}, lightning {L.__version__}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = build_tokenizer(folder / "tokenizer")
        with contextlib.redirect_stdout(io.StringIO()):
            agreement = [] if args.skip_agreement else loss_agreement(tokenizer, folder)
        speed = {} if args.skip_speed else speed_and_memory(tokenizer, folder, args)
    ok = print_report(agreement, speed, args)
    if not ok:
        sys.exit("a loss type agreed or disagreed against expectation (see the table)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
