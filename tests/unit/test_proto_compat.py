"""`buf breaking` against protos/baseline.binpb (the released API), as
scripts/test runs it: the current protos pass, and the policy in buf.yaml
still refuses a field deleted without reserving its number and name."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def buf_breaking(workdir: Path) -> subprocess.CompletedProcess[str]:
    buf = shutil.which("buf")
    if buf is None:
        pytest.fail("buf is a dev dependency (buf-bin); install .[dev]")
    return subprocess.run(
        [buf, "breaking", "--against", str(ROOT / "protos" / "baseline.binpb")],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_protos_keep_the_released_api() -> None:
    result = buf_breaking(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_field_deleted_without_reserving_it_breaks(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copyfile(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    path = tmp_path / "protos" / "praxis" / "v1" / "task_service.proto"
    text, count = re.subn(r"\n  string preferred_agent = 6;", "", path.read_text())
    assert count == 1
    path.write_text(text)
    result = buf_breaking(tmp_path)
    assert result.returncode != 0
    assert 'Previously present field "6" with name "preferred_agent"' in result.stdout
