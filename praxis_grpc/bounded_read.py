"""Reading a file named in config without reading more of it than allowed.

Every file an operator names (the config itself, token files, certificates,
the revocation list) is read through :func:`read_bounded`: at most ``limit``
+ 1 bytes leave the disk, so pointing a key at a huge file (or a device that
never ends) costs a bounded amount of memory and time, and the caller turns
:class:`TooLarge` or :class:`OSError` into its own error naming the key.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TooLarge", "read_bounded"]


class TooLarge(Exception):
    """The file holds more than the limit."""


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them.

    Raises:
        OSError: the file cannot be opened or read.
        TooLarge: it holds more than ``limit`` bytes (only ``limit`` + 1 were read).
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is over {limit} bytes")
    return data
