"""Domain errors raised by accounts, leases and ingest; routes map them to HTTP answers."""

from __future__ import annotations


class Problem(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Invalid(Problem):
    """The request is malformed or breaks a rule (400); nothing was changed."""


class ConfigInvalid(Invalid):
    """A team config that fails validation; ``errors`` are ``"path: message"`` strings."""

    code = "invalid_config"

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        text = self.errors[0] if len(self.errors) == 1 else "; ".join(self.errors)
        super().__init__(text)


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"


class Forbidden(Problem):
    """A valid credential whose role may not do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(Problem):
    status = 404
    code = "not_found"


class Conflict(Problem):
    status = 409
    code = "conflict"
