"""Logs: JSON lines, or human-readable lines on a terminal; each carries its request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "console", "json"]

# Set by the request middleware; read by every log line of that request.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# uvicorn's copy of its message with ANSI colour escapes: noise in a file, garbage in JSON.
_DROPPED = {"color_message"}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed in ``extra=``, less what no reader wants."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and key not in _DROPPED and not key.startswith("_")
    }


# One encoder for every line: json.dumps with default= builds a new one per call.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        # A record may name its request itself (logged outside the request's context).
        line.update(_extra_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line)


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(char.isspace() or char in "\"'=" for char in text):
        return json.dumps(text)
    return text


class ConsoleFormatter(logging.Formatter):
    """One line a person reads: local time, level, logger, [request id], message, key=value.

    A traceback, when there is one, follows on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        extra = _extra_fields(record)
        request_id = str(extra.pop("request_id", request_id_var.get()))
        moment = datetime.fromtimestamp(record.created).astimezone()
        parts = [
            moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}",
            f"{record.levelname:<7}",
            record.name,
        ]
        if request_id != "-":
            parts.append(f"[{request_id}]")
        parts.append(record.getMessage())
        parts.extend(f"{key}={_console_value(value)}" for key, value in extra.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False


def make_formatter(log_format: LogFormat, stream: TextIO) -> logging.Formatter:
    """``auto``: console lines when ``stream`` is a terminal, JSON lines otherwise."""
    if log_format == "console" or (log_format == "auto" and _isatty(stream)):
        return ConsoleFormatter()
    return JsonFormatter()


def configure_logging(
    level: str, log_format: LogFormat | None = None, stream: TextIO | None = None
) -> None:
    """Log to ``stream`` (stderr) at ``level``, in ``log_format``: unset, ORCH_LOG_FORMAT."""
    if log_format is None:
        from app.settings import Settings

        log_format = Settings().log_format
    stream = sys.stderr if stream is None else stream
    # No line shows the caller's file and line, thread or process: with these off, a
    # record costs no stack walk and no lookups (logging's documented optimisation),
    # which is most of what the access log costs per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format, stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours, without the request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
