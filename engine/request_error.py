"""The typed error of a request the engine cannot take: which field, and why.

Servers map it to their own terms (an HTTP 400 naming `param`); nothing parses the message.
"""

from __future__ import annotations


class RequestError(ValueError):
    """A request refused before it runs. `param` names the field at fault (`prompt`,
    `max_tokens`, `block_length`, ...), or is None when no single field is."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message

    def __reduce__(self) -> tuple[type[RequestError], tuple[str | None, str]]:
        return RequestError, (self.param, self.message)  # picklable across processes
