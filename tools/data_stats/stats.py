"""Summary statistics of a list of numbers: a praxis contract tool.

Reads ``{"values": [number, ...]}`` from stdin and writes ``count``, ``sum``,
``mean``, ``median``, ``min``, ``max`` and ``stdev`` (population) to stdout as
one JSON object. Bad input exits with status 1 and a message on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

MAX_VALUES = 100_000


class BadInput(Exception):
    """The input is not what the contract promises."""


def _reject_constant(name: str) -> Any:
    raise BadInput(f"{name} is not a number")


def parse_values(raw: str) -> list[float]:
    """Extract the ``values`` list as floats, checking the contract's input rules."""
    try:
        arguments = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise BadInput(f"input is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict) or not isinstance(arguments.get("values"), list):
        raise BadInput("input must be an object with a 'values' array")
    values = arguments["values"]
    if not 1 <= len(values) <= MAX_VALUES:
        raise BadInput(f"'values' must hold 1 to {MAX_VALUES} numbers, got {len(values)}")
    numbers = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInput(f"values[{index}] is not a number")
        try:
            numbers.append(float(value))
        except OverflowError:
            raise BadInput(f"values[{index}] is too large") from None
    return numbers


def summarize(values: list[float]) -> dict[str, float | int]:
    """Count, sum, mean, median, min, max and population standard deviation.

    Raises:
        BadInput: a statistic overflows the float range.
    """
    count = len(values)
    ordered = sorted(values)
    middle = count // 2
    try:
        total = math.fsum(values)
        mean = total / count
        median = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        variance = math.fsum((value - mean) ** 2 for value in values) / count
    except OverflowError:
        raise BadInput("values are too large: a statistic overflows") from None
    result = {
        "count": count,
        "sum": total,
        "mean": mean,
        "median": median,
        "min": ordered[0],
        "max": ordered[-1],
        "stdev": math.sqrt(variance),
    }
    if not all(math.isfinite(value) for value in result.values()):
        raise BadInput("values are too large: a statistic overflows")
    return result


def main() -> int:
    """Read stdin, write the statistics to stdout; exit status 1 on bad input."""
    try:
        result = summarize(parse_values(sys.stdin.read()))
    except BadInput as exc:
        print(f"data_stats: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
