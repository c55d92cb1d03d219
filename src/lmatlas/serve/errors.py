"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, with the HTTP
status that OpenAI's clients map to their exceptions (400 BadRequestError, 401
AuthenticationError, 404 NotFoundError, 413, 422 UnprocessableEntityError, 429 RateLimitError
with ``Retry-After``, 500 InternalServerError, 503 while loading or shutting down, 504 past the
request timeout)."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

# The error type OpenAI gives each status.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error", 504: "server_error"}


class ApiError(Exception):
    """A request the server answers with an error: status, one sentence, and where it lies."""

    def __init__(self, status: int, message: str, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def event(self) -> str:
        """The error as a server-sent event, as in a stream (``[DONE]`` follows it)."""
        return f"data: {json.dumps(self.body())}\n\n"


__all__ = ["ApiError"]
