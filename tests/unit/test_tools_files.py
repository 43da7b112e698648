"""File tools stay inside their sandbox and write atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from praxis_grpc.errors import ToolError
from praxis_grpc.tools.files import MAX_READ_BYTES, FileMerger, JsonFormatter, Sandbox
from praxis_grpc.tools.workers import WorkerPool


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "sandbox"
    root.mkdir()
    return root


@pytest.fixture
def sandbox(root: Path) -> Sandbox:
    return Sandbox(root)


class TestSandbox:
    def test_resolves_relative_paths_under_the_root(self, sandbox: Sandbox, root: Path) -> None:
        (root / "a").mkdir()
        (root / "a" / "b.txt").write_text("x")

        real = sandbox.resolve("path", "a/./b.txt", must_exist=True)

        assert real == (root / "a" / "b.txt").resolve()
        assert sandbox.relative(real) == "a/b.txt"

    def test_accepts_absolute_paths_inside_the_root(self, sandbox: Sandbox, root: Path) -> None:
        (root / "f").write_text("x")

        assert sandbox.resolve("path", str(root / "f"), must_exist=True) == (root / "f").resolve()

    @pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "new/../../x"])
    def test_rejects_dot_dot_escapes(self, sandbox: Sandbox, root: Path, path: str) -> None:
        (root.parent / "outside.txt").write_text("secret")

        with pytest.raises(ToolError, match=r"^output: .* is outside the sandbox"):
            sandbox.resolve("output", path, must_exist=False)

    def test_rejects_absolute_paths_outside(self, sandbox: Sandbox, root: Path) -> None:
        outside = root.parent / "outside.txt"
        outside.write_text("secret")

        with pytest.raises(ToolError, match=r"^path: .* is outside the sandbox"):
            sandbox.resolve("path", str(outside), must_exist=True)

    def test_rejects_symlinks_pointing_outside(self, sandbox: Sandbox, root: Path) -> None:
        outside_dir = root.parent / "elsewhere"
        outside_dir.mkdir()
        (outside_dir / "secret.txt").write_text("secret")
        (root / "link.txt").symlink_to(outside_dir / "secret.txt")
        (root / "linkdir").symlink_to(outside_dir)

        with pytest.raises(ToolError, match="outside the sandbox"):
            sandbox.resolve("path", "link.txt", must_exist=True)
        with pytest.raises(ToolError, match="outside the sandbox"):
            sandbox.resolve("output", "linkdir/new.txt", must_exist=False)

    def test_rejects_dangling_symlink_pointing_outside(self, sandbox: Sandbox, root: Path) -> None:
        (root / "dangling").symlink_to(root.parent / "not-yet")

        with pytest.raises(ToolError, match="outside the sandbox"):
            sandbox.resolve("output", "dangling", must_exist=False)

    def test_follows_symlinks_that_stay_inside(self, sandbox: Sandbox, root: Path) -> None:
        (root / "real.txt").write_text("x")
        (root / "alias.txt").symlink_to(root / "real.txt")

        assert sandbox.resolve("path", "alias.txt", must_exist=True).name == "real.txt"

    def test_missing_file_names_the_argument(self, sandbox: Sandbox) -> None:
        with pytest.raises(ToolError, match=r"^paths\[1\]: 'nope' does not exist"):
            sandbox.resolve("paths[1]", "nope", must_exist=True)

    @pytest.mark.parametrize("path", ["", "a\0b"])
    def test_rejects_invalid_paths(self, sandbox: Sandbox, path: str) -> None:
        with pytest.raises(ToolError, match="not a valid path"):
            sandbox.resolve("path", path, must_exist=False)


class TestJsonFormatter:
    async def test_formats_inline_data(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        result = await JsonFormatter(sandbox, workers).run({"data": {"b": 1, "a": [1, 2]}})

        assert result == {
            "formatted": '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}',
            "valid": True,
        }

    async def test_indent_and_sort_keys(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        formatter = JsonFormatter(sandbox, workers)

        sorted_result = await formatter.run({"data": {"b": 1, "a": 2}, "sort_keys": True})
        compact = await formatter.run({"data": {"b": 1, "a": "é"}, "indent": 0})

        assert sorted_result["formatted"].index('"a"') < sorted_result["formatted"].index('"b"')
        assert compact["formatted"] == '{"b":1,"a":"é"}'

    async def test_formats_null_data(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        assert (await JsonFormatter(sandbox, workers).run({"data": None}))["formatted"] == "null"

    async def test_formats_a_sandbox_file(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "doc.json").write_text('{"x": [1, {"y": null}]}')

        result = await JsonFormatter(sandbox, workers).run({"path": "doc.json", "indent": 4})

        assert json.loads(result["formatted"]) == {"x": [1, {"y": None}]}
        assert '\n    "x"' in result["formatted"]

    async def test_invalid_json_file_reports_line_and_column(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "bad.json").write_text('{\n  "a": 1,\n  "b": }\n')

        with pytest.raises(
            ToolError, match=r"^path: 'bad.json' is not valid JSON: .* line 3 column 8"
        ):
            await JsonFormatter(sandbox, workers).run({"path": "bad.json"})

    async def test_rejects_nan_and_non_utf8(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "nan.json").write_text('{"a": NaN}')
        (root / "latin.json").write_bytes(b'"caf\xe9"')

        with pytest.raises(ToolError, match="NaN is not valid JSON"):
            await JsonFormatter(sandbox, workers).run({"path": "nan.json"})
        with pytest.raises(ToolError, match="not UTF-8"):
            await JsonFormatter(sandbox, workers).run({"path": "latin.json"})

    async def test_refuses_files_outside_the_sandbox(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root.parent / "secret.json").write_text("{}")

        with pytest.raises(ToolError, match="outside the sandbox"):
            await JsonFormatter(sandbox, workers).run({"path": "../secret.json"})

    async def test_refuses_directories_and_oversized_files(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "dir").mkdir()
        with (root / "big.json").open("wb") as stream:
            stream.truncate(MAX_READ_BYTES + 1)

        with pytest.raises(ToolError, match="not a regular file"):
            await JsonFormatter(sandbox, workers).run({"path": "dir"})
        with pytest.raises(ToolError, match="read limit"):
            await JsonFormatter(sandbox, workers).run({"path": "big.json"})

    async def test_fifo_does_not_hang(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        os.mkfifo(root / "pipe")

        with pytest.raises(ToolError, match="not a regular file"):
            await JsonFormatter(sandbox, workers).run({"path": "pipe"})

    def test_spec_is_idempotent_and_requires_exactly_one_source(
        self, sandbox: Sandbox, workers: WorkerPool
    ) -> None:
        spec = JsonFormatter(sandbox, workers).spec

        assert spec.idempotent
        assert spec.input_schema["oneOf"] == [{"required": ["data"]}, {"required": ["path"]}]


class TestFileMerger:
    async def test_merges_files_with_separator(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "a.txt").write_text("alpha")
        (root / "b.txt").write_text("béta")

        result = await FileMerger(sandbox, workers).run(
            {"paths": ["a.txt", "b.txt"], "output": "out/merged.txt", "separator": "\n--\n"}
        )

        merged = (root / "out" / "merged.txt").read_text()
        assert merged == "alpha\n--\nbéta"
        assert (root / "out" / "merged.txt").stat().st_mode & 0o777 == 0o644
        assert result == {"output": "out/merged.txt", "files": 2, "bytes": len(merged.encode())}

    async def test_default_separator_is_newline(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "a.txt").write_text("1")

        await FileMerger(sandbox, workers).run({"paths": ["a.txt", "a.txt"], "output": "twice.txt"})

        assert (root / "twice.txt").read_text() == "1\n1"

    async def test_may_overwrite_one_of_its_inputs(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "log.txt").write_text("old")
        (root / "new.txt").write_text("new")

        await FileMerger(sandbox, workers).run(
            {"paths": ["log.txt", "new.txt"], "output": "log.txt"}
        )

        assert (root / "log.txt").read_text() == "old\nnew"
        assert sorted(p.name for p in root.iterdir()) == ["log.txt", "new.txt"]

    async def test_names_the_bad_input(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "a.txt").write_text("a")
        (root / "bin").write_bytes(b"\xff\xfe\x00")

        with pytest.raises(ToolError, match=r"^paths\[1\]: 'missing.txt' does not exist"):
            await FileMerger(sandbox, workers).run(
                {"paths": ["a.txt", "missing.txt"], "output": "o"}
            )
        with pytest.raises(ToolError, match=r"^paths\[1\]: 'bin' is not UTF-8 text"):
            await FileMerger(sandbox, workers).run({"paths": ["a.txt", "bin"], "output": "o"})
        assert not (root / "o").exists()

    async def test_output_outside_the_sandbox_is_refused(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "a.txt").write_text("a")

        with pytest.raises(ToolError, match=r"^output: .* outside the sandbox"):
            await FileMerger(sandbox, workers).run({"paths": ["a.txt"], "output": "../escaped.txt"})
        assert not (root.parent / "escaped.txt").exists()

    async def test_output_that_is_a_directory_fails_cleanly(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        (root / "a.txt").write_text("a")
        (root / "dir").mkdir()

        with pytest.raises(ToolError, match=r"^output: cannot write 'dir'"):
            await FileMerger(sandbox, workers).run({"paths": ["a.txt"], "output": "dir"})
        assert list((root / "dir").iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == ["a.txt", "dir"]

    async def test_total_input_is_capped(
        self, sandbox: Sandbox, workers: WorkerPool, root: Path
    ) -> None:
        half = MAX_READ_BYTES // 2 + 1
        for name in ("a", "b"):
            with (root / name).open("wb") as stream:
                stream.truncate(half)

        with pytest.raises(ToolError, match=r"^paths\[1\]: .*read limit"):
            await FileMerger(sandbox, workers).run({"paths": ["a", "b"], "output": "o"})

    def test_spec_is_not_idempotent(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        assert FileMerger(sandbox, workers).spec.idempotent is False
