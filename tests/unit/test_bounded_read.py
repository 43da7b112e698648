"""A file named in config is never read past its limit (a key pointed at
/dev/zero costs limit + 1 bytes, not the process's memory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from praxis_grpc.bounded_read import TooLarge, read_bounded
from praxis_grpc.certs import CertError, read_limited

ENDLESS = Path("/dev/zero")


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10) == b"x" * 10


def test_an_endless_file_is_refused_after_limit_plus_one_bytes() -> None:
    with pytest.raises(TooLarge, match="over 1024 bytes"):
        read_bounded(ENDLESS, 1024)


def test_a_certificate_key_pointed_at_an_endless_file_is_refused_naming_the_key() -> None:
    # certs.read_limited read the whole file before comparing its size.
    with pytest.raises(CertError, match=r"^cluster\.ca_cert: /dev/zero is over 1024 bytes$"):
        read_limited("cluster.ca_cert", ENDLESS, 1024)


def test_an_unreadable_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10)
