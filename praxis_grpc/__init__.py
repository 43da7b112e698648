"""praxis-grpc: a gRPC service mesh for agent clusters with pluggable consensus."""

import typing as _typing

__all__ = ["__version__"]

if _typing.TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    # Looked up on first use: importlib.metadata costs every process (each CLI
    # command, each tool worker) tens of milliseconds, and few need the version.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("praxis-grpc")
    except PackageNotFoundError:  # running from a source tree without an install
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
