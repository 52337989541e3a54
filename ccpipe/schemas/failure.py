"""Why a step failed: the reason a ``failed`` event carries (see :class:`ccpipe.schemas.errors.CcpipeError`).

Apart from :mod:`ccpipe.schemas.errors` so that the errors, which every command loads, need no
pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FailureReason(BaseModel):
    """Why a step failed, as carried by every ``failed`` event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str = Field(description="The stage or component that failed (build, sign, submit, …).")
    code: str = Field(description="Stable dotted error code.")
    message: str = Field(description="What went wrong, in one sentence.")
    hint: str = Field(default="", description="What a person can do about it.")
