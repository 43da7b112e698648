"""The calculator evaluates bounded arithmetic and names whatever it refuses."""

from __future__ import annotations

import math
import time

import pytest

from praxis_grpc.errors import ToolError
from praxis_grpc.tools.calculator import (
    MAX_EXPRESSION_LENGTH,
    MAX_NODES,
    Calculator,
    evaluate,
)
from praxis_grpc.tools.workers import WorkerPool


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("-2 ** 2", -4),
        ("+3 - -3", 6),
        ("1.5e3 + 0.5", 1500.5),
        ("abs(-3)", 3),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("min(3, 1, 2)", 1),
        ("max(1, 2.5)", 2.5),
        ("sqrt(16)", 4.0),
        ("log(8, 2)", 3.0),
        ("log10(1000)", 3.0),
        ("exp(0)", 1.0),
        ("sin(0) + cos(0) + tan(0)", 1.0),
        ("floor(2.7) + ceil(2.1)", 5),
        ("pi", math.pi),
        ("e", math.e),
        ("2 ** 13000 // 2 ** 12999", 2),
        ("-" * 499 + "1", -1),
        ("+".join(["1"] * 250), 250),
    ],
)
def test_evaluates_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


async def test_run_returns_expression_and_result(workers: WorkerPool) -> None:
    result = await Calculator(workers).run({"expression": "2 + 2"})

    assert result == {"expression": "2 + 2", "result": 4}


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("x + 1", "name 'x'"),
        ("sqrt", "function 'sqrt' must be called"),
        ("__import__('os')", "function '__import__'"),
        ("pi(1)", "function 'pi'"),
        ("(1).real", "attribute access"),
        ("'a' * 3", "strings"),
        ("f'{1}'", "strings"),
        ("[1, 2]", "lists"),
        ("(1, 2)", "tuples"),
        ("{1: 2}", "dicts"),
        ("[x for x in (1,)]", "comprehensions"),
        ("{x for x in ()}", "comprehensions"),
        ("sum(x for x in (1,))", "function 'sum'"),
        ("(lambda: 1)()", "only calls of named functions"),
        ("lambda: 1", "lambda"),
        ("1 < 2", "comparisons"),
        ("1 and 2", "boolean operators"),
        ("1 if 1 else 2", "conditional expressions"),
        ("(y := 1)", "assignment expressions"),
        ("x[0]", "subscripts"),
        ("1 << 2", "'<<'"),
        ("~1", "'~'"),
        ("not 1", "'not'"),
        ("True", "bool"),
        ("1j", "complex"),
        ("abs(x=1)", "keyword arguments"),
        ("abs(1, 2)", "abs() takes exactly 1"),
        ("min()", "min() takes at least 1"),
        ("round(1.5, 1.5)", "integer number of digits"),
        ("1 +", "invalid expression"),
        ("", "empty"),
    ],
)
def test_rejects_anything_outside_the_grammar(expression: str, named: str) -> None:
    with pytest.raises(ToolError) as caught:
        evaluate(expression)
    assert named in caught.value.message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("sqrt(-1)", "math error"),
        ("log(0)", "math error"),
        ("exp(1000)", "overflow"),
        ("1e308 * 10", "overflow"),
        ("2.0 ** 10000", "overflow"),
        ("10 ** 4000 * 1.0", "overflow"),
        ("(-8) ** 0.5", "not a real number"),
        ("2 ** 14001", "too large"),
        ("(2 ** 7000) ** 2", "too large"),
    ],
)
def test_reports_arithmetic_failures(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        evaluate(expression)


def test_huge_exponent_is_rejected_without_computing_it() -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError, match="too large"):
        evaluate("9 ** 9 ** 9")
    with pytest.raises(ToolError, match="too large"):
        evaluate("(10 ** 1000) ** (10 ** 1000)")

    assert time.perf_counter() - started < 0.5


def test_rejects_overlong_and_overcomplex_expressions() -> None:
    with pytest.raises(ToolError, match="longer than"):
        evaluate("1" * (MAX_EXPRESSION_LENGTH + 1))
    with pytest.raises(ToolError, match=f"more than {MAX_NODES} elements"):
        evaluate("+".join(["1"] * 300))
