"""The node-to-node interface, in domain types (no protobuf, except the
public ``praxis.v1.Agent`` that :meth:`PeerClient.describe` passes through
unchanged: a node describes itself exactly as its own ``GetAgent`` would;
the peer service answers it with the node's ``describe`` callable, not
through the :class:`PeerHandler`).

:class:`PeerClient` is what a node calls to reach another node (delegation,
following, cancelling at the owner, a standby's relays to the coordinator,
the liveness probe); :class:`PeerHandler` is what a node serves to the
others. The gRPC implementation (:mod:`praxis_grpc.peers.grpc` and
:mod:`praxis_grpc.peers.service`) and the in-memory one
(:mod:`praxis_grpc.testing.memory_peers`) connect the two.

Error contract of every :class:`PeerClient` call:
    - the peer answered with a domain error: that error, of the same class
      the peer raised (:class:`~praxis_grpc.errors.NotFound`,
      :class:`~praxis_grpc.errors.Unavailable` with its coordinator hint...);
    - the peer did not answer: :class:`PeerLost`, whose ``sent`` says whether
      the request may have reached it (False: it certainly did not: the
      connection was refused or the link is down, so the caller may send it
      elsewhere);
    - the call's ``call_timeout`` passed: :class:`~praxis_grpc.errors.DeadlineExceeded`
      (the request may have been acted on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.errors import Unavailable
from praxis_grpc.tasks.model import Submission, Task, TaskState

__all__ = [
    "Accepted",
    "Dispatch",
    "PeerClient",
    "PeerHandler",
    "PeerLost",
    "TaskQuery",
]


class Accepted(NamedTuple):
    """A task as the node that accepted it holds it."""

    task: Task
    deduplicated: bool


@dataclass(frozen=True)
class Dispatch:
    """A task sent to the agent that is to run it (its owner).

    Attributes:
        task_id: Chosen by the entry node; the owner dedups on it.
        submission: What the client asked for.
        origin_agent_id: The agent that accepted it from its client (or an
            active-passive cluster's origin); scopes the idempotency key.
        fencing_token: Active-passive: the sending coordinator's term (0 in
            active-active mode).
        prior_attempts: Starts already made on other agents.
        wait: Answer only once the task is terminal.
    """

    task_id: str
    submission: Submission
    origin_agent_id: str
    fencing_token: int = 0
    prior_attempts: int = 0
    wait: bool = False


@dataclass(frozen=True)
class TaskQuery:
    """A listing of tasks (see ``TaskEngine.list``)."""

    states: Collection[TaskState] = field(default=())
    tool: str = ""
    limit: int = 100
    page_token: str = ""


class PeerLost(Unavailable):
    """The peer at ``address`` did not answer.

    ``sent`` is False when the request certainly never reached it (the
    connection was refused, the link is down): sending it elsewhere cannot
    run anything twice. True when it may have (the connection broke, or the
    channel was closed under the call because the peer left the mesh).
    """

    def __init__(self, message: str, address: str, *, sent: bool) -> None:
        super().__init__(message)
        self.address = address
        self.sent = sent


class WrongPeer(PeerLost):
    """The server at ``address`` proved to be another member than the agent dialed.

    With ``cluster`` set a member checks the peer listener's certificate
    against the agent id the address was resolved for; a certificate of
    another member fails the TLS handshake, so the request never left
    (``sent`` is False).
    """

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message, address, sent=False)


class PeerClient(Protocol):
    """Calls from this node to another, which ``address`` names (a gRPC
    ``host:port`` from its card). Used on the node's event loop; every
    method may be called concurrently, for any number of peers.

    A call raises as the module docstring says; none blocks the loop. The
    streams (:meth:`follow`, :meth:`relay_watch`) end after the task's
    terminal state; closing one early (``aclose``) ends the call.
    Implementations keep at most one connection per peer and may multiplex
    every call to it over it (the gRPC one uses one HTTP/2 channel per peer).
    """

    async def dispatch(
        self, address: str, dispatch: Dispatch, *, call_timeout: float | None
    ) -> Accepted:
        """Hand a task to its owner at ``address``; see ``PeerService.Dispatch``."""
        ...

    def follow(self, address: str, task_id: str) -> AsyncIterator[Task]:
        """The owner's own states of the task, then each change until terminal.
        NotFound: the task does not run there."""
        ...

    async def cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        """Cancel the task at its owner. NotFound: it does not run there."""
        ...

    async def relay_submit(
        self,
        address: str,
        submission: Submission,
        *,
        task_id: str,
        wait: bool,
        call_timeout: float | None,
    ) -> Accepted:
        """Submit a client's task at the coordinator at ``address``, which
        answers Unavailable (naming the coordinator) if it is not one."""
        ...

    async def relay_get(self, address: str, task_id: str, *, call_timeout: float | None) -> Task:
        """GetTask at the coordinator."""
        ...

    async def relay_list(
        self, address: str, query: TaskQuery, *, call_timeout: float | None
    ) -> tuple[Sequence[Task], str]:
        """ListTasks at the coordinator: a page and the next page token."""
        ...

    async def relay_cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        """CancelTask at the coordinator."""
        ...

    def relay_watch(self, address: str, task_id: str) -> AsyncIterator[Task]:
        """WatchTask at the coordinator."""
        ...

    async def describe(self, address: str, *, call_timeout: float | None) -> Agent:
        """The node at ``address`` as its own ``AgentService.GetAgent`` describes
        it; carried by every transport (an agent behind NAT included)."""
        ...

    async def wait_gone(self, address: str) -> str:
        """Return evidence once the process serving at ``address`` is certainly
        gone (not merely unreachable: a partition is no evidence); until then
        keep watching. Cancel to stop."""
        ...

    def discard(self, address: str) -> None:
        """The peer left the mesh: drop its connection; calls in flight to it
        raise :class:`PeerLost` (``sent=True``). Later calls reconnect."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class PeerHandler(Protocol):
    """What a node serves to the others (the domain behind ``PeerService``).

    Every method raises :class:`~praxis_grpc.errors.PraxisError` for a
    refusal, which reaches the calling node as the same error.
    """

    async def dispatch(self, dispatch: Dispatch) -> Accepted:
        """Run a dispatched task here (fenced in active-passive mode) or refuse it."""
        ...

    def follow(self, task_id: str) -> AsyncIterator[Task]:
        """This agent's own execution of the task; NotFound if it runs elsewhere."""
        ...

    async def cancel(self, task_id: str, reason: str) -> Task:
        """Cancel this agent's own execution of the task; NotFound if it runs elsewhere."""
        ...

    async def relay_submit(
        self, submission: Submission, *, task_id: str, wait: bool, time_remaining: float | None
    ) -> Accepted:
        """A standby's client submission; Unavailable unless this node coordinates."""
        ...

    async def relay_get(self, task_id: str) -> Task:
        """A standby's client GetTask."""
        ...

    async def relay_list(self, query: TaskQuery) -> tuple[Sequence[Task], str]:
        """A standby's client ListTasks (the cluster's queue)."""
        ...

    async def relay_cancel(self, task_id: str, reason: str) -> Task:
        """A standby's client CancelTask."""
        ...

    def relay_watch(self, task_id: str) -> AsyncIterator[Task]:
        """A standby's client WatchTask."""
        ...
