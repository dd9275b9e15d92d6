"""The exception the shared HTTP machinery raises; problems.py renders it."""

from __future__ import annotations

from typing import Any


class ProblemException(Exception):
    """An HTTP-level failure (auth, preconditions, cursors, body limits)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.headers = headers or {}
        self.extensions = extensions
