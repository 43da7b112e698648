"""praxis-grpc: a gRPC service mesh for agent clusters with pluggable consensus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("praxis-grpc")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
