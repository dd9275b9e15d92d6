"""Whether this process has been told to stop.

uvicorn tells the application nothing until every open response has ended: a response
that lasts as long as the client wants (an event stream) would hold the shutdown until
its grace period ran out and then be cut. So the stop signal is observed here, where
long-lived responses can see it and end cleanly.
"""

from __future__ import annotations

import threading
from types import FrameType
from typing import Any

stopping = threading.Event()


def watch_uvicorn() -> None:
    """Set ``stopping`` when uvicorn's server is signalled (idempotent; every worker)."""
    import uvicorn

    original: Any = uvicorn.Server.handle_exit
    if getattr(original, "sets_stopping", False):
        return

    def handle_exit(self: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
        stopping.set()
        original(self, sig, frame)

    handle_exit.sets_stopping = True  # type: ignore[attr-defined]
    uvicorn.Server.handle_exit = handle_exit  # type: ignore[method-assign]
