"""A :class:`~praxis_grpc.peers.base.PeerClient` that carries each call over
the transport its address names.

How to reach an agent is a property of its card
(:attr:`~praxis_grpc.cards.AgentCard.peer_address`): a gRPC ``host:port``
goes to the gRPC client, a libp2p multiaddr (``/...``: an agent behind NAT,
reached through a relay) to the libp2p one. The router and followers see one
client and treat every agent alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from praxis_grpc._gen.praxis.v1.agent_service_pb2 import Agent
from praxis_grpc.peers.base import Accepted, Dispatch, PeerClient, TaskQuery
from praxis_grpc.tasks.model import Submission, Task

__all__ = ["ByAddress", "is_libp2p_address"]


def is_libp2p_address(address: str) -> bool:
    """True for a libp2p multiaddr (a gRPC address is ``host:port``)."""
    return address.startswith("/")


class ByAddress:
    """Calls ``libp2p`` for multiaddrs and ``grpc`` for everything else."""

    def __init__(self, grpc: PeerClient, libp2p: PeerClient) -> None:
        self._grpc = grpc
        self._libp2p = libp2p

    def _for(self, address: str) -> PeerClient:
        return self._libp2p if is_libp2p_address(address) else self._grpc

    async def dispatch(
        self, address: str, dispatch: Dispatch, *, call_timeout: float | None
    ) -> Accepted:
        return await self._for(address).dispatch(address, dispatch, call_timeout=call_timeout)

    def follow(self, address: str, task_id: str) -> AsyncIterator[Task]:
        return self._for(address).follow(address, task_id)

    async def cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        return await self._for(address).cancel(address, task_id, reason, call_timeout=call_timeout)

    async def relay_submit(
        self,
        address: str,
        submission: Submission,
        *,
        task_id: str,
        wait: bool,
        call_timeout: float | None,
    ) -> Accepted:
        return await self._for(address).relay_submit(
            address, submission, task_id=task_id, wait=wait, call_timeout=call_timeout
        )

    async def relay_get(self, address: str, task_id: str, *, call_timeout: float | None) -> Task:
        return await self._for(address).relay_get(address, task_id, call_timeout=call_timeout)

    async def relay_list(
        self, address: str, query: TaskQuery, *, call_timeout: float | None
    ) -> tuple[Sequence[Task], str]:
        return await self._for(address).relay_list(address, query, call_timeout=call_timeout)

    async def relay_cancel(
        self, address: str, task_id: str, reason: str, *, call_timeout: float | None
    ) -> Task:
        return await self._for(address).relay_cancel(
            address, task_id, reason, call_timeout=call_timeout
        )

    def relay_watch(self, address: str, task_id: str) -> AsyncIterator[Task]:
        return self._for(address).relay_watch(address, task_id)

    async def describe(self, address: str, *, call_timeout: float | None) -> Agent:
        return await self._for(address).describe(address, call_timeout=call_timeout)

    async def wait_gone(self, address: str) -> str:
        return await self._for(address).wait_gone(address)

    def discard(self, address: str) -> None:
        self._for(address).discard(address)

    async def aclose(self) -> None:
        await self._grpc.aclose()
        await self._libp2p.aclose()
