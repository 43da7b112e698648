"""The calculator evaluates bounded arithmetic and names whatever it refuses."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from praxis_grpc.errors import ToolError
from praxis_grpc.tasks.json_values import check_json_object
from praxis_grpc.tools.calculator import (
    MAX_EXACT_INT,
    MAX_EXPRESSION_LENGTH,
    MAX_NODES,
    Calculator,
    evaluate,
)
from praxis_grpc.tools.workers import WorkerPool
from praxis_grpc.wire import dict_to_struct, struct_to_dict


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


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # Each of these once computed 10**|n| digits on the event loop.
        ("round(1, -10**9)", "between -5000 and 5000"),
        ("round(1.5, 10**9)", "between -5000 and 5000"),
        ("round(7, -(2**13000))", "between -5000 and 5000"),
        # Integers beyond a double once reached the store and broke every read of it.
        ("2**1100", "too large for a JSON number"),
        ("9" * 1000, "too large for a JSON number"),
        ("-(2 ** 13000)", "too large for a JSON number"),
        ("floor(1e308) * 2", "too large for a JSON number"),
    ],
)
def test_bounds_every_operation_and_the_result(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        evaluate(expression)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 ** 53", 2**53),
        ("-(2 ** 53)", -(2**53)),
        ("2 ** 53 + 1", float(2**53 + 1)),
        ("2 ** 1000", float(2**1000)),
        ("round(123456, -5000)", 0),
        ("round(1.5, 5000)", 1.5),
        ("floor(1e300)", 1e300),
    ],
)
def test_integers_beyond_2_53_come_back_as_floats(expression: str, expected: float) -> None:
    result = evaluate(expression)

    assert result == expected
    assert type(result) is type(expected)


async def test_run_fails_cleanly_on_an_integer_beyond_a_double(workers: WorkerPool) -> None:
    with pytest.raises(ToolError, match="too large for a JSON number"):
        await Calculator(workers).run({"expression": "2**1100"})


_FUNCTIONS_BY_ARITY = {
    1: ["abs", "sqrt", "log10", "exp", "sin", "cos", "tan", "floor", "ceil", "round", "log"],
    2: ["round", "log", "min", "max"],
    3: ["min", "max"],
}


def _numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=0, max_value=10**20).map(str),
        st.integers(min_value=0, max_value=10**999).map(str),
        st.floats(allow_nan=False, allow_infinity=False, min_value=0).map(repr),
        st.sampled_from(["pi", "e", "0", "1", "2", "10", "10**9", "2**64", "-10**9"]),
    )


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), inner)
        calls = st.integers(min_value=1, max_value=3).flatmap(
            lambda arity: st.tuples(
                st.sampled_from(_FUNCTIONS_BY_ARITY[arity]),
                st.lists(inner, min_size=arity, max_size=arity),
            )
        )
        return st.one_of(
            binary.map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            inner.map(lambda operand: f"-({operand})"),
            calls.map(lambda call: f"{call[0]}({', '.join(call[1])})"),
        )

    return st.recursive(_numbers(), extend, max_leaves=12)


@settings(max_examples=200, deadline=None, database=None)
@given(_expressions())
def test_any_expression_gives_a_json_number_or_a_tool_error(expression: str) -> None:
    try:
        result = evaluate(expression)
    except ToolError:
        return  # a refusal with a message is a valid outcome
    assert isinstance(result, int | float)
    assert not isinstance(result, bool)
    assert math.isfinite(result)
    if isinstance(result, int):
        assert abs(result) <= MAX_EXACT_INT
    check_json_object({"result": result}, "result")
    carried = dict_to_struct({"result": result})
    assert carried is not None
    assert struct_to_dict(carried, "result") == {"result": float(result)}
