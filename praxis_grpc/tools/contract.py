"""Contract tools: external programs described by a ``contract.yaml``.

A contract tool is a directory holding ``contract.yaml`` and whatever the
command needs. The program receives the arguments as one JSON object on stdin
and answers with one JSON object on stdout; exit code 0 means success. See
``tools/README.md`` for the operator-facing description of the format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from praxis_grpc.config import PositiveDuration
from praxis_grpc.errors import ToolError
from praxis_grpc.tools.base import JSON, ToolSpec

CONTRACT_FILE: Final = "contract.yaml"
PYTHON_PLACEHOLDER: Final = "{python}"
MAX_STDOUT_BYTES: Final = 8 * 1024 * 1024
STDERR_TAIL_BYTES: Final = 4 * 1024
KILL_GRACE_SECONDS: Final = 2.0
OUTPUT_DRAIN_SECONDS: Final = 1.0
_READ_CHUNK: Final = 64 * 1024


class ContractError(Exception):
    """A contract is invalid; the message starts with the file and the key."""


class Contract(BaseModel):
    """The validated content of a ``contract.yaml``.

    Attributes:
        name: Tool name (``[a-z][a-z0-9_]*``).
        description: One line for humans.
        input_schema: JSON Schema (draft 2020-12) of the arguments object.
        command: Program and arguments; the element ``{python}`` becomes the
            node's interpreter, and a program path containing ``/`` is
            relative to the tool directory.
        timeout: Default run time limit in seconds (``"10s"`` accepted).
        idempotent: Whether re-running after a crash is safe.
        env: Variables added to the minimal environment of the process.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    description: str = Field(min_length=1)
    input_schema: dict[str, Any]
    command: list[str] = Field(min_length=1)
    timeout: PositiveDuration | None = None
    idempotent: StrictBool = False
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("input_schema")
    @classmethod
    def _schema_is_valid(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return schema

    @field_validator("command")
    @classmethod
    def _command_elements_present(cls, command: list[str]) -> list[str]:
        if not command[0]:
            raise ValueError("the program (first element) must not be empty")
        return command

    @field_validator("env")
    @classmethod
    def _env_names_valid(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"invalid variable name {key!r}")
        return env


def load_contract(directory: Path) -> ContractTool:
    """Load the tool described by ``directory/contract.yaml``.

    Raises:
        ContractError: unreadable file, bad YAML, unknown or missing key,
            invalid value, or a program path that does not exist.
    """
    directory = directory.resolve()
    source = directory / CONTRACT_FILE
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ContractError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(_describe(exc, source)) from None
    tool = ContractTool(contract, directory)
    if shutil.which(tool.argv[0], path=tool.environment["PATH"]) is None:
        raise ContractError(
            f"{source}: command: program {contract.command[0]!r} is not an executable file"
            + ("" if "/" in tool.argv[0] else " on PATH")
        )
    return tool


def load_contracts(directory: Path) -> list[ContractTool]:
    """Load every immediate subdirectory of ``directory`` that has a contract, by name.

    Raises:
        ContractError: ``directory`` is not a directory, or a contract is invalid.
    """
    if not directory.is_dir():
        raise ContractError(f"{directory}: contracts directory does not exist")
    return [
        load_contract(child)
        for child in sorted(directory.iterdir())
        if child.is_dir() and (child / CONTRACT_FILE).is_file()
    ]


def _describe(exc: ValidationError, source: Path) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"]
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def minimal_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a contract process: ``PATH``, a UTF-8 locale, then ``extra``."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", **extra}


def interpret_outcome(name: str, code: int, stdout: bytes, stderr_tail: bytes) -> JSON:
    """Turn a finished process's exit code and output into the tool result.

    Raises:
        ToolError: non-zero exit (code or signal and the stderr tail in the
            message), or stdout that is not a single JSON object.
    """
    if code != 0:
        what = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                what = f"was killed by {signal.Signals(-code).name}"
        detail = stderr_tail.decode("utf-8", "replace").strip()
        raise ToolError(f"{name} {what}" + (f": {detail}" if detail else ""))
    try:
        value = json.loads(stdout, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ToolError(f"{name} wrote invalid JSON to stdout: {exc}") from None
    if not isinstance(value, dict):
        raise ToolError(f"{name} must write a JSON object to stdout, got {type(value).__name__}")
    return value


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


class ContractTool:
    """Runs a contract's command as a subprocess per call.

    Each run starts the command in a new session (its own process group) with
    the tool directory as working directory and a minimal environment, writes
    the arguments to stdin and closes it. If the run is cancelled, or fails
    while the process is alive, the whole process group gets SIGTERM, then
    SIGKILL after ``kill_grace`` seconds, and the leader is reaped before the
    exception propagates. Runs are independent and may be concurrent.
    """

    def __init__(
        self,
        contract: Contract,
        directory: Path,
        *,
        max_stdout: int = MAX_STDOUT_BYTES,
        kill_grace: float = KILL_GRACE_SECONDS,
    ) -> None:
        self._contract = contract
        self._directory = directory
        self._max_stdout = max_stdout
        self._kill_grace = kill_grace
        argv = [sys.executable if part == PYTHON_PLACEHOLDER else part for part in contract.command]
        if contract.command[0] != PYTHON_PLACEHOLDER and "/" in argv[0]:
            argv[0] = str(directory / argv[0])
        self._argv = tuple(argv)
        self._env = minimal_environment(contract.env)
        self._spec = ToolSpec(
            name=contract.name,
            description=contract.description,
            input_schema=contract.input_schema,
            idempotent=contract.idempotent,
            default_timeout=contract.timeout,
        )

    @property
    def spec(self) -> ToolSpec:
        """The spec built from the contract."""
        return self._spec

    @property
    def contract(self) -> Contract:
        """The contract the tool was built from."""
        return self._contract

    @property
    def directory(self) -> Path:
        """The tool directory (working directory of the process)."""
        return self._directory

    @property
    def environment(self) -> dict[str, str]:
        """The environment the process runs with (a copy)."""
        return dict(self._env)

    @property
    def argv(self) -> tuple[str, ...]:
        """The command with ``{python}`` and a relative program path resolved."""
        return self._argv

    async def run(self, arguments: JSON) -> JSON:
        """Run the command once with ``arguments`` on stdin.

        Raises:
            ToolError: the program cannot start, writes more than
                ``max_stdout`` bytes, exits non-zero, or does not write one
                JSON object.
            asyncio.CancelledError: after the process group has been killed.
        """
        payload = json.dumps(arguments, separators=(",", ":")).encode("utf-8")
        spawning = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *_die_with_parent(self._argv),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._directory,
                env=self._env,
                start_new_session=True,
            )
        )
        try:
            # Shielded: a cancel that lands while the process is starting must
            # still find it, or the program would run on unsupervised.
            process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            await self._stop_spawning(spawning)
            raise
        except OSError as exc:
            raise ToolError(
                f"{self._spec.name}: cannot start {self._argv[0]!r}: {exc.strerror or exc}"
            ) from None
        try:
            stdout, stderr_tail, code = await self._exchange(process, payload)
        except BaseException:
            await self._stop(process)
            raise
        return interpret_outcome(self._spec.name, code, stdout, stderr_tail)

    async def _stop_spawning(self, spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
        try:
            process = await spawning
        except OSError:
            return
        await self._stop(process)

    async def _exchange(
        self, process: asyncio.subprocess.Process, payload: bytes
    ) -> tuple[bytes, bytes, int]:
        if process.stdin is None or process.stdout is None or process.stderr is None:
            raise RuntimeError("subprocess started without pipes")
        # stdin and stderr are serviced concurrently with stdout so that neither
        # side can block on a full pipe.
        feeder = asyncio.create_task(_feed(process.stdin, payload))
        tail = asyncio.create_task(_tail(process.stderr, STDERR_TAIL_BYTES))
        try:
            stdout = await self._read_stdout(process.stdout)
            code = await process.wait()
            return stdout, await tail, code
        finally:
            feeder.cancel()
            tail.cancel()
            await asyncio.gather(feeder, tail, return_exceptions=True)

    async def _read_stdout(self, stream: asyncio.StreamReader) -> bytes:
        data = bytearray()
        while chunk := await stream.read(_READ_CHUNK):
            data += chunk
            if len(data) > self._max_stdout:
                raise ToolError(
                    f"{self._spec.name} wrote more than {self._max_stdout} bytes to stdout"
                )
        return bytes(data)

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        # The group id is the leader's pid. The kernel does not recycle a pid
        # while a group of that id has members, so this reaches only our
        # processes; once all are gone the id could be recycled only after the
        # pid space wraps, which the grace period makes implausible.
        #
        # Output is read to EOF meanwhile: a full pipe would keep a writer
        # blocked, and Process.wait() also waits for the pipes to close.
        drain = asyncio.ensure_future(_discard_output(process))
        try:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), self._kill_grace)
            # Also reaches group members that outlived or ignored SIGTERM.
            _signal_group(process.pid, signal.SIGKILL)
            # Bounded: a process that left the group may still hold a pipe.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), OUTPUT_DRAIN_SECONDS)
        except asyncio.CancelledError:
            _signal_group(process.pid, signal.SIGKILL)
            raise
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ESRCH: the group is gone; EPERM: only zombies are left (macOS).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _feed(stdin: asyncio.StreamWriter, payload: bytes) -> None:
    # A program may exit without reading its input; that is its business.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        try:
            stdin.write(payload)
            await stdin.drain()
        finally:
            stdin.close()
        await stdin.wait_closed()


async def _discard_output(process: asyncio.subprocess.Process) -> None:
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            while await stream.read(_READ_CHUNK):
                pass


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    data = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        data += chunk
        del data[:-keep]
    return bytes(data)


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that it gets SIGKILL when the node dies (Linux).

    Without it a tool process outlives a node killed with SIGKILL and goes on
    executing a task that the mesh is already running elsewhere. ``setpriv``
    (util-linux) sets the parent-death signal and execs the tool, so no
    Python runs between fork and exec (a ``preexec_fn`` would, in a process
    whose gRPC threads run). The signal fires when the thread that started
    the child exits: the event loop's thread, i.e. the node.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)
