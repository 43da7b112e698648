"""How a bad configuration is reported: one line per problem, naming where and which key."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

MAX_QUOTE = 100
"""Characters of a bad value quoted in a message."""
MAX_PROBLEMS = 20
"""Problems listed one per line; the rest are counted."""
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")


class ConfigError(Exception):
    """The configuration is invalid; the CLI exits 2 with this message.

    Every line starts with the source (the file, or ``environment PRAXIS_...``), then,
    where the problem has one, the key path (``p2p.bootstrap_nodes[0]``) or the line
    of the file, then what is wrong.
    """


def quote(value: object) -> str:
    """``repr`` of ``value`` cut to :data:`MAX_QUOTE` characters; never raises."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints beyond str conversion, deep nesting
        text = f"a {type(value).__name__}"
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 3] + "..."


def key_path(parts: Sequence[object]) -> str:
    """``("p2p", "bootstrap_nodes", 0)`` -> ``p2p.bootstrap_nodes[0]``; odd keys quoted."""
    text = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool) and part.bit_length() < 64:
            text += f"[{part}]"
            continue
        name = part if isinstance(part, str) and _PLAIN_KEY.fullmatch(part) else quote(part)
        text += f".{name}" if text else name
    return text or "<root>"


def describe(exc: ValidationError, source: str, overridden: Mapping[tuple[str, ...], str]) -> str:
    """The lines of a :class:`ConfigError` for a pydantic validation failure.

    Args:
        exc: what pydantic found.
        source: the file the values came from.
        overridden: key paths set from the environment, mapped to their variables;
            a problem at, above or below such a key is reported against the variable.
    """
    problems = exc.errors(include_url=False)
    lines = []
    for err in problems[:MAX_PROBLEMS]:
        loc = tuple(err["loc"])
        origin = source
        for keys, variable in overridden.items():
            common = min(len(keys), len(loc))
            if common and loc[:common] == keys[:common]:
                origin = f"environment {variable}"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "value_error":
            message = str(err.get("ctx", {}).get("error", err["msg"]))
        else:
            message = err["msg"]
        if "input" in err and not isinstance(err["input"], dict | list):
            got = quote(err["input"])
            if got not in message:
                message = f"{message} (got {got})"
        lines.append(f"{origin}: {key_path(loc)}: {message}")
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{source}: ... and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(lines)
