"""What a node does for the other nodes: the domain behind ``PeerService``
(:class:`~praxis_grpc.peers.base.PeerHandler`).

As an owner it runs the tasks dispatched to it (fenced first in
active-passive mode), reports its own execution of them and cancels it; as
an active-passive coordinator it answers the calls its standbys relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from praxis_grpc.errors import FailedPrecondition, NotFound, quote
from praxis_grpc.peers.base import Accepted, Dispatch, TaskQuery
from praxis_grpc.routing.frontend import TaskFrontend
from praxis_grpc.tasks.engine import TaskEngine
from praxis_grpc.tasks.model import Submission, Task

__all__ = ["PeerRequests"]


class PeerRequests:
    """Serves other nodes' calls (a :class:`~praxis_grpc.peers.base.PeerHandler`).

    Args:
        engine: Runs the dispatched tasks.
        frontend: Answers relayed client calls (the node's front door).
        admit: Active-passive: the fence
            (:meth:`~praxis_grpc.ha.coordinator.HaController.admit`), which
            refuses (FailedPrecondition) a dispatch not fenced with a current
            term. None in active-active mode, where tokens are not used.
    """

    def __init__(
        self,
        *,
        engine: TaskEngine,
        frontend: TaskFrontend,
        admit: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._frontend = frontend
        self._admit = admit

    async def dispatch(self, dispatch: Dispatch) -> Accepted:
        """Run ``dispatch`` here or refuse it; never routed on. The fence is
        checked before anything is stored or adopted (the request was
        validated by the caller)."""
        if self._admit is not None:
            await self._admit(dispatch.fencing_token)
        target = dispatch.submission.target_agent
        if target and target != self._engine.agent_id:
            raise FailedPrecondition(
                f"target_agent: the task targets agent {target}, not this one"
                f" ({self._engine.agent_id})"
            )
        task, deduplicated = await self._engine.submit(
            dispatch.submission,
            task_id=dispatch.task_id,
            origin_agent_id=dispatch.origin_agent_id,
            prior_attempts=dispatch.prior_attempts,
            dispatched=True,
        )
        if dispatch.wait and not task.terminal:
            task = await self._engine.wait(task.task_id)
        return Accepted(task, deduplicated)

    async def follow(self, task_id: str) -> AsyncIterator[Task]:
        """This agent's own execution of the task. Anything else (no copy, or
        a record kept from when it routed the task) is NotFound, which tells
        the caller to dispatch it again."""
        self._own(task_id)
        async for task in self._engine.watch(task_id):
            yield task

    async def cancel(self, task_id: str, reason: str) -> Task:
        """Cancel this agent's own execution of the task (NotFound otherwise)."""
        self._own(task_id)
        return await self._engine.cancel(task_id, reason)

    async def relay_submit(
        self, submission: Submission, *, task_id: str, wait: bool, time_remaining: float | None
    ) -> Accepted:
        """A standby's client submission: answered here, never relayed again."""
        task, deduplicated = await self._frontend.submit(
            submission, wait=wait, time_remaining=time_remaining, task_id=task_id, forwarded=True
        )
        return Accepted(task, deduplicated)

    async def relay_get(self, task_id: str) -> Task:
        return await self._frontend.get(task_id)

    async def relay_list(self, query: TaskQuery) -> tuple[Sequence[Task], str]:
        return await self._frontend.list(
            states=query.states, tool=query.tool, limit=query.limit, page_token=query.page_token
        )

    async def relay_cancel(self, task_id: str, reason: str) -> Task:
        return await self._frontend.cancel(task_id, reason)

    async def relay_watch(self, task_id: str) -> AsyncIterator[Task]:
        async for task in self._frontend.watch(task_id):
            yield task

    def _own(self, task_id: str) -> None:
        try:
            task = self._engine.get(task_id)
        except NotFound:
            task = None
        if task is None or task.owner_agent_id != self._engine.agent_id:
            raise NotFound(f"task {quote(task_id)} does not run on this agent")
