"""One error family for the whole project, with stable codes.

Failure reasons are part of the contract (a ``failed`` event carries one), so they live in
``schemas/`` (the model is :class:`ccpipe.schemas.failure.FailureReason`). This
module imports neither pydantic nor anything of the project: every command loads it.

Every error has a dotted ``code`` that scripts may match on, a factual ``message`` and a
``hint`` that tells a person what to do. The class decides acknowledgement in the stage
runtime: a :class:`TransientError` is retried, any other :class:`CcpipeError` is final.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ccpipe.schemas.failure import FailureReason


class CcpipeError(Exception):
    """A failure a person can act on.

    ``code`` is stable and dotted (``spec.field.missing``); ``message`` says what was wrong;
    ``hint`` says what to do about it.
    """

    code: str = "ccpipe.error"
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if code is not None:
            self.code = code

    def one_line(self) -> str:
        """The message and the hint as one sentence for stderr."""
        if self.hint:
            return f"{self.message.rstrip('.')}: {self.hint}"
        return self.message

    def reason(self, stage: str) -> FailureReason:
        """This error as the reason a ``failed`` event carries."""
        from ccpipe.schemas.failure import FailureReason  # the models load only where a failure is reported

        return FailureReason(stage=stage, code=self.code, message=self.message, hint=self.hint)


class TransientError(CcpipeError):
    """A failure that may pass on its own (network, a busy server): retried, then failed."""

    code = "ccpipe.transient"
    default_hint = "the step is retried automatically; if it keeps failing, check the service it talks to"


class InvalidInput(CcpipeError):
    """Input from outside (a file, an event, a request) does not have the expected shape."""

    code = "ccpipe.input.invalid"


class ConfigurationError(CcpipeError):
    """The configuration or the environment cannot work; refused before anything starts."""

    code = "ccpipe.config.invalid"
