"""policylab's ``OnlineDPO`` against HF TRL's ``OnlineDPOTrainer`` (trl 1.16,
``trl.experimental.online_dpo``), side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/online_vs_trl.py --threads 1        # shared machine
    python benchmarks/online_vs_trl.py [--steps 60] [--batch-size 32] [--rounds 3] [--device cuda]

The same tiny Llama of the addition task (``policylab.tasks.arithmetic.build_model``, seed 0) and
its character tokenizer, the same prompts (``AdditionTask(seed=0).sft_rows``, prompts only), the
same judge (the task's verifier ``is_correct``: 1 for the right sum, else 0; TRL gets it as a
reward function, policylab as a ``VerifierJudge``), alternating rounds (TRL, policylab, TRL, ...).

Same work per step, as TRL's online DPO does it: ``--batch-size`` prompts per step, 2 sampled
completions each (HF ``generate``, temperature 0.9, ``--max-new-tokens``, KV cache), the two
completions of a prompt paired (the higher score chosen; a tie keeps the first as chosen: TRL's
rule, policylab's ``keep_ties: true``), one sigmoid DPO step (beta 0.1) on all those pairs against a
fixed reference; policylab samples afresh every step (``generate_every_n_steps: 1``,
``prompts_per_iteration`` = ``batch_size`` = ``--batch-size``). float32, no gradient checkpointing
(TRL's default: on; it also turns the KV cache off), ``torch.optim.AdamW`` with the same lr, constant,
no gradient clipping, no weight decay. What stays different is each library's own machinery:
policylab adds a no-grad KL estimate (one policy and one reference forward over the samples) for
its ``online/kl`` log where TRL takes the KL from its training forward; TRL computes a dozen
statistics with ``.item()`` per step; prompt tokens: TRL tokenizes prompts without special tokens,
policylab's sampler with the tokenizer's BOS (counted on each side as it is).

Measured per side (after ``--warmup`` steps): generation tokens/s (completion tokens, EOS included,
over the time inside the generate call: TRL's ``_generate``, policylab's ``sampler.sample``);
training tokens/s (non-pad prompt + completion tokens of the trained rows over the rest of the
step: judging, pairing, forwards, backward, optimizer); steps/s end to end; peak memory (CPU: rise
of the peak RSS during ``train()``/``fit()``, as in benchmarks/dpo_vs_trl.py; CUDA:
``max_memory_allocated`` above the start).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets
import lightning as L
import torch
import trl
from transformers import PrinterCallback, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_vs_trl import PeakMemory, StepClock, quiet  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.modules.preference import OnlineDPO  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402


def verifier_reward(prompts, completions, **kwargs) -> list[float]:
    """The task's verifier as a TRL reward function."""
    return [float(is_correct(p, c)) for p, c in zip(prompts, completions)]


class Counter:
    """Per-step generation seconds, completion tokens and trained tokens of one side."""

    def __init__(self):
        self.gen_seconds, self.gen_tokens, self.train_tokens = [], [], []
        self.kl_seconds: list[float] = []  # policylab's no-grad KL estimate (inside the training time)


def _timed(function, counter: Counter, device: str, tokens_of):
    def wrapper(*args, **kwargs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = function(*args, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        counter.gen_seconds.append(time.perf_counter() - start)
        gen, train = tokens_of(out)
        counter.gen_tokens.append(gen)
        if train is not None:
            counter.train_tokens.append(train)
        return out

    return wrapper


def _summary(name: str, clock: StepClock, counter: Counter, wall: float, memory: PeakMemory, args) -> dict:
    steps, warmup = args.steps, args.warmup
    if len(clock.times) != steps or len(counter.gen_seconds) != steps or len(counter.train_tokens) != steps:
        sys.exit(
            f"{name}: {len(clock.times)} steps, {len(counter.gen_seconds)} generations, "
            f"{len(counter.train_tokens)} trained batches; expected {steps} of each"
        )
    seconds = clock.times[-1] - clock.times[warmup - 1]
    gen_seconds = sum(counter.gen_seconds[warmup:])
    gen_tokens, train_tokens = sum(counter.gen_tokens[warmup:]), sum(counter.train_tokens[warmup:])
    kl_seconds = sum(counter.kl_seconds[warmup:])
    return {
        "gen_tokens_per_s": gen_tokens / gen_seconds,
        "train_tokens_per_s": train_tokens / (seconds - gen_seconds),
        "train_tokens_per_s_without_kl": train_tokens / (seconds - gen_seconds - kl_seconds),
        "kl_fraction": kl_seconds / seconds,
        "steps_per_s": (steps - warmup) / seconds,
        "gen_fraction": gen_seconds / seconds,
        "wall_s": wall,
        "peak_mib": memory.mib,
        "gen_tokens_per_step": gen_tokens / (steps - warmup),
        "train_tokens_per_step": train_tokens / (steps - warmup),
        "threads": clock.threads,
    }


class _TRLTick(TrainerCallback):
    def __init__(self, clock):
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.tick()


def run_trl(base, tokenizer, prompts: list[str], folder: Path, args) -> dict:
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    config = OnlineDPOConfig(
        output_dir=str(folder / "trl_run"),
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=False,
        gradient_checkpointing=False,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        learning_rate=args.lr,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        max_new_tokens=args.max_new_tokens,
        temperature=0.9,
        beta=[0.1],
        loss_type="sigmoid",
        seed=0,
    )
    clock, counter = StepClock(args.device), Counter()
    trainer = OnlineDPOTrainer(
        model=copy.deepcopy(base),
        ref_model=copy.deepcopy(base),
        reward_funcs=verifier_reward,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        callbacks=[_TRLTick(clock)],
    )
    trainer.remove_callback(PrinterCallback)

    def tokens(out):  # prompt_ids, prompt_mask, completion_ids, completion_mask, _
        _, prompt_mask, _, completion_mask, _ = out
        return int(completion_mask.sum()), int(prompt_mask.sum() + completion_mask.sum())

    trainer._generate = _timed(trainer._generate, counter, args.device, tokens)
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    return _summary("TRL", clock, counter, wall, memory, args)


class _Instrument(L.Callback):
    """Ticks the clock after each step; times the sampler and counts the trained tokens."""

    def __init__(self, clock: StepClock, counter: Counter, device: str):
        self.clock, self.counter, self.device = clock, counter, device

    def on_train_start(self, trainer, module):
        module.sampler.sample = _timed(
            module.sampler.sample, self.counter, self.device, lambda c: (int(c.completion_mask.sum()), None)
        )
        data, step_batch = trainer.datamodule, trainer.datamodule.step_batch

        def counted(*a, **k):
            batch = step_batch(*a, **k)
            self.counter.train_tokens.append(int(batch["attention_mask"].sum()) if batch is not None else 0)
            return batch

        data.step_batch = counted
        kl_estimate = module._kl_estimate

        def timed_kl(rows):
            start = time.perf_counter()
            out = kl_estimate(rows)
            if self.device == "cuda":
                torch.cuda.synchronize()
            self.counter.kl_seconds.append(time.perf_counter() - start)
            return out

        module._kl_estimate = timed_kl

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.clock.tick()


def run_policylab(base, tokenizer, prompt_file: Path, args) -> dict:
    L.seed_everything(0, verbose=False)
    clock, counter = StepClock(args.device), Counter()
    module = OnlineDPO(
        copy.deepcopy(base),
        judge=VerifierJudge(is_correct),
        loss_type="sigmoid",
        beta=0.1,
        num_generations=2,
        pair_rule="random_pair",
        keep_ties=True,
        generate_every_n_steps=1,
        max_new_tokens=args.max_new_tokens,
        temperature=0.9,
        generation_batch_size=2 * args.batch_size,
        num_sample_texts=0,
        lr=args.lr,
    )
    dm = OnlinePromptDataModule(
        str(prompt_file),
        tokenizer,
        prompts_per_iteration=args.batch_size,
        batch_size=args.batch_size,
        max_prompt_length=16,
        seed=0,
    )
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
        callbacks=[_Instrument(clock, counter, args.device)],
    )
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.fit(module, dm)
        wall = time.perf_counter() - start
    return _summary("policylab", clock, counter, wall, memory, args)


def print_report(results: dict[str, list[dict]], args, params: int) -> None:
    median = {
        side: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for side, runs in results.items()
    }
    t, p = median["TRL"], median["policylab"]
    print(
        f"\n### Online DPO: speed and memory ({params:,}-parameter Llama, {args.batch_size} prompts x 2 samples "
        f"per step, up to {args.max_new_tokens} new tokens, {args.steps} steps, first {args.warmup} not timed; "
        f"medians of {args.rounds} alternating rounds; trl {trl.__version__}, torch threads {t['threads']:.0f} / "
        f"{p['threads']:.0f}, device {args.device})\n"
    )
    memory = "peak CUDA memory allocated (MiB)" if args.device == "cuda" else "peak RSS increase (MiB)"
    print(f"| | generation tokens/s | training tokens/s | steps/s | time in generation | wall (s) | {memory} |")
    print("|---|---|---|---|---|---|---|")
    for name, m in (("TRL OnlineDPOTrainer.train()", t), ("policylab OnlineDPO + Trainer.fit", p)):
        print(
            f"| {name} | {m['gen_tokens_per_s']:,.0f} | {m['train_tokens_per_s']:,.0f} | {m['steps_per_s']:.2f} "
            f"| {m['gen_fraction']:.0%} | {m['wall_s']:.1f} | {m['peak_mib']:.1f} |"
        )
    memory_ratio = f"{p['peak_mib'] / t['peak_mib']:.2f}" if t["peak_mib"] > 0 else "n/a"
    print(
        f"| policylab / TRL | {p['gen_tokens_per_s'] / t['gen_tokens_per_s']:.3f} "
        f"| {p['train_tokens_per_s'] / t['train_tokens_per_s']:.3f} | {p['steps_per_s'] / t['steps_per_s']:.3f} "
        f"| | {p['wall_s'] / t['wall_s']:.3f} | {memory_ratio} |"
    )
    print(
        f"\nper timed step: completion tokens TRL {t['gen_tokens_per_step']:.0f}, policylab "
        f"{p['gen_tokens_per_step']:.0f}; trained non-pad tokens TRL {t['train_tokens_per_step']:.0f}, "
        f"policylab {p['train_tokens_per_step']:.0f} (policylab's prompts carry the BOS token)"
    )
    print(
        f"policylab's no-grad KL estimate for online/kl (TRL reuses its training forward): {p['kl_fraction']:.0%} "
        f"of policylab's step time; policylab's training tokens/s without it {p['train_tokens_per_s_without_kl']:,.0f} "
        f"({p['train_tokens_per_s_without_kl'] / t['train_tokens_per_s']:.3f} x TRL's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the rates")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per step (2 samples each)")
    parser.add_argument("--max-new-tokens", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = build_tokenizer(folder / "tok")
        prompts = [row["prompt"] for row in AdditionTask(seed=0).sft_rows(args.prompts)]
        write_jsonl([{"prompt": p} for p in prompts], folder / "prompts.jsonl")
        base = build_model(seed=0)
        results = {"TRL": [], "policylab": []}
        for round_ in range(args.rounds):
            results["TRL"].append(run_trl(base, tokenizer, prompts, folder, args))
            results["policylab"].append(run_policylab(base, tokenizer, folder / "prompts.jsonl", args))
            t, p = results["TRL"][-1], results["policylab"][-1]
            print(
                f"round {round_}: TRL gen {t['gen_tokens_per_s']:,.0f} / train {t['train_tokens_per_s']:,.0f} "
                f"tokens/s, {t['steps_per_s']:.2f} steps/s, peak +{t['peak_mib']:.1f} MiB | policylab gen "
                f"{p['gen_tokens_per_s']:,.0f} / train {p['train_tokens_per_s']:,.0f} tokens/s, "
                f"{p['steps_per_s']:.2f} steps/s, peak +{p['peak_mib']:.1f} MiB",
                flush=True,
            )
        print_report(results, args, sum(x.numel() for x in base.parameters()))


if __name__ == "__main__":
    main()
