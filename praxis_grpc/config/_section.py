"""The base of every config section: strict, frozen, unknown keys refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Strict: unknown keys, booleans for numbers, numbers for strings are all refused.

    A new key needs a type that bounds it: ``Port``, ``Duration``/``PositiveDuration``
    (finite, at most a year), ``int`` with ``Field(ge=..., le=...)`` (sizes at most
    ``MAX_BYTES``), ``bool``, ``Literal[...]``, ``Host``/``IpAddress``, ``ConfigPath``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
