"""Contract tools: loading contract.yaml strictly and running the program safely."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from praxis_grpc.errors import InvalidArgument, ToolError
from praxis_grpc.tools.contract import (
    ContractError,
    ContractTool,
    interpret_outcome,
    load_contract,
    load_contracts,
)
from praxis_grpc.tools.registry import ToolRegistry

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
DEADLINE = 10.0


def write_tool(parent: Path, name: str, script: str, **contract: Any) -> Path:
    """Create ``parent/name`` with a Python ``main.py`` and its contract."""
    directory = parent / name
    directory.mkdir(parents=True)
    (directory / "main.py").write_text(textwrap.dedent(script))
    document = {
        "name": name,
        "description": f"test tool {name}",
        "input_schema": {"type": "object"},
        "command": ["{python}", "main.py"],
        **contract,
    }
    (directory / "contract.yaml").write_text(yaml.safe_dump(document))
    return directory


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait, within the deadline, for it to end cancelled."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE)


def exited(pid: int) -> bool:
    """True once ``pid`` is reaped; a zombie awaiting an absent init reaper counts too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class TestDataStats:
    @pytest.fixture
    def tool(self) -> ContractTool:
        (tool,) = [t for t in load_contracts(TOOLS_DIR) if t.spec.name == "data_stats"]
        return tool

    def test_contract_is_loaded(self, tool: ContractTool) -> None:
        assert tool.spec.idempotent is True
        assert tool.spec.default_timeout == 30.0
        assert tool.argv == (sys.executable, "stats.py")
        assert tool.directory == TOOLS_DIR / "data_stats"

    async def test_computes_statistics(self, tool: ContractTool) -> None:
        result = await tool.run({"values": [2, 4, 4, 4, 5, 5, 7, 9]})

        assert result == {
            "count": 8,
            "sum": 40.0,
            "mean": 5.0,
            "median": 4.5,
            "min": 2.0,
            "max": 9.0,
            "stdev": 2.0,
        }

    async def test_schema_guards_the_input(self, tool: ContractTool) -> None:
        registry = ToolRegistry([tool])

        with pytest.raises(
            InvalidArgument, match=r"arguments\.values\[1\]: must be of type number"
        ):
            registry.validate("data_stats", {"values": [1, "2"]})

    async def test_bad_input_fails_with_the_programs_message(self, tool: ContractTool) -> None:
        with pytest.raises(ToolError, match=r"exited with code 1: data_stats: 'values' must hold"):
            await tool.run({"values": []})


class TestRun:
    async def test_passes_arguments_on_stdin_in_a_minimal_environment(self, tmp_path: Path) -> None:
        script = """
            import json, os, sys
            reply = {"arguments": json.load(sys.stdin), "cwd": os.getcwd(), "env": dict(os.environ)}
            json.dump(reply, sys.stdout)
        """
        directory = write_tool(tmp_path, "mirror", script, env={"MIRROR_MODE": "test"})

        result = await load_contract(directory).run({"x": [1, "é"]})

        assert result["arguments"] == {"x": [1, "é"]}
        assert Path(result["cwd"]) == directory.resolve()
        assert set(result["env"]) - {"LC_CTYPE"} == {"PATH", "LANG", "MIRROR_MODE"}
        assert result["env"]["MIRROR_MODE"] == "test"

    async def test_program_may_ignore_a_large_stdin(self, tmp_path: Path) -> None:
        directory = write_tool(tmp_path, "deaf", "print('{}')")

        assert await load_contract(directory).run({"blob": "x" * 1_000_000}) == {}

    async def test_nonzero_exit_reports_code_and_stderr_tail(self, tmp_path: Path) -> None:
        script = """
            import sys
            sys.stderr.write("noise\\n" * 2000 + "the real reason")
            sys.exit(3)
        """
        tool = load_contract(write_tool(tmp_path, "failing", script))

        with pytest.raises(ToolError) as caught:
            await tool.run({})

        message = caught.value.message
        assert message.startswith("failing exited with code 3: ")
        assert message.endswith("the real reason")
        assert len(message) < 4096 + 100

    async def test_death_by_signal_is_named(self, tmp_path: Path) -> None:
        script = """
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
        """
        tool = load_contract(write_tool(tmp_path, "suicidal", script))

        with pytest.raises(ToolError, match="suicidal was killed by SIGKILL"):
            await tool.run({})

    @pytest.mark.parametrize(
        ("output", "message"),
        [
            ("not json", "invalid JSON"),
            ("", "invalid JSON"),
            ("[1, 2]", "must write a JSON object to stdout, got list"),
            ('{"x": NaN}', "NaN is not valid JSON"),
        ],
    )
    async def test_stdout_must_be_one_json_object(
        self, tmp_path: Path, output: str, message: str
    ) -> None:
        tool = load_contract(write_tool(tmp_path, "chatty", f"print({output!r})"))

        with pytest.raises(ToolError, match=message):
            await tool.run({})

    async def test_oversized_stdout_fails_and_kills_the_process(self, tmp_path: Path) -> None:
        script = """
            import os, sys
            with open("pid", "w") as f:
                f.write(str(os.getpid()))
            while True:
                sys.stdout.write("x" * 4096)
        """
        directory = write_tool(tmp_path, "flood", script)
        tool = load_contract(directory)
        limited = ContractTool(tool.contract, tool.directory, max_stdout=64 * 1024)

        with pytest.raises(ToolError, match="flood wrote more than 65536 bytes to stdout"):
            await limited.run({})

        pid = int((directory / "pid").read_text())
        await wait_until(lambda: reaped(pid), f"process {pid} is gone")

    async def test_program_that_cannot_start(self, tmp_path: Path) -> None:
        tool = load_contract(write_tool(tmp_path, "gone", "print('{}')"))
        (tmp_path / "gone").rename(tmp_path / "moved")

        with pytest.raises(ToolError, match="gone: cannot start"):
            await tool.run({})

    async def test_concurrent_runs_are_independent(self, tmp_path: Path) -> None:
        script = """
            import json, sys
            json.dump({"n": json.load(sys.stdin)["n"] * 2}, sys.stdout)
        """
        tool = load_contract(write_tool(tmp_path, "double", script))

        results = await asyncio.gather(*(tool.run({"n": n}) for n in range(8)))

        assert [r["n"] for r in results] == [n * 2 for n in range(8)]


class TestCancellation:
    SLEEPER = """
        import os, signal, subprocess, sys, time
        {prelude}
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open("pids.tmp", "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        os.replace("pids.tmp", "pids")
        time.sleep(120)
    """

    @pytest.fixture(autouse=True)
    def no_stragglers(self) -> Iterator[list[int]]:
        """Process groups started by the test; killed at teardown should a test fail."""
        groups: list[int] = []
        yield groups
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    @pytest.fixture
    def sleeper(self, tmp_path: Path) -> Callable[..., Path]:
        def make(*, ignore_term: bool = False) -> Path:
            prelude = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else ""
            script = self.SLEEPER.format(prelude=prelude)
            return write_tool(tmp_path, "sleeper", script, timeout="1h")

        return make

    @staticmethod
    def pids(directory: Path, groups: list[int]) -> tuple[int, int]:
        leader, child = map(int, (directory / "pids").read_text().split())
        groups.append(leader)
        return leader, child

    async def started(
        self, directory: Path, task: asyncio.Task[Any], groups: list[int]
    ) -> tuple[int, int]:
        await wait_until(
            lambda: (directory / "pids").exists() or task.done(), "the tool writes its pids"
        )
        if task.done():
            task.result()
        return self.pids(directory, groups)

    async def test_cancel_kills_the_process_group(
        self, sleeper: Callable[..., Path], no_stragglers: list[int]
    ) -> None:
        directory = sleeper()
        task = asyncio.create_task(load_contract(directory).run({}))
        leader, child = await self.started(directory, task, no_stragglers)

        await cancel(task)

        await wait_until(lambda: reaped(leader), f"leader {leader} is reaped")
        await wait_until(lambda: exited(child), f"child {child} has exited")

    async def test_cancel_while_the_process_starts_still_stops_it(
        self, sleeper: Callable[..., Path], no_stragglers: list[int]
    ) -> None:
        directory = sleeper()
        # Children of this process that an earlier test left behind are not
        # the program: waiting for "any child" then starved the loop before
        # the fork (the task never ran), so the program never started.
        before = {child.pid for child in psutil.Process().children()}
        task = asyncio.create_task(load_contract(directory).run({}))
        deadline = time.monotonic() + DEADLINE

        def forked() -> bool:
            return any(child.pid not in before for child in psutil.Process().children())

        while not forked():  # yield single steps: the fork, no more
            assert time.monotonic() < deadline, "the program was not forked"
            await asyncio.sleep(0)
        # Starve the loop, as a busy node might, so the program is running and
        # has forked its own child before the run learns its process started.
        while not (directory / "pids").exists():
            assert time.monotonic() < deadline, "the program did not start"
            time.sleep(0.01)
        leader, child = self.pids(directory, no_stragglers)

        await cancel(task)

        await wait_until(lambda: reaped(leader), f"leader {leader} is reaped")
        await wait_until(lambda: exited(child), f"child {child} has exited")

    async def test_timeout_kills_the_process_group(
        self, sleeper: Callable[..., Path], no_stragglers: list[int]
    ) -> None:
        directory = sleeper()
        task = asyncio.create_task(load_contract(directory).run({}))
        leader, child = await self.started(directory, task, no_stragglers)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, timeout=0.1)

        await wait_until(lambda: reaped(leader), f"leader {leader} is reaped")
        await wait_until(lambda: exited(child), f"child {child} has exited")

    async def test_sigterm_ignored_escalates_to_sigkill(
        self, sleeper: Callable[..., Path], no_stragglers: list[int]
    ) -> None:
        directory = sleeper(ignore_term=True)
        tool = load_contract(directory)
        impatient = ContractTool(tool.contract, tool.directory, kill_grace=0.2)
        task = asyncio.create_task(impatient.run({}))
        leader, child = await self.started(directory, task, no_stragglers)

        await cancel(task)

        await wait_until(lambda: reaped(leader), f"leader {leader} is reaped")
        await wait_until(lambda: exited(child), f"child {child} has exited")


class TestLoading:
    def contract_file(self, tmp_path: Path, document: Any) -> Path:
        directory = tmp_path / "tool"
        directory.mkdir()
        (directory / "main.py").write_text("print('{}')")
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        (directory / "contract.yaml").write_text(text)
        return directory

    VALID: dict[str, Any] = {
        "name": "ok",
        "description": "d",
        "input_schema": {"type": "object"},
        "command": ["{python}", "main.py"],
    }

    @pytest.mark.parametrize(
        ("change", "key", "message"),
        [
            ({"timeoutt": "10s"}, "timeoutt", "unknown key"),
            ({"name": None}, "name", "Input should be a valid string"),
            ({"name": "Bad-Name"}, "name", "String should match pattern"),
            ({"command": "python main.py"}, "command", "valid list"),
            ({"command": []}, "command", "at least 1 item"),
            ({"timeout": "soon"}, "timeout", "expected a duration"),
            ({"timeout": "0s"}, "timeout", "greater than 0"),
            ({"idempotent": "yes"}, "idempotent", "valid boolean"),
            ({"input_schema": {"type": "nonsense"}}, "input_schema", "not a valid JSON Schema"),
            ({"env": {"A": 1}}, "env.A", "valid string"),
            ({"env": {"A=B": "1"}}, "env", "invalid variable name"),
        ],
    )
    def test_bad_contract_names_file_and_key(
        self, tmp_path: Path, change: dict[str, Any], key: str, message: str
    ) -> None:
        directory = self.contract_file(tmp_path, {**self.VALID, **change})

        with pytest.raises(ContractError) as caught:
            load_contract(directory)

        assert str(caught.value).startswith(f"{directory.resolve() / 'contract.yaml'}: {key}: ")
        assert message in str(caught.value)

    def test_missing_key_is_named(self, tmp_path: Path) -> None:
        document = {k: v for k, v in self.VALID.items() if k != "command"}
        directory = self.contract_file(tmp_path, document)

        with pytest.raises(
            ContractError, match=r"contract\.yaml: command: required key is missing"
        ):
            load_contract(directory)

    @pytest.mark.parametrize(
        ("text", "message"),
        [("name: [unclosed", "invalid YAML"), ("- a list", "top level must be a mapping")],
    )
    def test_malformed_yaml(self, tmp_path: Path, text: str, message: str) -> None:
        with pytest.raises(ContractError, match=message):
            load_contract(self.contract_file(tmp_path, text))

    def test_missing_program_is_reported(self, tmp_path: Path) -> None:
        directory = self.contract_file(tmp_path, {**self.VALID, "command": ["./run.sh"]})

        with pytest.raises(
            ContractError, match=r"command: program './run.sh' is not an executable"
        ):
            load_contract(directory)

    def test_relative_program_resolves_against_the_tool_directory(self, tmp_path: Path) -> None:
        directory = self.contract_file(tmp_path, {**self.VALID, "command": ["bin/run", "--flag"]})
        (directory / "bin").mkdir()
        (directory / "bin" / "run").write_text("#!/bin/sh\necho '{}'\n")
        (directory / "bin" / "run").chmod(0o755)

        tool = load_contract(directory)

        assert tool.argv == (str(directory.resolve() / "bin" / "run"), "--flag")

    async def test_shell_free_program_runs(self, tmp_path: Path) -> None:
        directory = self.contract_file(tmp_path, {**self.VALID, "command": ["./run"]})
        (directory / "run").write_text("#!/bin/sh\ncat > /dev/null\necho '{\"ok\": true}'\n")
        (directory / "run").chmod(0o755)

        assert await load_contract(directory).run({}) == {"ok": True}

    def test_load_contracts_takes_subdirectories_with_a_contract_in_order(
        self, tmp_path: Path
    ) -> None:
        write_tool(tmp_path, "zeta", "print('{}')")
        write_tool(tmp_path, "alpha", "print('{}')")
        (tmp_path / "no_contract").mkdir()
        (tmp_path / "stray.yaml").write_text("name: x")

        assert [t.spec.name for t in load_contracts(tmp_path)] == ["alpha", "zeta"]

    def test_missing_contracts_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ContractError, match="contracts directory does not exist"):
            load_contracts(tmp_path / "absent")


class TestInterpretOutcome:
    def test_success_is_the_stdout_object(self) -> None:
        assert interpret_outcome("t", 0, json.dumps({"a": 1}).encode(), b"") == {"a": 1}

    def test_failure_without_stderr(self) -> None:
        with pytest.raises(ToolError, match=r"^t exited with code 2$"):
            interpret_outcome("t", 2, b"", b"")

    def test_stderr_is_decoded_leniently(self) -> None:
        with pytest.raises(ToolError, match="t exited with code 1: bad \ufffd"):
            interpret_outcome("t", 1, b"", b"bad \xff\n")

    def test_killed_by_signal(self) -> None:
        with pytest.raises(ToolError, match="t was killed by SIGTERM"):
            interpret_outcome("t", -15, b"{}", b"")
