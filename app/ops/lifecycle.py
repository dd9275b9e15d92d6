"""Whether this process has been told to stop.

uvicorn tells the application nothing until every open response has ended: a response
that lasts as long as the client wants (an event stream) would hold the shutdown until
its grace period ran out and then be cut. So the lifespan wraps the stop signals' handlers
(uvicorn's, installed by then) to note the stop first, where long-lived responses see it
and end cleanly; the wrapped handler then does what it always did.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

stopping = threading.Event()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def note_stop_signals() -> Callable[[], None]:
    """Set ``stopping`` on SIGTERM or SIGINT, then call the handler that was there;
    returns what puts those handlers back. Only the main thread may handle signals:
    elsewhere (an embedding test) nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
        int(signum): signal.getsignal(signum) for signum in _STOP_SIGNALS
    }

    def noted(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, noted)

    def restore() -> None:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is noted and handler is not None:
                signal.signal(signum, handler)

    return restore
