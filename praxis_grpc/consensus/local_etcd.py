"""A real etcd cluster of local processes, for ``praxis launch --backend etcd``,
tests and benchmarks (re-exported by :mod:`praxis_grpc.testing.etcd_cluster`).

:class:`EtcdCluster` runs the ``etcd`` binary (Debian's ``etcd-server``) as
``size`` members on 127.0.0.1 with ephemeral ports and a throwaway data
directory, waits until the cluster serves linearizable reads, and lets a test
kill, pause, resume and restart members by index. Every process it started is
killed by PID when the cluster closes (and at interpreter exit if a caller
forgot), and the data directory is removed.

The methods block (they are meant for fixtures and benchmark drivers); call
the waiting ones through ``asyncio.to_thread`` from a running event loop.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from praxis_grpc._gen.etcd.etcdserver.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["EtcdCluster", "EtcdClusterError", "EtcdMember", "etcd_cluster", "find_etcd"]

_HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5
_RPC_TIMEOUT = 1.0


class EtcdClusterError(RuntimeError):
    """The cluster did not start or recover in time; the message has log tails."""


def find_etcd() -> str | None:
    """The path of the ``etcd`` binary (on PATH or in /usr/bin), or None."""
    found = shutil.which("etcd")
    if found:
        return found
    for candidate in ("/usr/bin/etcd", "/usr/local/bin/etcd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class EtcdMember:
    """One etcd member process.

    Attributes:
        index: Position in :attr:`EtcdCluster.members`.
        name: The etcd member name (``m0``, ``m1``, ...).
        client_port: Port of the client (gRPC) URL.
        peer_port: Port of the peer (Raft) URL.
        data_dir: The member's ``--data-dir``.
        log_path: The member's stderr log.
        process: The running process; None before start and after a kill.
        paused: True between :meth:`EtcdCluster.stop` and :meth:`EtcdCluster.cont`.
        member_id: The etcd member id once the cluster was healthy (0 before).
    """

    index: int
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    member_id: int = 0

    @property
    def endpoint(self) -> str:
        """The client endpoint, ``host:port``."""
        return f"{_HOST}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The process id while the process exists."""
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The last lines of the member's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """``size`` local etcd members forming one cluster (see the module docstring).

    Args:
        size: Number of members.
        heartbeat: etcd ``--heartbeat-interval`` in seconds.
        election_timeout: etcd ``--election-timeout`` in seconds.
        data_dir: Parent directory for member data; default a fresh temporary
            directory (in /dev/shm when there is one, so fsync is cheap),
            removed on close.
        binary: The etcd binary; default :func:`find_etcd`.
        start_timeout: Seconds :meth:`start` and :meth:`restart` wait for health.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        heartbeat: float = 0.05,
        election_timeout: float = 0.25,
        data_dir: Path | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        if heartbeat * 5 > election_timeout:
            raise ValueError("election_timeout must be at least 5 heartbeats")
        found = binary or find_etcd()
        if found is None:
            raise FileNotFoundError("etcd binary not found (apt-get install etcd-server)")
        self.binary = found
        self.size = size
        self.heartbeat = heartbeat
        self.election_timeout = election_timeout
        self.start_timeout = start_timeout
        self._own_dir = data_dir is None
        shm = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private directory in it)
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="praxis-etcd-", dir=base))
        self.members: list[EtcdMember] = []
        self._logs: dict[int, IO[bytes]] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._token = f"praxis-{os.getpid()}-{id(self):x}"

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints (``host:port``) of every member, in index order."""
        return [member.endpoint for member in self.members]

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every member and wait until the cluster is healthy.

        Ports are chosen free just before the start; when one is taken in the
        meantime the whole cluster is started again on new ports.

        Raises:
            EtcdClusterError: no healthy cluster within ``start_timeout``.
        """
        atexit.register(self.close)
        for attempt in range(_PORT_ATTEMPTS):
            self._create_members(attempt)
            for member in self.members:
                self._launch(member)
            try:
                self.wait_healthy(self.start_timeout)
            except EtcdClusterError:
                collided = any("address already in use" in m.tail(50) for m in self.members)
                if not collided or attempt == _PORT_ATTEMPTS - 1:
                    self.close()
                    raise
                self._kill_all()
                continue
            return

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and wait for it to exit."""
        member = self.members[index]
        if member.process is not None:
            with contextlib.suppress(ProcessLookupError):
                member.process.kill()
            member.process.wait(timeout=10)
        member.process = None
        member.paused = False

    def stop(self, index: int) -> None:
        """SIGSTOP member ``index``: it keeps its sockets but answers nothing."""
        self._process(index).send_signal(signal.SIGSTOP)
        self.members[index].paused = True

    def cont(self, index: int) -> None:
        """SIGCONT member ``index`` after :meth:`stop`."""
        self._process(index).send_signal(signal.SIGCONT)
        self.members[index].paused = False

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start member ``index`` again (killing it first if it runs) on its
        ports and data; with ``wait``, until the cluster is healthy again."""
        self.kill(index)
        self._launch(self.members[index])
        if wait:
            self.wait_healthy(self.start_timeout)

    def status(self, index: int, timeout: float = _RPC_TIMEOUT) -> rpc_pb2.StatusResponse:
        """The Maintenance.Status of member ``index`` (raises grpc.RpcError)."""
        stub = rpc_pb2_grpc.MaintenanceStub(self._channel(self.members[index].endpoint))
        response: rpc_pb2.StatusResponse = stub.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        return response

    def leader_index(self) -> int | None:
        """The index of the member that leads etcd's Raft group, as the running,
        unpaused members report it (a leader just killed or paused until they
        notice); None while they know of none or disagree."""
        views: set[int] = set()
        for member in self._answering():
            try:
                views.add(self.status(member.index).leader)
            except grpc.RpcError:
                continue
        if len(views) != 1:
            return None
        leader = views.pop()
        return next((m.index for m in self.members if m.member_id and m.member_id == leader), None)

    def wait_leader(self, timeout: float = 10.0, *, not_index: int | None = None) -> int:
        """Wait until a leader (other than ``not_index``) is known; return its index."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader_index()
            if index is not None and index != not_index:
                return index
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"no etcd leader within {timeout:g}s\n{self._tails()}")
            time.sleep(0.02)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until every running, unpaused member answers, they agree on a
        leader, and a linearizable read succeeds.

        Raises:
            EtcdClusterError: not within ``timeout``, or a member process exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                if member.process is not None and member.process.poll() is not None:
                    raise EtcdClusterError(
                        f"etcd member {member.name} exited with {member.process.returncode}:\n"
                        f"{member.tail()}"
                    )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"etcd not healthy within {timeout:g}s\n{self._tails()}")
            time.sleep(0.05)

    def close(self) -> None:
        """Kill every member process this cluster started and remove its data."""
        atexit.unregister(self.close)
        self._kill_all()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _create_members(self, attempt: int) -> None:
        ports = _free_ports(2 * self.size)
        self.members = [
            EtcdMember(
                index=i,
                name=f"m{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self.data_dir / f"a{attempt}" / f"m{i}",
                log_path=self.data_dir / f"a{attempt}" / f"m{i}.log",
            )
            for i in range(self.size)
        ]

    def _launch(self, member: EtcdMember) -> None:
        peers = ",".join(f"{m.name}=http://{_HOST}:{m.peer_port}" for m in self.members)
        client_url = f"http://{member.endpoint}"
        peer_url = f"http://{_HOST}:{member.peer_port}"
        argv = [
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={peers}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self._token}",
            f"--heartbeat-interval={round(self.heartbeat * 1000)}",
            f"--election-timeout={round(self.election_timeout * 1000)}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        member.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if member.index in self._logs:
            self._logs.pop(member.index).close()
        log = self._logs[member.index] = member.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        member.process = subprocess.Popen(
            _die_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        member.paused = False

    def _kill_all(self) -> None:
        for member in self.members:
            self.kill(member.index)
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def _process(self, index: int) -> subprocess.Popen[bytes]:
        member = self.members[index]
        if member.process is None or member.process.poll() is not None:
            raise EtcdClusterError(f"etcd member {member.name} is not running")
        return member.process

    def _answering(self) -> list[EtcdMember]:
        return [m for m in self.members if m.running and not m.paused]

    def _healthy(self) -> bool:
        members = self._answering()
        if not members:
            return False
        try:
            statuses = [self.status(member.index) for member in members]
            leaders = {status.leader for status in statuses}
            if len(leaders) != 1 or 0 in leaders:
                return False
            kv = rpc_pb2_grpc.KVStub(self._channel(members[0].endpoint))
            kv.Range(rpc_pb2.RangeRequest(key=b"health"), timeout=_RPC_TIMEOUT)
        except grpc.RpcError:
            return False
        for member, status in zip(members, statuses, strict=True):
            member.member_id = status.header.member_id
        return True

    def _channel(self, endpoint: str) -> grpc.Channel:
        if endpoint not in self._channels:
            self._channels[endpoint] = grpc.insecure_channel(endpoint)
        return self._channels[endpoint]

    def _tails(self) -> str:
        return "\n".join(f"--- {m.name} ({m.endpoint}):\n{m.tail()}" for m in self.members)


@contextlib.contextmanager
def etcd_cluster(
    size: int = 3,
    *,
    heartbeat: float = 0.05,
    election_timeout: float = 0.25,
    data_dir: Path | None = None,
    binary: str | None = None,
) -> Iterator[EtcdCluster]:
    """Run a healthy :class:`EtcdCluster` for the block (arguments as its constructor)."""
    with EtcdCluster(
        size,
        heartbeat=heartbeat,
        election_timeout=election_timeout,
        data_dir=data_dir,
        binary=binary,
    ) as cluster:
        yield cluster


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are bound so the ports are distinct.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGKILL when this process dies (Linux).

    setpriv sets the parent-death signal and execs, so the PID stays etcd's.
    Not a ``preexec_fn``: forking a process whose gRPC threads run and then
    running Python in the child can abort it (gRPC's fork handlers); without
    one, subprocess uses vfork. PDEATHSIG fires when the *thread* that started
    the child exits, so only the main thread asks for it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]
