"""The package layout's import rules (DESIGN.md, "Target layout"), checked on
the source of every module, imports inside functions and ``TYPE_CHECKING``
blocks included:

- ``routing/`` and ``ha/`` talk to other nodes only through ``PeerClient``:
  they import neither ``praxis_grpc.api`` nor generated code;
- ``api/`` never imports ``praxis_grpc.node`` (no api -> node -> api cycle);
- nothing in the product imports ``praxis_grpc.testing``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import praxis_grpc

PACKAGE = Path(praxis_grpc.__file__).parent


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_gen" not in p.relative_to(PACKAGE).parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute dotted names."""
    package = ".".join(("praxis_grpc", *path.relative_to(PACKAGE).parent.parts))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(sources: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _modules():
        module = ".".join(("praxis_grpc", *path.relative_to(PACKAGE).with_suffix("").parts))
        if not _within(module, sources):
            continue
        found += [
            f"{module} imports {name}"
            for name in sorted(_imports(path))
            if any(_within(name, f) for f in forbidden)
        ]
    return found


@pytest.mark.parametrize(
    ("sources", "forbidden"),
    [
        ("praxis_grpc.routing", ("praxis_grpc.api", "praxis_grpc._gen")),
        ("praxis_grpc.ha", ("praxis_grpc.api", "praxis_grpc._gen")),
        ("praxis_grpc.api", ("praxis_grpc.node",)),
    ],
)
def test_package_import_rules(sources: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(sources, forbidden) == []


def test_the_product_never_imports_testing() -> None:
    found = [
        violation
        for violation in _violations("praxis_grpc", ("praxis_grpc.testing",))
        if not violation.startswith("praxis_grpc.testing")
    ]
    assert found == []


def test_the_checker_sees_imports_inside_functions() -> None:
    assert "praxis_grpc.peers.base" in _imports(PACKAGE / "routing" / "delegation.py")
    # launcher.py imports it inside a method.
    assert "praxis_grpc.consensus.local_etcd.EtcdCluster" in _imports(PACKAGE / "launcher.py")
