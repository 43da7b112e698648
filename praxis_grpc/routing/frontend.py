"""What ``TaskService`` (and a coordinator's answers to relayed calls) call:
the node's task front door, one protocol with two implementations.

- :class:`~praxis_grpc.routing.dispatcher.TaskDispatcher` places and serves
  tasks here (active-active, and an active-passive coordinator);
- :class:`~praxis_grpc.ha.relay.StandbyRelay` wraps it on an active-passive
  node: while the node stands by, each call is relayed to the coordinator.

``node`` chooses which one to build from the config (``ha.mode``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from typing import Protocol

from praxis_grpc.tasks.model import Submission, Task, TaskState

__all__ = ["TaskFrontend"]


class TaskFrontend(Protocol):
    """Route each submission, act on any task wherever it runs."""

    async def submit(
        self,
        submission: Submission,
        *,
        wait: bool = False,
        time_remaining: float | None = None,
        task_id: str | None = None,
        forwarded: bool = False,
    ) -> tuple[Task, bool]:
        """Accept ``submission`` on the best capable agent; returns the task
        (terminal when ``wait``) and whether it was deduplicated.

        ``forwarded``: relayed here by a standby; it is answered here, never
        relayed again (Unavailable naming the coordinator instead).

        Raises:
            InvalidArgument, AlreadyExists: the request is at fault.
            FailedPrecondition: no capable agent, or this node is draining.
            ResourceExhausted: every capable agent is saturated.
            Unavailable: no capable agent (or no coordinator) could be reached.
            DeadlineExceeded: ``wait`` and the deadline passed; the task goes on.
        """
        ...

    async def get(self, task_id: str) -> Task:
        """The task, as last reported by its owner. Raises NotFound."""
        ...

    async def list(
        self,
        *,
        states: Collection[TaskState] = (),
        tool: str = "",
        limit: int = 100,
        page_token: str = "",
        local_only: bool = False,
    ) -> tuple[Sequence[Task], str]:
        """Tasks newest first and the next page's token ("" after the last)."""
        ...

    def page_token_after(self, task: Task) -> str:
        """The ``page_token`` continuing right after ``task`` (a task of a
        page :meth:`list` returned), for a page cut short."""
        ...

    def watch(self, task_id: str) -> AsyncIterator[Task]:
        """The task's states as they happen, wherever it runs. Raises NotFound."""
        ...

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel the task on whichever agent owns it. Raises NotFound."""
        ...
