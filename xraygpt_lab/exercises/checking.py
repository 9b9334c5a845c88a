"""The machinery every exercise checker shares: run a student's function, compare, diagnose.

A checker (``check_*`` in the topic modules) calls :func:`run_check` with

* the student's ``answer`` (a function with the documented signature),
* the ``reference`` (the library's implementation, or a thin wrapper around it),
* a few :class:`Case` inputs (small, random, seeded, plus the edge cases that catch bugs),
* known :class:`Mistake` s: each one is a *wrong* implementation plus an explanation. When the
  student's output differs from the reference, every mistake is run on the same input; the
  explanation of the one that reproduces the student's output is shown ("wrong sign", "forgot
  the mask", "swapped sides" …). This "mutant" diagnosis is how autograders such as nbgrader's
  hidden tests are usually turned into feedback, made explicit.

Checkers never raise on a wrong answer: they return a :class:`CheckResult`, which Jupyter shows
as a short green or red box and which is falsy when the check failed, so a notebook with an
unfinished exercise still runs top to bottom (``pytest --nbval-lax``). ``strict=True`` (or
:meth:`CheckResult.raise_if_failed`) raises :class:`ExerciseFailed` instead, for tests.

Solutions live apart, in ``tutorials/solutions/`` (:func:`load_solution`).
"""
from __future__ import annotations

import html
import importlib.util
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import XrayGPTLabError

#: Where the reference solutions live (a sibling of the package in a source checkout).
SOLUTIONS_DIR = Path(__file__).resolve().parents[2] / "tutorials" / "solutions"


class ExerciseFailed(XrayGPTLabError, AssertionError):
    """A checked answer is wrong; the message is the checker's feedback."""


@dataclass
class Case:
    """One input to try: positional ``args``, keyword ``kwargs`` and a human description."""

    description: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Mistake:
    """A known wrong answer and what it means.

    ``wrong`` has the reference's signature and reproduces the mistake; when its output on a
    failing case equals the student's, ``explanation`` is shown. ``test(got, expected, case)``
    is an alternative for mistakes that are easier to recognise than to reproduce.
    """

    explanation: str
    wrong: Callable[..., Any] | None = None
    test: Callable[[Any, Any, Case], bool] | None = None

    def matches(self, got: Any, expected: Any, case: Case, compare: Callable[[Any, Any], str | None]) -> bool:
        """True when this mistake explains ``got`` on ``case``."""
        try:
            if self.wrong is not None:
                return compare(got, self.wrong(*_copy(case.args), **_copy(case.kwargs))) is None
            if self.test is not None:
                return bool(self.test(got, expected, case))
        except Exception:  # a mutant that crashes on this input explains nothing
            return False
        return False


@dataclass
class CheckResult:
    """Outcome of one check: truthy when passed; shows itself as a coloured box in Jupyter."""

    exercise: str
    passed: bool
    feedback: list[str]
    cases_passed: int = 0
    cases_total: int = 0
    status: str = "checked"  # "checked" | "not implemented" | "error"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "PASSED" if self.passed else ("NOT YET" if self.status == "not implemented" else "FAILED")
        head = f"[{mark}] {self.exercise} ({self.cases_passed}/{self.cases_total} cases)"
        return "\n".join([head, *("  " + line for line in self.feedback)])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"checked": "#2e7d32" if self.passed else "#c62828", "not implemented": "#f9a825",
                  "error": "#c62828"}[self.status if not self.passed else "checked"]
        icon = "\u2714" if self.passed else ("\u270e" if self.status == "not implemented" else "\u2718")
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in self.feedback)
        return (f'<div style="border-left:5px solid {colour};padding:4px 10px;margin:4px 0;'
                f'font-family:sans-serif;font-size:13px;"><b>{icon} {html.escape(self.exercise)}</b> '
                f"({self.cases_passed}/{self.cases_total} cases)<ul style='margin:2px 0'>{lines}</ul></div>")

    def raise_if_failed(self) -> "CheckResult":
        """Raise :class:`ExerciseFailed` with the feedback unless the check passed."""
        if not self.passed:
            raise ExerciseFailed(str(self))
        return self


# --------------------------------------------------------------------------- comparison


def _to_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return None


def _short(value: Any, limit: int = 90) -> str:
    array = _to_numpy(value)
    if array is not None:
        text = f"array of shape {list(array.shape)}" + (f": {np.array2string(array.ravel()[:6], precision=4)}"
                                                       + ("…" if array.size > 6 else "") if array.size else "")
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    """A plain-looking number: ``0.5142`` rather than ``np.float32(0.5142)``."""
    item = value.item() if hasattr(value, "item") else value
    return f"{item:.6g}" if isinstance(item, float) else repr(item)


def describe_difference(got: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-5, where: str = "") -> str | None:
    """``None`` when ``got`` matches ``expected``, else one sentence saying how it differs.

    Arrays and tensors compare by shape then value (``rtol``/``atol``), floats with the same
    tolerance, mappings key by key, sequences item by item, everything else with ``==``.
    """
    label = f"{where}: " if where else ""
    got_array, expected_array = _to_numpy(got), _to_numpy(expected)
    if expected_array is not None:
        if got_array is None:
            if isinstance(got, (list, tuple)):
                got_array = np.asarray(got)
            else:
                return f"{label}expected an array/tensor of shape {list(expected_array.shape)}, got {type(got).__name__}"
        if got_array.shape != expected_array.shape:
            return f"{label}shape {list(got_array.shape)}, expected {list(expected_array.shape)}"
        if expected_array.dtype == bool or not np.issubdtype(expected_array.dtype, np.number):
            bad = got_array != expected_array
        else:
            with np.errstate(invalid="ignore"):
                bad = ~np.isclose(got_array.astype(float), expected_array.astype(float), rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            if expected_array.ndim == 0:
                return f"{label}got {_scalar(got_array)}, expected {_scalar(expected_array)}"
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            return (f"{label}{int(bad.sum())} of {bad.size} values differ, first at index {list(index)}: "
                    f"got {_scalar(got_array[index])}, expected {_scalar(expected_array[index])}")
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected and type(got) is type(expected) else f"{label}got {_short(got)}, expected {_short(expected)}"
    if isinstance(expected, (int, float, np.integer, np.floating)):
        if isinstance(got, (bool, str)) or got is None:
            return f"{label}got {_short(got)}, expected a number ({expected!r})"
        try:
            value = float(got)
        except (TypeError, ValueError):
            return f"{label}got {_short(got)}, expected a number ({expected!r})"
        if math.isnan(float(expected)) and math.isnan(value):
            return None
        if not math.isclose(value, float(expected), rel_tol=rtol, abs_tol=atol):
            return f"{label}got {value:.6g}, expected {float(expected):.6g}"
        return None
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{label}expected a dict, got {type(got).__name__}"
        missing = [k for k in expected if k not in got]
        if missing:
            return f"{label}missing keys {missing}"
        extra = [k for k in got if k not in expected]
        if extra:
            return f"{label}unexpected keys {extra}"
        for key in expected:
            problem = describe_difference(got[key], expected[key], rtol, atol, f"{where}[{key!r}]" if where else f"[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) and _to_numpy(got) is None:
            return f"{label}expected a {type(expected).__name__}, got {type(got).__name__}"
        got_list = list(got) if _to_numpy(got) is None else _to_numpy(got).tolist()
        if len(got_list) != len(expected):
            return f"{label}length {len(got_list)}, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got_list, expected)):
            problem = describe_difference(g, e, rtol, atol, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return None if got == expected else f"{label}got {_short(got)}, expected {_short(expected)}"


def _copy(value: Any) -> Any:
    """Copy data (arrays, tensors, lists, dicts) so that a function that modifies its inputs cannot
    spoil the next call; other objects (tokenizers, functions, models) are passed as they are."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, set):
        return set(value)
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().clone()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return value


# --------------------------------------------------------------------------- running


def run_check(
    exercise: str,
    answer: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    *,
    compare: Callable[[Any, Any], str | None] | None = None,
    hint: str = "",
    strict: bool = False,
    success: str = "",
) -> CheckResult:
    """Run ``answer`` and ``reference`` on every case; stop at the first difference and diagnose it.

    ``compare(got, expected)`` returns ``None`` when they match, else a description (default:
    :func:`describe_difference`). ``hint`` is shown when no known mistake explains a failure;
    ``success`` is shown when every case passes. With ``strict=True`` a failure raises
    :class:`ExerciseFailed`.
    """
    compare = compare or describe_difference
    if not callable(answer):
        result = CheckResult(exercise, False, [f"expected a function, got {type(answer).__name__}: "
                                               "pass the function itself, without calling it"], 0, len(cases), "error")
        return result.raise_if_failed() if strict else result
    passed = 0
    for case in cases:
        expected = reference(*_copy(case.args), **_copy(case.kwargs))
        try:
            got = answer(*_copy(case.args), **_copy(case.kwargs))
        except NotImplementedError:
            result = CheckResult(exercise, False, ["not implemented yet: replace `raise NotImplementedError` "
                                                   "with your code, then run this cell again"],
                                 passed, len(cases), "not implemented")
            return result.raise_if_failed() if strict else result
        except Exception as err:  # the student's code crashed: show where, briefly
            frame = traceback.extract_tb(err.__traceback__)[-1]
            result = CheckResult(exercise, False, [
                f"on {case.description}: your function raised {type(err).__name__}: {err}",
                f"(line {frame.lineno}: {frame.line})" if frame.line else "",
                *([f"hint: {hint}"] if hint else []),
            ], passed, len(cases), "error")
            result.feedback = [line for line in result.feedback if line]
            return result.raise_if_failed() if strict else result
        problem = compare(got, expected)
        if problem is None:
            passed += 1
            continue
        feedback = [f"on {case.description}: {problem}"]
        diagnosis = [m.explanation for m in mistakes if m.matches(got, expected, case, compare)]
        if diagnosis:
            feedback.append(f"likely cause: {diagnosis[0]}")
        elif hint:
            feedback.append(f"hint: {hint}")
        result = CheckResult(exercise, False, feedback, passed, len(cases))
        return result.raise_if_failed() if strict else result
    lines = [f"matches the library on all {len(cases)} cases"] + ([success] if success else [])
    return CheckResult(exercise, True, lines, passed, len(cases))


# --------------------------------------------------------------------------- solutions


def load_solution(name: str) -> ModuleType:
    """Import ``tutorials/solutions/<name>.py`` (e.g. ``load_solution("s01_vision_encoder")``).

    The solutions are plain Python files beside the notebooks, not part of the installed package,
    so they are imported by path. Raises ``FileNotFoundError`` listing what exists.
    """
    path = SOLUTIONS_DIR / f"{name.removesuffix('.py')}.py"
    if not path.is_file():
        have = sorted(p.stem for p in SOLUTIONS_DIR.glob("s*.py")) if SOLUTIONS_DIR.is_dir() else []
        raise FileNotFoundError(f"no solution file {path}; available: {have or 'none (is this a source checkout?)'}")
    spec = importlib.util.spec_from_file_location(f"xraygpt_lab_solutions.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


__all__ = ["Case", "CheckResult", "ExerciseFailed", "Mistake", "SOLUTIONS_DIR", "describe_difference",
           "load_solution", "run_check"]
