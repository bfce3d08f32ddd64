"""Addition with ground truth: the embedded language task of the preference methods.

A prompt is ``"37+45="``; the right completion is ``"82"``. Everything is made here, offline:
a character-level tokenizer and a tiny Llama-architecture causal LM saved in Hugging Face's own
formats (so ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained`` load them like any
hub model), SFT rows of mixed quality, preference pairs (chosen = right, rejected = a plausible
wrong answer, optionally flipped at a given rate), and a judge that checks an answer exactly.

    python -m policylab.tasks.arithmetic --out data/arithmetic     # tokenizer/, model/, *.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARACTERS = tuple("0123456789+-=")


def build_tokenizer(directory: str | Path | None = None):
    """A character-level ``PreTrainedTokenizerFast`` (digits, ``+ - =``, pad/bos/eos/unk) that
    prepends ``<bos>``; saved to ``directory`` when given."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    if directory is not None:
        fast.save_pretrained(str(directory))
    return fast


def build_model(
    directory: str | Path | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_length: int = 32,
    seed: int = 0,
):
    """A randomly initialised Llama-architecture causal LM sized for this vocabulary (about 85k
    parameters at the defaults); saved to ``directory`` when given."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(SPECIAL_TOKENS) + len(CHARACTERS),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_length,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if directory is not None:
        model.save_pretrained(str(directory))
    return model


def dropped_carry_sum(a: int, b: int) -> int:
    """``a + b`` computed digit by digit with every carry forgotten (37 + 45 -> 72): the
    systematic mistake of the ``mistake="dropped_carry"`` task."""
    total, place = 0, 1
    while a or b:
        total += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return total


def flipped_carry_sum(a: int, b: int) -> int:
    """``a + b`` with the units column's carry flipped: dropped where there is one (37 + 45 -> 72),
    added where there is none (31 + 45 -> 86). The wrong answer is as often larger as smaller,
    and rarely of another length, so a preference learner cannot tell it from the right one
    by size or length: only by doing the carry. The mistake of ``mistake="flipped_carry"``."""
    return a + b - 10 if a % 10 + b % 10 >= 10 else a + b + 10


MISTAKES = ("random", "dropped_carry", "flipped_carry")


@dataclass
class AdditionTask:
    """Sums of two integers in ``[0, max_operand]``; every random choice comes from ``seed``.

    ``mistake`` sets what a wrong answer is: ``"random"`` (off by a small amount, so the right
    answer stays the most frequent one), ``"dropped_carry"`` (the sum with carries forgotten
    wherever the problem has a carry, else a random offset): a systematic error that a model
    trained on enough such rows learns as the answer; the wrong answer is never larger than
    the right one, a cue that preference learners pick up instead of the carry), or
    ``"flipped_carry"`` (:func:`flipped_carry_sum` on every problem: systematic, and as often
    larger as smaller).
    """

    max_operand: int = 99
    seed: int = 0
    mistake: str = "random"

    def __post_init__(self) -> None:
        if self.mistake not in MISTAKES:
            raise ValueError(f"mistake must be one of {MISTAKES}, got {self.mistake!r}")
        self._rng = random.Random(self.seed)

    def problem(self) -> tuple[str, str]:
        a, b = self._rng.randint(0, self.max_operand), self._rng.randint(0, self.max_operand)
        return f"{a}+{b}=", str(a + b)

    def wrong_answer(self, answer: str, prompt: str | None = None) -> str:
        """A plausible mistake: off by 1 to 10, or by ten in one digit; never the right answer
        and never negative. With ``mistake="dropped_carry"`` and a ``prompt`` that has a carry,
        the sum without carries; with ``mistake="flipped_carry"`` and a ``prompt``, the sum with
        the units carry flipped."""
        value = int(answer)
        if self.mistake != "random" and prompt is not None:
            a, b = (int(x) for x in prompt.rstrip("=").split("+"))
            wrong = dropped_carry_sum(a, b) if self.mistake == "dropped_carry" else flipped_carry_sum(a, b)
            if wrong != value and wrong >= 0:
                return str(wrong)
        while True:
            wrong = value + self._rng.choice([-1, 1]) * self._rng.choice([1, 1, 2, 3, 5, 10, 10])
            if wrong >= 0 and wrong != value:
                return str(wrong)

    def sft_rows(self, n: int, correct_fraction: float = 0.5) -> list[dict]:
        """``{"prompt", "completion"}`` rows, right with probability ``correct_fraction``."""
        rows = []
        for _ in range(n):
            prompt, answer = self.problem()
            completion = answer if self._rng.random() < correct_fraction else self.wrong_answer(answer, prompt)
            rows.append({"prompt": prompt, "completion": completion})
        return rows

    def preference_rows(self, n: int, flip_rate: float = 0.0) -> list[dict]:
        """``{"prompt", "chosen", "rejected", "flipped"}`` rows: the right answer against a wrong
        one, swapped with probability ``flip_rate`` (``flipped`` records it; a method must not
        read it, the analysis may)."""
        rows = []
        for _ in range(n):
            prompt, answer = self.problem()
            chosen, rejected = answer, self.wrong_answer(answer, prompt)
            flipped = self._rng.random() < flip_rate
            if flipped:
                chosen, rejected = rejected, chosen
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "flipped": flipped})
        return rows

    def eval_rows(self, n: int) -> list[dict]:
        """``{"prompt", "answer"}`` rows for measuring accuracy."""
        return [dict(zip(("prompt", "answer"), self.problem())) for _ in range(n)]


def is_correct(prompt: str, response: str) -> bool:
    """The judge: ``response`` (up to the first character that is not a digit) is the sum."""
    left, right = prompt.rstrip("=").split("+")
    digits = ""
    for char in response.strip():
        if not char.isdigit():
            break
        digits += char
    return digits != "" and int(digits) == int(left) + int(right)


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSON lines; the file appears under its name only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the addition task: tokenizer, initial model and data.")
    parser.add_argument("--out", default="data/arithmetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft-rows", type=int, default=20_000)
    parser.add_argument("--correct-fraction", type=float, default=0.3, help="right answers among the SFT rows")
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--flip-rate", type=float, default=0.0)
    parser.add_argument(
        "--mistake", choices=MISTAKES, default="flipped_carry", help="what a wrong answer is (AdditionTask)"
    )
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument(
        "--val-pairs", type=int, default=1000, help="held-out pairs with clean labels (val_pairs.jsonl)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    build_tokenizer(out / "tokenizer")
    build_model(out / "model", seed=args.seed)
    task = AdditionTask(seed=args.seed, mistake=args.mistake)
    write_jsonl(task.sft_rows(args.sft_rows, args.correct_fraction), out / "sft.jsonl")
    write_jsonl(task.preference_rows(args.pairs, args.flip_rate), out / "pairs.jsonl")
    write_jsonl(task.eval_rows(args.eval_rows), out / "eval.jsonl")
    # Drawn last, so the files above are the same with or without them.
    write_jsonl(task.preference_rows(args.val_pairs), out / "val_pairs.jsonl")
    print(f"wrote {out}/tokenizer, {out}/model, sft.jsonl, pairs.jsonl, eval.jsonl, val_pairs.jsonl")


if __name__ == "__main__":
    main()
