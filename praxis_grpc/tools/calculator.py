"""The ``calculator`` tool: bounded arithmetic over a whitelisted expression grammar.

Expressions are parsed with :mod:`ast` and evaluated by walking the tree; no code
is compiled or executed. The cost of every operation is bounded before it is
done (integer sizes, exponents, ``round`` digits), every intermediate value is
bounded (integers of at most ``MAX_INT_BITS`` bits, finite floats), and the
result is a number JSON and a protobuf ``Struct`` (a double) carry: an integer
above ``MAX_EXACT_INT`` (2**53) comes back as the nearest float, and one beyond
the range of a double fails the task. The tool still runs in a worker process
(:mod:`praxis_grpc.tools.workers`), so even a bug here cannot stall the node.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from praxis_grpc.errors import ToolError
from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.workers import WorkerPool

MAX_EXPRESSION_LENGTH: Final = 1000
MAX_NODES: Final = 500
# Python refuses to print ints above 4300 digits; stay below that (~14 000 bits).
MAX_INT_BITS: Final = 14_000
# round(x, n) costs about 10**|n| for an integer x; more digits than the largest
# intermediate integer has (about 4 200) change nothing.
MAX_ROUND_DIGITS: Final = 5_000
# Integers up to this magnitude are exact in a double; larger ones are returned as floats.
MAX_EXACT_INT: Final = 2**53

Number = int | float

_BINARY: Final[Mapping[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

_OPERATOR_NAMES: Final[Mapping[type[ast.AST], str]] = {
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Not: "not",
}

_CONSTANTS: Final[Mapping[str, float]] = {"pi": math.pi, "e": math.e}


def _round(value: Number, ndigits: Number | None = None) -> Number:
    if ndigits is None:
        return round(value)
    if not isinstance(ndigits, int):
        raise ToolError("round() takes an integer number of digits")
    if abs(ndigits) > MAX_ROUND_DIGITS:
        raise ToolError(
            f"round(): the number of digits must be between -{MAX_ROUND_DIGITS} "
            f"and {MAX_ROUND_DIGITS}"
        )
    return round(value, ndigits)


# name -> (function, minimum arguments, maximum arguments or None for unbounded)
_FUNCTIONS: Final[Mapping[str, tuple[Callable[..., Number], int, int | None]]] = {
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 1, None),
    "max": (max, 1, None),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}

_FORBIDDEN: Final[Mapping[type[ast.AST], str]] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "boolean operators",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment expressions",
    ast.JoinedStr: "strings",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Starred: "starred arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression.

    Supports int and float literals, ``+ - * / // % **``, unary ``+``/``-``,
    parentheses, the constants ``pi`` and ``e`` and the functions ``abs``,
    ``round``, ``min``, ``max``, ``sqrt``, ``log``, ``log10``, ``exp``, ``sin``,
    ``cos``, ``tan``, ``floor`` and ``ceil``.

    Returns:
        A finite float, or an integer of magnitude at most ``MAX_EXACT_INT``;
        a larger integer result is returned as the nearest float.

    Raises:
        ToolError: the expression is too long or too complex, uses anything
            outside the grammar (the message names it), divides by zero, leaves
            a function's domain, asks ``round`` for more than
            ``MAX_ROUND_DIGITS`` digits, produces an intermediate value that is
            not a finite real number or an integer above ``MAX_INT_BITS`` bits,
            or a result beyond the range of a double.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    if not expression.strip():
        raise ToolError("expression is empty")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"invalid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ToolError("expression is nested too deeply") from None
    _check(tree.body)
    return json_number(_reduce(tree.body))


def json_number(value: Number) -> Number:
    """``value`` as JSON and a ``Struct`` carry it: exact integers up to
    ``MAX_EXACT_INT``, larger ones as the nearest float.

    Raises:
        ToolError: the value is beyond the range of a double.
    """
    if isinstance(value, float) or abs(value) <= MAX_EXACT_INT:
        return value
    try:
        return float(value)
    except OverflowError:
        raise ToolError(
            f"the result has {value.bit_length()} bits: too large for a JSON number "
            "(at most about 1.8e308)"
        ) from None


def _check(root: ast.expr) -> None:
    """Reject anything outside the grammar before computing anything."""
    count = 0
    callees: set[int] = set()
    for node in ast.walk(root):
        if isinstance(node, ast.expr_context | ast.operator | ast.unaryop) or id(node) in callees:
            continue
        count += 1
        if count > MAX_NODES:
            raise ToolError(f"expression has more than {MAX_NODES} elements")
        if isinstance(node, ast.Constant):
            _literal(node)
        elif isinstance(node, ast.Name):
            _name_allowed(node)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                raise ToolError(f"operator {_OPERATOR_NAMES[type(node.op)]!r} not allowed")
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, ast.Pow) and type(node.op) not in _BINARY:
                raise ToolError(f"operator {_OPERATOR_NAMES[type(node.op)]!r} not allowed")
        elif isinstance(node, ast.Call):
            _call_allowed(node)
            callees.add(id(node.func))
        else:
            what = _FORBIDDEN.get(type(node), type(node).__name__)
            raise ToolError(f"{what} not allowed")


def _literal(node: ast.Constant) -> Number:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "strings" if isinstance(value, str | bytes) else f"{type(value).__name__} values"
        raise ToolError(f"{kind} not allowed")
    return value


def _name_allowed(node: ast.Name) -> None:
    if node.id in _CONSTANTS:
        return
    if node.id in _FUNCTIONS:
        raise ToolError(f"function {node.id!r} must be called, e.g. {node.id}(2)")
    allowed = ", ".join(sorted(_CONSTANTS))
    raise ToolError(f"name {node.id!r} not allowed; constants are: {allowed}")


def _call_allowed(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name):
        raise ToolError("only calls of named functions are allowed")
    name = node.func.id
    if name not in _FUNCTIONS:
        allowed = ", ".join(sorted(_FUNCTIONS))
        raise ToolError(f"function {name!r} not allowed; functions are: {allowed}")
    if node.keywords:
        raise ToolError(f"keyword arguments not allowed in {name}()")
    _, least, most = _FUNCTIONS[name]
    count = len(node.args)
    if count < least or (most is not None and count > most):
        if least == most:
            expected = f"exactly {least}"
        elif most is None:
            expected = f"at least {least}"
        else:
            expected = f"{least} to {most}"
        raise ToolError(f"{name}() takes {expected} argument(s), got {count}")


def _children(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, ast.Call):
        return list(node.args)
    return []


def _reduce(root: ast.expr) -> Number:
    """Evaluate a checked tree in post-order without recursion (chains can be hundreds deep)."""
    pending: list[tuple[ast.expr, bool]] = [(root, False)]
    values: list[Number] = []
    while pending:
        node, expanded = pending.pop()
        children = _children(node)
        if not expanded and children:
            pending.append((node, True))
            pending.extend((child, False) for child in reversed(children))
            continue
        operands = values[len(values) - len(children) :] if children else []
        del values[len(values) - len(children) :]
        values.append(_apply(node, operands))
    return values[0]


def _apply(node: ast.expr, operands: list[Number]) -> Number:
    if isinstance(node, ast.Constant):
        return _bounded(_literal(node))
    if isinstance(node, ast.Name):
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp):
        return -operands[0] if isinstance(node.op, ast.USub) else operands[0]
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return _power(operands[0], operands[1])
        return _compute(_BINARY[type(node.op)], *operands)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _compute(_FUNCTIONS[node.func.id][0], *operands)
    raise ToolError(f"{type(node).__name__} not allowed")


def _power(base: Number, exponent: Number) -> Number:
    # |base| >= 2**(bit_length-1), so this is a lower bound on the result's size;
    # checking it first keeps 9**9**9 from ever being computed.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise ToolError(f"result of ** is too large (more than {MAX_INT_BITS} bits)")
    return _compute(operator.pow, base, exponent)


def _compute(function: Callable[..., Any], *args: Number) -> Number:
    try:
        result = function(*args)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("numeric overflow: result is too large") from None
    except ValueError as exc:
        raise ToolError(f"math error: {exc}") from None
    if not isinstance(result, int | float):
        raise ToolError("result is not a real number")
    return _bounded(result)


def _bounded(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("numeric overflow: result is not finite")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"result is too large (more than {MAX_INT_BITS} bits)")
    return value


class Calculator:
    """Evaluates arithmetic expressions in a worker process of ``workers``."""

    def __init__(self, workers: WorkerPool) -> None:
        self._workers = workers

    _SPEC: Final = ToolSpec(
        name="calculator",
        description="Evaluate an arithmetic expression (+ - * / // % **, math functions); "
        "integers above 2**53 come back as floats, results beyond a double fail.",
        input_schema={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_EXPRESSION_LENGTH,
                    "description": "for example 'sqrt(2) * (3 + 4) ** 2'",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        idempotent=True,
    )

    @property
    def spec(self) -> ToolSpec:
        """The ``calculator`` tool spec."""
        return self._SPEC

    async def run(self, arguments: JSON) -> JSON:
        """Return ``{"expression": ..., "result": number}``.

        Raises:
            ToolError: see :func:`evaluate`.
        """
        expression = str(arguments["expression"])
        result = await self._workers.call(f"{__name__}:evaluate", expression)
        return {"expression": expression, "result": result}
