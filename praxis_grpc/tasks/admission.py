"""What this node accepts to run: its limits, and the checks of a submission.

Pure: no I/O, no clock. :class:`SubmissionRules` answers from the tool
registry, the node's tags and its :class:`EngineLimits` only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from praxis_grpc.errors import FailedPrecondition, InvalidArgument, NotFound, quote, quote_all
from praxis_grpc.tasks.model import Submission
from praxis_grpc.tools.registry import ToolRegistry

__all__ = ["EngineLimits", "EngineLoad", "SubmissionRules", "check_task_id"]


@dataclass(frozen=True)
class EngineLimits:
    """Admission and execution limits (from ``tasks`` in the config)."""

    max_concurrency: int = 8
    queue_limit: int = 1000
    default_timeout: float = 60.0
    max_timeout: float = 3600.0
    # A result's size as a protobuf Struct (see tasks/results.py).
    max_result_bytes: int = 1024 * 1024
    max_attempts: int = 3


@dataclass(frozen=True)
class EngineLoad:
    """The executor's load right now."""

    in_flight: int
    queued: int
    capacity: int
    queue_limit: int


class SubmissionRules:
    """The checks a submission passes before it is stored here."""

    def __init__(
        self, tools: ToolRegistry, limits: EngineLimits, agent_tags: frozenset[str]
    ) -> None:
        self._tools = tools
        self._limits = limits
        self._agent_tags = agent_tags

    def validate(self, submission: Submission) -> float:
        """Check ``submission`` against the tools, tags and limits here.

        Returns:
            The timeout the task gets: its own, or the default for its tool.

        Raises:
            InvalidArgument: no tool, arguments the tool refuses, or a timeout
                that is not positive or exceeds ``max_timeout`` (the message
                names the field).
            FailedPrecondition: the tool is not offered here or a required tag
                is missing ("no capable agent").
        """
        if not submission.tool:
            raise InvalidArgument("tool", "is required")
        # The size of the arguments is checked on the wire, where they arrive
        # (api.task_service.submission_from_proto): one limit, in protobuf bytes.
        try:
            tool = self._tools.validate(submission.tool, submission.arguments)
        except NotFound as exc:
            # Not "no such task": this node, asked to run it, cannot (README).
            raise FailedPrecondition(f"no capable agent: {exc.message}") from None
        missing = set(submission.tags) - self._agent_tags
        if missing:
            raise FailedPrecondition(
                f"no capable agent: tags {quote_all(sorted(missing))} are required but this "
                f"node has {sorted(self._agent_tags)}"
            )
        if submission.timeout is None:
            return self.default_timeout(tool.spec.name)
        if submission.timeout <= 0:
            raise InvalidArgument("timeout", "must be positive")
        if submission.timeout > self._limits.max_timeout:
            raise InvalidArgument(
                "timeout",
                f"{submission.timeout:g}s exceeds this node's maximum of "
                f"{self._limits.max_timeout:g}s",
            )
        return submission.timeout

    def default_timeout(self, tool: str) -> float:
        """The timeout of a task of ``tool`` whose client set none."""
        own = self._tools.get(tool).spec.default_timeout if tool in self._tools else None
        return min(own or self._limits.default_timeout, self._limits.max_timeout)


def check_task_id(task_id: str | None) -> None:
    """Raise InvalidArgument unless ``task_id`` is None or a canonical lowercase UUID."""
    if task_id is not None and not _canonical_uuid(task_id):
        raise InvalidArgument(
            "task_id",
            f"{quote(task_id)} must be a UUID in canonical (lowercase, hyphenated) form",
        )


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
