"""A programmatic judge: the task's own check of a completion (an exact answer, a unit test)."""

from __future__ import annotations

import math
from collections.abc import Callable

from policylab.judges.base import JudgeError, ScalarJudge


class VerifierJudge(ScalarJudge):
    """``check(prompt, completion)`` as a score: True -> 1.0, False -> 0.0 (a check that returns a
    number gives that number, e.g. partial credit). ``check`` is a callable or a dotted path,
    e.g. ``"policylab.tasks.arithmetic.is_correct"``. A check that raises, or returns something
    that is not a finite number, stops with a JudgeError naming the prompt and the value."""

    def __init__(self, check: str | Callable[[str, str], bool | float]) -> None:
        if isinstance(check, str):
            # imported here: policylab.callbacks may import the judges (no import cycle)
            from policylab.callbacks.generation import import_object

            self.check_name = check
            check = import_object(check)
        else:
            self.check_name = getattr(check, "__qualname__", type(check).__name__)
        if not callable(check):
            raise TypeError(f"VerifierJudge: {self.check_name} is not callable; give a function (prompt, completion)")
        self.check = check

    @property
    def name(self) -> str:
        return f"VerifierJudge({self.check_name})"

    def _score(self, prompts: list[str], completions: list[str]) -> list[float]:
        scores = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            try:
                verdict = self.check(prompt, completion)
            except Exception as err:
                raise JudgeError(
                    f"{self.name} raised {type(err).__name__}: {err} on prompt {i} ({prompt!r}, completion "
                    f"{completion!r}); make the check handle such rows"
                ) from err
            try:
                value = float(verdict)
            except (TypeError, ValueError):
                raise JudgeError(
                    f"{self.name} returned {verdict!r} for prompt {i} ({prompt!r}): expected a bool or a number"
                ) from None
            if not math.isfinite(value):
                raise JudgeError(f"{self.name}: score {value} for prompt {i} ({prompt!r}) is not finite")
            scores.append(value)
        return scores
