"""Why the engine could not answer a request it had accepted, as a code that carries its HTTP
status and OpenAI error type: the cores send the code across the socket, the front maps it to
a response, and no one reads a message's wording to decide.
"""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    """A failure's code; its value is what crosses the socket between a core and the front."""

    BAD_INPUT = "bad_input"  # the model refused this request's input (the others in its batch run)
    QUEUE_FULL = "queue_full"  # every worker is busy and the queue is full: retry shortly
    TIMEOUT = "timeout"  # past the engine's per-request timeout, queued or running
    MODEL_ERROR = "model_error"  # the model raised while running the batch that held it
    WORKER_DIED = "worker_died"  # its worker exited after it had sent tokens: a retry may pass
    SHUTTING_DOWN = "shutting_down"  # the engine is stopping

    @property
    def status(self) -> int:
        return _HTTP[self][0]

    @property
    def kind(self) -> str:
        """The OpenAI error type (`error.type` of the response)."""
        return _HTTP[self][1]

    @property
    def code(self) -> str:
        """The OpenAI error code (`error.code`): OpenAI's own where it has one."""
        return _HTTP[self][2]

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"} if self is Failure.QUEUE_FULL else {}


_HTTP = {
    Failure.BAD_INPUT: (400, "invalid_request_error", "bad_input"),
    Failure.QUEUE_FULL: (429, "rate_limit_error", "rate_limit_exceeded"),
    Failure.TIMEOUT: (504, "server_error", "timeout"),
    Failure.MODEL_ERROR: (500, "server_error", "model_error"),
    Failure.WORKER_DIED: (503, "server_error", "worker_died"),
    Failure.SHUTTING_DOWN: (503, "server_error", "shutting_down"),
}


class EngineFailure(Exception):
    """A failure and the message its client reads."""

    def __init__(self, failure: Failure, message: str):
        super().__init__(message)
        self.failure, self.message = failure, message
