"""Value types of the node configuration: durations, sizes, hosts, paths and multiaddrs.

Each type refuses what the node could not use, with a message that quotes the bad
value (cut to ~100 characters); the model reports it under the key's path. They are
meant for models with ``strict=True``: a boolean is not a number, a number is not a
string, and a duration is a number of seconds or a string such as ``"30s"``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from praxis_grpc.config._errors import MAX_QUOTE, quote

MAX_DURATION = 365 * 24 * 3600.0
"""Durations are finite and at most a year: timers and deadlines add them to clocks."""
MAX_BYTES = 2**31 - 1
"""Sizes handed to gRPC (a C int) stay below this."""
MAX_PATH_CHARS = 4096
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_HOST_PORT = re.compile(r"([^\s:]+):(\d{1,5})")
_MAX_MULTIADDR_CHARS = 1024
_DURATION_HINT = "expected a duration such as 30s, 500ms or 2m"


def parse_duration(value: object) -> float:
    """Parse ``1.5``, ``"500ms"``, ``"30s"``, ``"2m"`` or ``"1h"`` into seconds.

    Raises:
        ValueError: not a duration, not finite, negative, or longer than a year.
    """
    seconds: float | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if abs(value) <= MAX_DURATION:  # a huge int cannot even become a float
            seconds = float(value)
        else:
            raise ValueError(f"must be at most {MAX_DURATION:.0f}s (a year), got {quote(value)}")
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None:
        raise ValueError(f"{_DURATION_HINT}, got {quote(value)}")
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"must be finite and at most a year, got {quote(value)}")
    return seconds


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{quote(value)} is not an IP address") from None
    return value


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST_NAME.fullmatch(value):
            raise ValueError(f"{quote(value)} is not an IP address or host name") from None
    return value


def check_host_port(value: str) -> str:
    """``value`` if it is ``host:port``; raises ValueError otherwise."""
    match = _HOST_PORT.fullmatch(value)
    if not match or int(match.group(2)) > 65535:
        raise ValueError(f"{quote(value)} is not host:port")
    return value


def _peer_multiaddr(value: str) -> str:
    # py-libp2p's own parser, so what passes here is what discovery can dial.
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    problem = "too long"
    if len(value) <= _MAX_MULTIADDR_CHARS:
        try:
            info = info_from_p2p_addr(Multiaddr(value))
        except Exception as exc:  # the parsers raise many types; all mean "not valid"
            problem = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        else:
            if info.addrs and str(info.addrs[0]):
                return value
            problem = "no address before /p2p/"
    raise ValueError(
        f"{quote(value)} is not a multiaddr ending in /p2p/<peer id> ({problem[:MAX_QUOTE]})"
    )


def _announce_multiaddr(value: str) -> str:
    # What peers can dial directly: an IP or DNS address and a TCP port, no /p2p/ part
    # (the node appends its own) and no relay hop (relayed addresses are learnt).
    from multiaddr import Multiaddr

    problem = "too long"
    if len(value) <= _MAX_MULTIADDR_CHARS:
        try:
            names = [p.name for p in Multiaddr(value).protocols()]
        except Exception as exc:  # the parser raises many types; all mean "not valid"
            problem = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        else:
            if len(names) == 2 and names[0] in _ANNOUNCE_HOSTS and names[1] == "tcp":
                return value
            problem = "expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>"
    raise ValueError(f"{quote(value)} is not an address to announce ({problem[:MAX_QUOTE]})")


_ANNOUNCE_HOSTS = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})


def _path(value: object) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError(f"expected a path, got {quote(value)}")
    text = str(value)
    if not text:
        raise ValueError("must not be empty")
    if "\0" in text:
        raise ValueError(f"{quote(text)} contains a NUL character")
    if len(text) > MAX_PATH_CHARS:
        raise ValueError(f"longer than {MAX_PATH_CHARS} characters")
    return Path(text)


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""Seconds, >= 0, finite, at most a year; YAML/JSON numbers or ``"500ms"``, ``"2m"``..."""
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
"""A :data:`Duration` above 0."""
Port = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port; 0 picks a free one."""
IpAddress = Annotated[str, AfterValidator(_ip_address)]
"""An IPv4 or IPv6 address (no host names)."""
Host = Annotated[str, AfterValidator(_host)]
"""An IP address or a DNS host name."""
HostPort = Annotated[str, AfterValidator(check_host_port)]
"""``host:port``."""
PeerMultiaddr = Annotated[str, AfterValidator(_peer_multiaddr)]
"""A libp2p multiaddr with a transport address and a ``/p2p/<peer id>`` ending."""
AnnounceMultiaddr = Annotated[str, AfterValidator(_announce_multiaddr)]
"""A multiaddr peers can dial: ``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>``."""
ConfigPath = Annotated[Path, BeforeValidator(_path)]
"""A file system path given as a string: not empty, no NUL, at most 4096 characters."""
