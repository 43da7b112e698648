"""File tools confined to a sandbox directory: ``json_formatter`` and ``file_merger``.

Their work (reading, parsing, formatting, writing) runs in a worker process
(:mod:`praxis_grpc.tools.workers`): the functions :func:`format_data`,
:func:`format_file` and :func:`merge_files` are what a worker calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from praxis_grpc.errors import ToolError
from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.workers import WorkerPool

# Bytes a single call may read, over all the files it touches.
MAX_READ_BYTES: Final = 16 * 1024 * 1024
MAX_MERGE_FILES: Final = 100


class Sandbox:
    """A directory that file tools may not leave.

    Paths given by clients are taken relative to the root (absolute paths are
    accepted only when they lie inside it). Symbolic links are resolved before
    the check, so neither ``..`` nor a link can reach outside. The check guards
    against hostile arguments, not against another local process swapping
    links between the check and the open.

    The root need not exist yet; it is resolved at each call, so it may be
    created later. Methods do file-system I/O and may block: call them in a
    worker process (or thread), never on the event loop.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The root as resolved now."""
        return self._root.resolve()

    def resolve(self, argument: str, path: str, *, must_exist: bool) -> Path:
        """Return the real path ``path`` names inside the sandbox.

        Args:
            argument: The argument the path came from, named in errors
                (``"path"``, ``"paths[2]"``).
            path: A client-supplied path.
            must_exist: Require that the path exists.

        Raises:
            ToolError: the path is empty, escapes the root, or (with
                ``must_exist``) does not exist.
        """
        if not path or "\0" in path:
            raise ToolError(f"{argument}: {path!r} is not a valid path")
        root = self.root
        try:
            # Joining an absolute path yields that path; the check below applies.
            real = (root / path).resolve(strict=must_exist)
        except FileNotFoundError:
            raise ToolError(f"{argument}: {path!r} does not exist") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop
            raise ToolError(f"{argument}: cannot resolve {path!r}: {exc}") from None
        if not real.is_relative_to(root):
            raise ToolError(f"{argument}: {path!r} is outside the sandbox")
        return real

    def relative(self, real: Path) -> str:
        """The sandbox-relative POSIX form of a path returned by :meth:`resolve`."""
        return real.relative_to(self.root).as_posix() or "."


def read_capped(argument: str, path: str, real: Path, budget: int) -> bytes:
    """Read a whole regular file of at most ``budget`` bytes.

    Args:
        argument: The argument named in errors.
        path: The path as the client gave it, quoted in errors.
        real: The path returned by :meth:`Sandbox.resolve`.
        budget: Bytes that may still be read.

    Raises:
        ToolError: not a regular file, unreadable, or larger than ``budget``.
    """
    try:
        # O_NONBLOCK keeps a FIFO from hanging the open; O_NOFOLLOW refuses a
        # link swapped in after resolve().
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        raise ToolError(f"{argument}: cannot read {path!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{argument}: {path!r} is not a regular file")
        if info.st_size > budget:
            raise ToolError(f"{argument}: input exceeds the {MAX_READ_BYTES}-byte read limit")
        chunks = []
        remaining = budget + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1024 * 1024))):
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise ToolError(f"{argument}: cannot read {path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > budget:
        raise ToolError(f"{argument}: input exceeds the {MAX_READ_BYTES}-byte read limit")
    return data


def write_atomically(real: Path, data: bytes) -> None:
    """Replace ``real`` with ``data`` so readers see the old or the new file, never a part.

    The file gets mode 0644 (a temporary file would otherwise leave it 0600).

    Raises:
        OSError: the directory cannot be created or written, or ``real`` is a
            directory.
    """
    real.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(fd, 0o644)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def format_json(value: Any, indent: int, sort_keys: bool) -> str:
    """Serialise ``value``; ``indent`` 0 gives compact single-line output.

    Raises:
        ToolError: the value is nested too deeply to serialise.
    """
    try:
        if indent == 0:
            return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False)
        return json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
    except RecursionError:
        raise ToolError("data is nested too deeply") from None


def parse_json(argument: str, name: str, data: bytes) -> Any:
    """Parse strict JSON (no ``NaN``/``Infinity``), naming the line and column of an error.

    Raises:
        ToolError: the bytes are not UTF-8 JSON or are nested too deeply.
    """
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ToolError(
            f"{argument}: {name!r} is not valid JSON: {exc.msg} "
            f"at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise ToolError(f"{argument}: {name!r} is not UTF-8 text") from None
    except ValueError as exc:
        raise ToolError(f"{argument}: {name!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ToolError(f"{argument}: {name!r} is nested too deeply") from None


def format_data(value: Any, indent: int, sort_keys: bool) -> JSON:
    """The ``json_formatter`` result for inline ``data`` (runs in a worker)."""
    return {"formatted": format_json(value, indent, sort_keys), "valid": True}


def format_file(root: str, path: str, indent: int, sort_keys: bool) -> JSON:
    """The ``json_formatter`` result for a file of the sandbox at ``root`` (runs in a worker).

    Raises:
        ToolError: see :meth:`JsonFormatter.run`.
    """
    real = Sandbox(Path(root)).resolve("path", path, must_exist=True)
    value = parse_json("path", path, read_capped("path", path, real, MAX_READ_BYTES))
    return format_data(value, indent, sort_keys)


class JsonFormatter:
    """Pretty-prints JSON given inline (``data``) or read from a sandbox file (``path``)."""

    def __init__(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        self._sandbox = sandbox
        self._workers = workers
        self._spec = ToolSpec(
            name="json_formatter",
            description="Validate and pretty-print JSON given inline or read from a file.",
            input_schema={
                "type": "object",
                "properties": {
                    "data": {"description": "any JSON value to format"},
                    "path": {"type": "string", "minLength": 1, "description": "sandbox file"},
                    "indent": {"type": "integer", "minimum": 0, "maximum": 8, "default": 2},
                    "sort_keys": {"type": "boolean", "default": False},
                },
                "oneOf": [{"required": ["data"]}, {"required": ["path"]}],
                "additionalProperties": False,
            },
            idempotent=True,
        )

    @property
    def spec(self) -> ToolSpec:
        """The ``json_formatter`` tool spec."""
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        """Return ``{"formatted": str, "valid": True}``.

        Raises:
            ToolError: the file is outside the sandbox, missing, too large or
                not valid JSON (the message gives line and column).
        """
        indent = int(arguments.get("indent", 2))
        sort_keys = bool(arguments.get("sort_keys", False))
        if "path" in arguments:
            root = str(self._sandbox.root)
            path = str(arguments["path"])
            result: JSON = await self._workers.call(
                f"{__name__}:format_file", root, path, indent, sort_keys
            )
        else:
            result = await self._workers.call(
                f"{__name__}:format_data", arguments["data"], indent, sort_keys
            )
        return result


class FileMerger:
    """Concatenates sandbox text files into a new sandbox file. Not idempotent.

    A merge killed with its worker (timeout, cancel) leaves the output
    untouched, but may leave its temporary file (``.<name>.*.tmp``) behind.
    """

    def __init__(self, sandbox: Sandbox, workers: WorkerPool) -> None:
        self._sandbox = sandbox
        self._workers = workers
        self._spec = ToolSpec(
            name="file_merger",
            description="Concatenate UTF-8 text files into one output file.",
            input_schema={
                "type": "object",
                "properties": {
                    "paths": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "minItems": 1,
                        "maxItems": MAX_MERGE_FILES,
                    },
                    "output": {"type": "string", "minLength": 1},
                    "separator": {"type": "string", "maxLength": 1024, "default": "\n"},
                },
                "required": ["paths", "output"],
                "additionalProperties": False,
            },
            idempotent=False,
        )

    @property
    def spec(self) -> ToolSpec:
        """The ``file_merger`` tool spec."""
        return self._spec

    async def run(self, arguments: JSON) -> JSON:
        """Write the inputs joined by ``separator`` to ``output``, atomically.

        Returns:
            ``{"output": sandbox-relative path, "files": count, "bytes": size}``.

        Raises:
            ToolError: a path is outside the sandbox or missing, an input is
                not UTF-8 text, the inputs exceed the read limit, or the output
                cannot be written.
        """
        result: JSON = await self._workers.call(
            f"{__name__}:merge_files",
            str(self._sandbox.root),
            [str(path) for path in arguments["paths"]],
            str(arguments["output"]),
            str(arguments.get("separator", "\n")),
        )
        return result


def merge_files(root: str, paths: Sequence[str], output: str, separator: str) -> JSON:
    """The ``file_merger`` result (runs in a worker); see :meth:`FileMerger.run`."""
    sandbox = Sandbox(Path(root))
    inputs = [
        sandbox.resolve(f"paths[{index}]", path, must_exist=True)
        for index, path in enumerate(paths)
    ]
    target = sandbox.resolve("output", output, must_exist=False)
    budget = MAX_READ_BYTES
    texts = []
    for index, real in enumerate(inputs):
        argument = f"paths[{index}]"
        data = read_capped(argument, paths[index], real, budget)
        budget -= len(data)
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ToolError(f"{argument}: {paths[index]!r} is not UTF-8 text") from None
    merged = separator.join(texts).encode("utf-8")
    try:
        write_atomically(target, merged)
    except OSError as exc:
        raise ToolError(f"output: cannot write {output!r}: {exc.strerror or exc}") from None
    return {"output": sandbox.relative(target), "files": len(inputs), "bytes": len(merged)}
