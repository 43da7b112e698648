"""The gRPC :class:`~praxis_grpc.peers.base.PeerClient`: ``praxis.peer.v1.PeerService``
over one pooled channel per peer.

gRPC channels multiplex any number of calls over one HTTP/2 connection and
reconnect by themselves, so a node keeps one channel per peer address and
closes it when the peer leaves the mesh (which also ends the calls on it:
the signal followers use to notice a lost owner). A standby's relays to the
coordinator use a second channel to it that pings every second, idle or not,
so a coordinator cut off by a partition is noticed in about two seconds.

Dispatches and follows travel on one long-lived ``Session`` stream per
peer (:mod:`praxis_grpc.peers.session`), multiplexed by call id and batched
under load; a peer that answers UNIMPLEMENTED is called with the unary
``Dispatch`` and server-stream ``Follow`` instead (remembered until it
leaves the mesh). Cancels and relays stay unary.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2 as pb
from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2_grpc as pb_grpc
from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.aio import cancelling
from praxis_grpc.api.message_size import ENVELOPE_BYTES
from praxis_grpc.certs import peer_dns_name
from praxis_grpc.metrics import Metrics
from praxis_grpc.peers.base import Accepted, Dispatch, TaskQuery, WrongPeer
from praxis_grpc.peers.liveness import wait_gone
from praxis_grpc.peers.session import PeerSession, Unsupported, channel_closed, peer_error
from praxis_grpc.tasks.model import Submission, Task
from praxis_grpc.wire import task_from_proto
from praxis_grpc.wire_input import submission_fields

__all__ = ["GrpcPeerClient", "PeerTarget", "dispatch_request"]

log = logging.getLogger(__name__)
_Call = TypeVar("_Call", bound=Callable[..., Any])


@dataclass(frozen=True)
class PeerTarget:
    """Where an agent's peer service listens, and which agent must answer there.

    Attributes:
        address: ``host:port`` to dial.
        peer_id: The agent id (libp2p peer id) the server certificate must
            name, or None when no card names the address (then TLS checks the
            dialed host against the certificate's SANs, as for any server).
    """

    address: str
    peer_id: str | None = None


class _Pool:
    """Channels (and PeerService stubs) keyed by ``host:port``. One loop.

    With ``credentials`` a channel is TLS to ``resolve(address)`` (a member's
    peer listener) instead of plaintext to ``address``, and accepts only a
    server certificate that names the agent resolved for it.
    """

    def __init__(
        self,
        options: list[tuple[str, Any]],
        credentials: grpc.ChannelCredentials | None = None,
        resolve: Callable[[str], PeerTarget] = PeerTarget,
    ) -> None:
        self._options = options
        self._credentials = credentials
        self._resolve = resolve
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.PeerServiceAsyncStub] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def stub(self, address: str) -> pb_grpc.PeerServiceAsyncStub:
        stub = self._stubs.get(address)
        if stub is None:
            if self._credentials is None:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            else:
                target = self._resolve(address)
                options = self._options
                if target.peer_id is not None:
                    # TLS checks the certificate's DNS SANs against this name
                    # instead of the dialed host (see certs.peer_dns_name).
                    expected = peer_dns_name(target.peer_id)
                    options = [*options, ("grpc.ssl_target_name_override", expected)]
                channel = grpc.aio.secure_channel(target.address, self._credentials, options)
            self._channels[address] = channel
            stub = pb_grpc.PeerServiceStub(channel)
            self._stubs[address] = stub
        return stub

    def __contains__(self, address: object) -> bool:
        return address in self._channels

    def discard(self, address: str) -> None:
        channel = self._channels.pop(address, None)
        self._stubs.pop(address, None)
        if channel is not None:
            closing = asyncio.get_running_loop().create_task(channel.close(grace=None))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close(grace=None)
        if self._closing:
            await asyncio.wait(set(self._closing))


def _options(
    max_message_bytes: int, keepalive_time: float, keepalive_timeout: float, idle: bool
) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", round(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", int(idle)),
        # Keep pinging while a call waits quietly for its answer.
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect promptly to a peer that restarts on the same address.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def _noticed(method: _Call) -> _Call:
    """``method`` (a call to the peer at its ``address`` argument) with a
    :class:`WrongPeer` counted and logged (``GrpcPeerClient._wrong_peer``)."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streamed(
            self: GrpcPeerClient, address: str, *args: Any, **kwargs: Any
        ) -> AsyncIterator[Any]:
            stream = method(self, address, *args, **kwargs)
            try:
                async for item in stream:
                    yield item
            except WrongPeer:
                self._wrong_peer(address)
                raise
            finally:
                await stream.aclose()  # closing this one early ends the call now

        return streamed  # type: ignore[return-value]

    @functools.wraps(method)
    async def called(self: GrpcPeerClient, address: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, address, *args, **kwargs)
        except WrongPeer:
            self._wrong_peer(address)
            raise

    return called  # type: ignore[return-value]


class GrpcPeerClient:
    """:class:`~praxis_grpc.peers.base.PeerClient` over ``praxis.peer.v1.PeerService``.

    Args:
        agent_id: This node's agent id (named in relays).
        max_message_bytes: The largest message sent or received.
        keepalive_time, keepalive_timeout: Ping a peer's connection this
            often and close it when a ping goes unanswered this long: a dead
            peer is noticed on an idle follow stream within ~15 s by default,
            even before its card is removed. Relays ping every second. The
            server must allow it (api/server_limits.py).
        credentials: With ``cluster`` set: mutual TLS with this node's certificate.
        resolve: With ``credentials``: the peer listener of the agent whose gRPC
            address is given, and that agent's id (addresses come from cards and
            leadership). A call whose server proves to be another member fails
            :class:`~praxis_grpc.peers.base.WrongPeer`, counted in
            ``praxis_peer_wrong_identity_total`` and logged once per address.
        metrics: Where the refusals above are counted (none: not counted).
    """

    def __init__(
        self,
        agent_id: str,
        max_message_bytes: int = 4 * 1024 * 1024,
        *,
        keepalive_time: float = 10.0,
        keepalive_timeout: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        resolve: Callable[[str], PeerTarget] = PeerTarget,
        metrics: Metrics | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._metrics = metrics
        self._wrong_logged: set[str] = set()
        self._pool = _Pool(
            _options(max_message_bytes, keepalive_time, keepalive_timeout, False),
            credentials,
            resolve,
        )
        self._relays = _Pool(_options(max_message_bytes, 1.0, 1.0, True), credentials, resolve)
        self._sessions: dict[str, PeerSession] = {}
        self._unary_only: set[str] = set()
        self._max_batch_bytes = max_message_bytes - ENVELOPE_BYTES

    def __contains__(self, address: object) -> bool:
        """True while a channel to ``address`` is open."""
        return address in self._pool or address in self._relays

    @_noticed
    async def dispatch(
        self, address: str, dispatch: Dispatch, *, call_timeout: float | None
    ) -> Accepted:
        request = dispatch_request(dispatch)
        response: pb.DispatchResponse | None = None
        if address not in self._unary_only:
            try:
                response = await self._session(address).dispatch(request, call_timeout)
            except Unsupported:
                self._unary_only.add(address)
        if response is None:
            call = self._pool.stub(address).Dispatch(request, timeout=call_timeout)
            response = await _unary(call, address)
        # The owner holds the arguments sent (it dedups on the request's
        # fingerprint): not decoded again.
        task = task_from_proto(response.task, dispatch.submission.arguments)
        return Accepted(task, response.deduplicated)

    @_noticed
    async def follow(self, address: str, task_id: str) -> AsyncIterator[Task]:
        request = pb.FollowRequest(task_id=task_id)
        if address not in self._unary_only:
            stream = self._session(address).follow(request)
            try:
                async for message in stream:
                    yield task_from_proto(message.task)
                return
            except Unsupported:  # raised before the first state
                self._unary_only.add(address)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        call = self._pool.stub(address).Follow(request)
        async for message in _stream(call, address):
            yield task_from_proto(message.task)

    def _wrong_peer(self, address: str) -> None:
        if self._metrics is not None:
            self._metrics.peer_wrong_identity_total.inc()
        if address not in self._wrong_logged:
            self._wrong_logged.add(address)
            log.warning(
                "refused to call %s: its certificate does not name the agent whose card gives "
                "that address (another member holds it?)",
                address,
            )

    def _session(self, address: str) -> PeerSession:
        """The open session to ``address``, opened (again) if it is not."""
        session = self._sessions.get(address)
        if session is None or session.broken:
            session = PeerSession(self._pool.stub(address), address, self._max_batch_bytes)
            self._sessions[address] = session
        return session

    @_noticed
    async def cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        request = pb.CancelRequest(task_id=task_id, reason=reason)
        response = await _unary(
            self._pool.stub(address).Cancel(request, timeout=call_timeout), address
        )
        return task_from_proto(response.task)

    @_noticed
    async def relay_submit(
        self,
        address: str,
        submission: Submission,
        *,
        task_id: str,
        wait: bool,
        call_timeout: float | None,
    ) -> Accepted:
        request = pb.RelaySubmitRequest(
            relayed_by=self._agent_id,
            spec=pb.TaskSpec(**submission_fields(submission)),
            task_id=task_id,
            wait=wait,
        )
        call = self._relays.stub(address).RelaySubmit(request, timeout=call_timeout)
        response = await _unary(call, address)
        return Accepted(task_from_proto(response.task), response.deduplicated)

    @_noticed
    async def relay_get(self, address: str, task_id: str, *, call_timeout: float | None) -> Task:
        request = pb.RelayGetRequest(relayed_by=self._agent_id, task_id=task_id)
        call = self._relays.stub(address).RelayGet(request, timeout=call_timeout)
        return task_from_proto((await _unary(call, address)).task)

    @_noticed
    async def relay_list(
        self, address: str, query: TaskQuery, *, call_timeout: float | None
    ) -> tuple[Sequence[Task], str]:
        request = pb.RelayListRequest(
            relayed_by=self._agent_id,
            states=[state.value for state in query.states],  # type: ignore[misc]  # same numbers
            tool=query.tool,
            page_size=query.limit,
            page_token=query.page_token,
        )
        call = self._relays.stub(address).RelayList(request, timeout=call_timeout)
        response = await _unary(call, address)
        return [task_from_proto(task) for task in response.tasks], response.next_page_token

    @_noticed
    async def relay_cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        request = pb.RelayCancelRequest(relayed_by=self._agent_id, task_id=task_id, reason=reason)
        call = self._relays.stub(address).RelayCancel(request, timeout=call_timeout)
        return task_from_proto((await _unary(call, address)).task)

    @_noticed
    async def relay_watch(self, address: str, task_id: str) -> AsyncIterator[Task]:
        request = pb.RelayWatchRequest(relayed_by=self._agent_id, task_id=task_id)
        call = self._relays.stub(address).RelayWatch(request)
        async for message in _stream(call, address):
            yield task_from_proto(message.task)

    async def describe(self, address: str, *, call_timeout: float | None) -> Agent:
        call = self._pool.stub(address).Describe(pb.DescribeRequest(), timeout=call_timeout)
        response: pb.DescribeResponse = await _unary(call, address)
        return response.agent

    async def wait_gone(self, address: str) -> str:
        return await wait_gone(address)

    def discard(self, address: str) -> None:
        session = self._sessions.pop(address, None)
        if session is not None:
            session.close(lambda sent: channel_closed(address, sent=sent))
        self._unary_only.discard(address)
        self._wrong_logged.discard(address)
        self._pool.discard(address)
        self._relays.discard(address)

    async def aclose(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.aclose()
        await self._pool.aclose()
        await self._relays.aclose()


async def _unary(call: Any, address: str) -> Any:
    """The response of ``call``, or the error the peer module's contract names."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise peer_error(exc, address) from None
    except asyncio.CancelledError:
        if cancelling():
            raise
        # grpc.aio cancels the calls of a channel that is closed (the peer's
        # card was removed): the call broke, its caller was not cancelled.
        raise channel_closed(address) from None


async def _stream(call: Any, address: str) -> AsyncIterator[Any]:
    """The messages of a server stream, failing as :func:`_unary` does."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise peer_error(exc, address) from None
    except asyncio.CancelledError:
        if cancelling():
            raise
        raise channel_closed(address) from None
    finally:
        call.cancel()


def dispatch_request(dispatch: Dispatch) -> pb.DispatchRequest:
    """The peer service's message for ``dispatch`` (every transport sends it)."""
    return pb.DispatchRequest(
        task_id=dispatch.task_id,
        spec=pb.TaskSpec(**submission_fields(dispatch.submission)),
        origin_agent_id=dispatch.origin_agent_id,
        fencing_token=dispatch.fencing_token,
        prior_attempts=dispatch.prior_attempts,
        wait=dispatch.wait,
    )
