"""The security-on twin of a benchmark's node pair (``--secure``): its
configs (cluster CA, mutual TLS between peers, ``api.tls``, a bearer token),
the order runs take turns in, and the cost table of secure against plain."""

from __future__ import annotations

import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SECURE_SUFFIX = "-secure"
SECURITY_COST_BOUND = 0.2


class Row(Protocol):
    """A summary row of one target at one concurrency (medians over rounds)."""

    @property
    def target(self) -> str: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def rps(self) -> float: ...
    @property
    def p50_ms(self) -> float: ...
    @property
    def p95_ms(self) -> float: ...
    @property
    def server_cpu_us(self) -> float: ...


@dataclass(frozen=True)
class Security:
    """What a client of the secure nodes presents: their CA and an admin token."""

    cacert: Path
    token: str = field(repr=False)


def round_order(targets: Sequence[str], round_number: int) -> list[str]:
    """``targets`` in order in odd rounds; in even rounds each secure twin
    goes before its plain target, so neither always runs second."""
    order = list(targets)
    if round_number % 2 == 0:
        for index, target in enumerate(order[:-1]):
            if order[index + 1] == target + SECURE_SUFFIX:
                order[index], order[index + 1] = order[index + 1], target
    return order


def with_secure_twins(targets: Sequence[str], known: Container[str]) -> list[str]:
    """``targets`` with each plain praxis target followed by its ``-secure`` twin
    (if ``known``)."""
    result: list[str] = []
    for target in targets:
        if target in result:
            continue
        result.append(target)
        twin = target + SECURE_SUFFIX
        if target != "echo" and not target.endswith(SECURE_SUFFIX) and twin in known:
            result.append(twin)
    return list(dict.fromkeys(result))


def with_certificates(root: Path, configs: Mapping[str, Any]) -> dict[str, Any]:
    """``configs`` with a ``cluster`` section each: a fresh CA under ``root/ca`` and a
    node certificate for each node's key (``root/<name>/node.key``, created here)."""
    from praxis_grpc.certs import init_ca, issue
    from praxis_grpc.identity import load_or_create_identity

    init_ca(root / "ca")
    result: dict[str, Any] = {}
    for name, config in configs.items():
        node_dir = (root / name).resolve()
        peer_id = load_or_create_identity(node_dir / "node.key").agent_id
        issued = issue(root / "ca", name, node_dir / "tls", peer_id=peer_id)
        cluster = {"ca_cert": issued.ca_cert, "node_cert": issued.cert, "node_key": issued.key}
        result[name] = {**config, "cluster": {k: str(v) for k, v in cluster.items()}}
    return result


def secure_configs(root: Path, configs: Mapping[str, Any]) -> tuple[dict[str, Any], Security]:
    """``configs`` with everything on: a cluster CA and node certificates
    (:func:`with_certificates`), ``api.tls`` with the same node certificate
    (issued for 127.0.0.1 and localhost) and ``api.auth`` with one admin token;
    and what a client presents to them."""
    from praxis_grpc.api.tokens import Role, add_token

    tokens = root / "tokens.yaml"
    token = add_token(tokens, "bench", Role.ADMIN)
    result: dict[str, Any] = {}
    for name, config in with_certificates(root, configs).items():
        cluster = config["cluster"]
        api = {
            "tls": {"cert": cluster["node_cert"], "key": cluster["node_key"]},
            "auth": {"tokens_file": str(tokens.resolve())},
        }
        result[name] = {**config, "api": api}
    return result, Security((root / "ca" / "ca.crt").resolve(), token)


def security_table(rows: Sequence[Row]) -> str:
    """Each secure target against its plain twin at the same concurrency.

    The cost is the req/s lost (1 - secure/plain) and the CPU per task added
    (A + B, secure/plain - 1); "under 20%" is judged on req/s.
    """
    lines = [
        "| target | concurrency | req/s plain | req/s secure | cost (req/s) | p50 ms plain "
        "| p50 ms secure | p95 ms plain | p95 ms secure | CPU µs/req plain | CPU µs/req secure "
        f"| cost (CPU) | cost < {SECURITY_COST_BOUND:.0%} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {(r.target, r.concurrency): r for r in rows}
    for row in rows:
        plain = by_key.get((row.target.removesuffix(SECURE_SUFFIX), row.concurrency))
        if not row.target.endswith(SECURE_SUFFIX) or plain is None:
            continue
        cost = 1 - row.rps / plain.rps if plain.rps else math.nan
        cpu_cost = row.server_cpu_us / plain.server_cpu_us - 1 if plain.server_cpu_us else math.nan
        lines.append(
            f"| {plain.target} | {row.concurrency} | {plain.rps:.0f} | {row.rps:.0f} "
            f"| {cost:+.1%} | {plain.p50_ms:.2f} | {row.p50_ms:.2f} | {plain.p95_ms:.2f} "
            f"| {row.p95_ms:.2f} | {plain.server_cpu_us:.0f} | {row.server_cpu_us:.0f} "
            f"| {cpu_cost:+.1%} | {'yes' if cost < SECURITY_COST_BOUND else 'no'} |"
        )
    if len(lines) == 2:
        return "(needs a target and its -secure twin: --secure)"
    return "\n".join(lines)
