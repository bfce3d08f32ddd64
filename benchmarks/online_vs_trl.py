"""policylab's ``OnlineDPO`` against HF TRL's ``OnlineDPOTrainer`` (trl 1.16,
``trl.experimental.online_dpo``), side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/online_vs_trl.py --threads 1        # shared machine
    python benchmarks/online_vs_trl.py [--steps 60] [--batch-size 32] [--rounds 3] [--device cuda]

The same tiny Llama of the addition task (``policylab.tasks.arithmetic.build_model``, seed 0) and
its character tokenizer, the same prompts (``AdditionTask(seed=0).sft_rows``, prompts only), the
same judge (the task's verifier ``is_correct``: 1 for the right sum, else 0; TRL gets it as a
reward function, policylab as a ``VerifierJudge``), alternating rounds (TRL then policylab, then policylab
then TRL, ...).

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
step: judging, pairing, forwards, backward, optimizer); steps/s end to end; steps per CPU-second (the
process's CPU time, which other jobs on a shared machine inflate far less than the wall clock); peak
memory (CPU: rise of the peak RSS during ``train()``/``fit()``, as in benchmarks/dpo_vs_trl.py; CUDA:
``max_memory_allocated`` above the start). The ratio row is the median of the per-round ratios.

``--profile`` also says where each side's step goes: the phases of the step (generation, the HF model
forwards inside it, judging, pairing, the policy and reference forwards, backward, optimizer, the
loop's own code) timed by wrappers as exclusive CPU and wall time per step, and the rise of the peak
RSS during each phase.
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
from dpo_vs_trl import PeakMemory, StepClock, _rss_kib, quiet  # noqa: E402

from policylab.datamodules import OnlinePromptDataModule  # noqa: E402
from policylab.judges import VerifierJudge  # noqa: E402
from policylab.modules.preference import OnlineDPO  # noqa: E402
from policylab.tasks.arithmetic import AdditionTask, build_model, build_tokenizer, is_correct, write_jsonl  # noqa: E402


def verifier_reward(prompts, completions, **kwargs) -> list[float]:
    """The task's verifier as a TRL reward function."""
    return [float(is_correct(p, c)) for p, c in zip(prompts, completions)]


class Counter:
    """Per-step generation seconds, completion tokens and trained tokens of one side, and the process's
    CPU time at each step's end (``time.process_time``: what the side computed, not the time it waited
    for a core while other jobs ran)."""

    def __init__(self):
        self.gen_seconds, self.gen_tokens, self.train_tokens = [], [], []
        self.kl_seconds: list[float] = []  # policylab's no-grad KL estimate (inside the training time)
        self.cpu_times: list[float] = []


class Phases:
    """Where a side's step time goes: wrapped functions accumulate their EXCLUSIVE time (their own,
    minus that of wrapped functions they call) per call path, wall (``perf_counter``) and CPU
    (``thread_time``), over the steps after the warmup; with ``memory``, also the rise of the process's
    peak RSS (VmHWM) during each phase, over the whole run (the peak is first reached early)."""

    def __init__(self, memory: bool = False):
        self.active, self.memory = False, memory
        self.wall: dict[tuple, float] = {}
        self.cpu: dict[tuple, float] = {}
        self.peak: dict[tuple, float] = {}
        self.stack: list[list] = []  # [path, wall start, cpu start, child wall, child cpu, hwm start, child rise]

    def wrap(self, owner, attr: str, name, restore: list | None = None) -> None:
        """Replace ``owner.attr`` by a timed call; ``name`` is a string or a function of the call's
        arguments giving one (None: not timed)."""
        function = getattr(owner, attr)
        phases = self

        def timed(*args, **kwargs):
            label = name(*args, **kwargs) if callable(name) else name
            if label is None:
                return function(*args, **kwargs)
            path = (*(phases.stack[-1][0] if phases.stack else ()), label)
            hwm = _rss_kib("VmHWM") if phases.memory else 0
            phases.stack.append([path, time.perf_counter(), time.thread_time(), 0.0, 0.0, hwm, 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                _, wall0, cpu0, child_wall, child_cpu, hwm0, child_rise = phases.stack.pop()
                wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
                rise = (_rss_kib("VmHWM") - hwm0) / 1024 if phases.memory else 0.0
                if phases.stack:  # a parent's own time and rise leave out those of its children
                    phases.stack[-1][3] += wall
                    phases.stack[-1][4] += cpu
                    phases.stack[-1][6] += rise
                if phases.active:
                    phases.wall[path] = phases.wall.get(path, 0.0) + wall - child_wall
                    phases.cpu[path] = phases.cpu.get(path, 0.0) + cpu - child_cpu
                if phases.memory:
                    phases.peak[path] = phases.peak.get(path, 0.0) + rise - child_rise

        if restore is not None:
            restore.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
        setattr(owner, attr, timed)


_MISSING = object()


def _unwrap(restore: list) -> None:
    for owner, attr, old in reversed(restore):
        if old is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, old)


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
    cpu_seconds = counter.cpu_times[-1] - counter.cpu_times[warmup - 1]
    return {
        "cpu_steps_per_s": (steps - warmup) / cpu_seconds,
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


def _tick(clock: StepClock, counter: Counter, phases: Phases | None, warmup: int) -> None:
    clock.tick()
    counter.cpu_times.append(time.process_time())
    if phases is not None and len(clock.times) == warmup:
        phases.active = True


class _TRLTick(TrainerCallback):
    def __init__(self, clock, counter, phases, warmup, restore):
        self.clock, self.counter, self.phases, self.warmup, self.restore = clock, counter, phases, warmup, restore

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.phases is not None and optimizer is not None:
            self.phases.wrap(optimizer, "step", "optimizer step", self.restore)
            self.phases.wrap(optimizer, "zero_grad", "zero_grad", self.restore)

    def on_step_end(self, args, state, control, **kwargs):
        _tick(self.clock, self.counter, self.phases, self.warmup)


def run_trl(base, tokenizer, prompts: list[str], folder: Path, args, phases: Phases | None = None) -> dict:
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
    clock, counter, restore = StepClock(args.device), Counter(), []
    trainer = OnlineDPOTrainer(
        model=copy.deepcopy(base),
        ref_model=copy.deepcopy(base),
        reward_funcs=verifier_reward,
        args=config,
        train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        callbacks=[_TRLTick(clock, counter, phases, args.warmup, restore)],
    )
    trainer.remove_callback(PrinterCallback)
    if phases is not None:
        ref = trainer.ref_model
        phases.wrap(trainer, "training_step", "step: loss, stats (.item()), rest", restore)
        phases.wrap(trainer, "_generate", "generation", restore)
        phases.wrap(trainer.model, "forward", "model forward", restore)
        phases.wrap(ref, "forward", "model forward", restore)
        phases.wrap(
            trainer,
            "_forward",
            lambda model, *a, **k: "reference forward" if model is ref else "policy forward",
            restore,
        )
        phases.wrap(trainer, "_calculate_rewards_from_functions", "judge", restore)
        phases.wrap(trainer.accelerator, "backward", "backward", restore)

    def tokens(out):  # prompt_ids, prompt_mask, completion_ids, completion_mask, _
        _, prompt_mask, _, completion_mask, _ = out
        return int(completion_mask.sum()), int(prompt_mask.sum() + completion_mask.sum())

    trainer._generate = _timed(trainer._generate, counter, args.device, tokens)
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    _unwrap(restore)
    return _summary("TRL", clock, counter, wall, memory, args)


class _Instrument(L.Callback):
    """Ticks the clock after each step; times the sampler and counts the trained tokens."""

    def __init__(self, clock: StepClock, counter: Counter, device: str, phases: Phases | None, warmup: int):
        self.clock, self.counter, self.device, self.phases, self.warmup = clock, counter, device, phases, warmup
        self.restore: list = []

    def on_train_start(self, trainer, module):
        if self.phases is not None:
            self._wrap_phases(trainer, module)
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

    def _wrap_phases(self, trainer, module) -> None:
        import policylab.modules.preference.online_dpo as online_dpo
        import policylab.sampling.hf as hf

        wrap, restore, data = self.phases.wrap, self.restore, trainer.datamodule
        wrap(module, "training_step", "step: Lightning's training_step call, rest", restore)
        wrap(module, "run_iteration", "iteration: eval/train modes, metrics, rest", restore)
        wrap(module.sampler, "sample", "generation", restore)
        wrap(hf, "encode_prompts", "tokenize prompts", restore)
        wrap(hf, "completions_from_batches", "assemble Completions", restore)
        wrap(module.policy, "forward", "model forward", restore)
        wrap(module.reference, "forward", "model forward", restore)
        wrap(module, "score_completions", "judge", restore)
        wrap(online_dpo, "right_padded", "right_padded", restore)
        wrap(module, "make_pairs", "make_pairs", restore)
        wrap(data, "store_iteration", "store pairs", restore)
        wrap(module, "_kl_estimate", "KL estimate (logged iterations)", restore)
        wrap(data, "step_batch", "step_batch", restore)
        wrap(module, "shared_step", "loss, metrics", restore)
        wrap(module, "sequence_stats", "policy forward", restore)
        wrap(module, "reference_log_probs", "reference forward", restore)
        wrap(module, "log_step", "log_step", restore)
        wrap(module, "backward", "backward", restore)
        optimizer = trainer.optimizers[0]
        wrap(optimizer, "step", "optimizer step", restore)
        wrap(optimizer, "zero_grad", "zero_grad", restore)

    def on_train_end(self, trainer, module):
        _unwrap(self.restore)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        _tick(self.clock, self.counter, self.phases, self.warmup)


def run_policylab(base, tokenizer, prompt_file: Path, args, phases: Phases | None = None) -> dict:
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
        callbacks=[_Instrument(clock, counter, args.device, phases, args.warmup)],
    )
    with PeakMemory(args.device) as memory:
        start = time.perf_counter()
        trainer.fit(module, dm)
        wall = time.perf_counter() - start
    return _summary("policylab", clock, counter, wall, memory, args)


RATIO_KEYS = ("gen_tokens_per_s", "train_tokens_per_s", "steps_per_s", "cpu_steps_per_s", "wall_s", "peak_mib")


def print_report(results: dict[str, list[dict]], args, params: int) -> None:
    median = {
        side: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for side, runs in results.items()
    }
    # The ratio row: the median over rounds of each round's policylab / TRL (rounds alternate, so each
    # ratio compares two runs seconds apart, under about the same load from other jobs).
    ratio = {
        key: statistics.median(p[key] / t[key] if t[key] else float("nan") for t, p in zip(*results.values()))
        for key in RATIO_KEYS
    }
    t, p = median["TRL"], median["policylab"]
    print(
        f"\n### Online DPO: speed and memory ({params:,}-parameter Llama, {args.batch_size} prompts x 2 samples "
        f"per step, up to {args.max_new_tokens} new tokens, {args.steps} steps, first {args.warmup} not timed; "
        f"medians of {args.rounds} alternating rounds, the ratio row the median of the per-round ratios; "
        f"trl {trl.__version__}, torch threads {t['threads']:.0f} / {p['threads']:.0f}, device {args.device})\n"
    )
    memory = "peak CUDA memory allocated (MiB)" if args.device == "cuda" else "peak RSS increase (MiB)"
    print(
        "| | generation tokens/s | training tokens/s | steps/s | steps per CPU-second | time in generation "
        f"| wall (s) | {memory} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, m in (("TRL OnlineDPOTrainer.train()", t), ("policylab OnlineDPO + Trainer.fit", p)):
        print(
            f"| {name} | {m['gen_tokens_per_s']:,.0f} | {m['train_tokens_per_s']:,.0f} | {m['steps_per_s']:.2f} "
            f"| {m['cpu_steps_per_s']:.2f} | {m['gen_fraction']:.0%} | {m['wall_s']:.1f} | {m['peak_mib']:.1f} |"
        )
    print(
        f"| policylab / TRL | {ratio['gen_tokens_per_s']:.3f} | {ratio['train_tokens_per_s']:.3f} "
        f"| {ratio['steps_per_s']:.3f} | {ratio['cpu_steps_per_s']:.3f} | | {ratio['wall_s']:.3f} "
        f"| {ratio['peak_mib']:.2f} |"
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


def _phase_label(path: tuple) -> str:
    """A phase by its own name; a model forward by the phase that called it."""
    if path[-1] == "model forward" and len(path) > 1:
        return f"{path[-2]}: HF model forward"
    return path[-1]


def print_profile(profiles: dict[str, list[Phases]], results: dict[str, list[dict]], args) -> None:
    """Milliseconds per timed step of each phase (exclusive CPU time, medians over rounds; wall in
    parentheses) and the rise of the peak RSS during each phase (median over rounds)."""
    timed = args.steps - args.warmup
    table: dict[str, dict[str, tuple[float, float, float]]] = {}
    for side, rounds in profiles.items():
        per_round = []
        for phases in rounds:
            merged: dict[str, list[float]] = {}
            for path in set(phases.cpu) | set(phases.peak):
                row = merged.setdefault(_phase_label(path), [0.0, 0.0, 0.0])
                row[0] += phases.cpu.get(path, 0.0) * 1e3 / timed
                row[1] += phases.wall.get(path, 0.0) * 1e3 / timed
                row[2] += phases.peak.get(path, 0.0)
            per_round.append(merged)
        labels = {label for merged in per_round for label in merged}
        table[side] = {
            label: tuple(statistics.median(m.get(label, [0.0] * 3)[i] for m in per_round) for i in range(3))
            for label in labels
        }
    memory = any(phases.memory for rounds in profiles.values() for phases in rounds)
    print(
        f"\n### Where the time goes (ms per timed step: exclusive CPU time of each phase, wall in parentheses; "
        f"medians of {args.rounds} rounds" + ("; peak RSS rise in MiB during the phase)\n" if memory else ")\n")
    )
    print("| phase | TRL ms/step | policylab ms/step |" + (" TRL peak rise | policylab peak rise |" if memory else ""))
    print("|---|---|---|" + ("---|---|" if memory else ""))
    labels = sorted(
        set(table["TRL"]) | set(table["policylab"]), key=lambda k: -max(table[s].get(k, (0,))[0] for s in table)
    )
    totals = {side: [0.0, 0.0, 0.0] for side in table}
    for label in labels:
        cells = []
        for side in ("TRL", "policylab"):
            value = table[side].get(label)
            cells.append(f"{value[0]:.2f} ({value[1]:.2f})" if value else "")
            if value:
                totals[side] = [a + b for a, b in zip(totals[side], value)]
        peaks = [f"{table[side][label][2]:.1f}" if label in table[side] else "" for side in ("TRL", "policylab")]
        print(f"| {label} | {cells[0]} | {cells[1]} |" + (f" {peaks[0]} | {peaks[1]} |" if memory else ""))
    t, p = totals["TRL"], totals["policylab"]
    print(
        f"| sum of the phases | {t[0]:.2f} ({t[1]:.2f}) | {p[0]:.2f} ({p[1]:.2f}) |"
        + (f" {t[2]:.1f} | {p[2]:.1f} |" if memory else "")
    )
    step = {side: statistics.median(1e3 / run["cpu_steps_per_s"] for run in runs) for side, runs in results.items()}
    print(
        f"| the rest: the trainer's loop outside these phases | {step['TRL'] - t[0]:.2f} | "
        f"{step['policylab'] - p[0]:.2f} |" + (" | |" if memory else "")
    )
    print(
        f"| whole step (process CPU time) | {step['TRL']:.2f} | {step['policylab']:.2f} |" + (" | |" if memory else "")
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
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time each phase of both sides' steps (wrapped functions, exclusive time; the wrappers slow both "
        "sides a little, so the speed table of such a run is not the one to quote)",
    )
    parser.add_argument(
        "--profile-memory",
        action="store_true",
        help="with --profile: also the rise of the peak RSS during each phase (reads /proc/self/status twice per "
        "wrapped call, about 80 us: run it apart from the timing profile)",
    )
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
        profiles: dict[str, list[Phases]] = {"TRL": [], "policylab": []}
        for round_ in range(args.rounds):
            memory = args.profile_memory and args.device == "cpu"
            phases = {side: Phases(memory=memory) if args.profile else None for side in results}
            # Each side goes first in every other round: on a shared machine whose load drifts, neither
            # side always runs in the later (or earlier) half of a round.
            order = ("TRL", "policylab") if round_ % 2 == 0 else ("policylab", "TRL")
            for side in order:
                if side == "TRL":
                    results["TRL"].append(run_trl(base, tokenizer, prompts, folder, args, phases["TRL"]))
                else:
                    results["policylab"].append(
                        run_policylab(base, tokenizer, folder / "prompts.jsonl", args, phases["policylab"])
                    )
            t, p = results["TRL"][-1], results["policylab"][-1]
            print(
                f"round {round_}: TRL gen {t['gen_tokens_per_s']:,.0f} / train {t['train_tokens_per_s']:,.0f} "
                f"tokens/s, {t['steps_per_s']:.2f} steps/s, peak +{t['peak_mib']:.1f} MiB | policylab gen "
                f"{p['gen_tokens_per_s']:,.0f} / train {p['train_tokens_per_s']:,.0f} tokens/s, "
                f"{p['steps_per_s']:.2f} steps/s, peak +{p['peak_mib']:.1f} MiB",
                flush=True,
            )
            if args.profile:
                for side in profiles:
                    profiles[side].append(phases[side])
        print_report(results, args, sum(x.numel() for x in base.parameters()))
        if args.profile:
            print_profile(profiles, results, args)


if __name__ == "__main__":
    main()
