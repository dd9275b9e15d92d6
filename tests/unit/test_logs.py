"""Log lines: JSON for machines, one readable line for a terminal, the request id in both."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from app.logs import ConsoleFormatter, JsonFormatter, configure_logging, request_id_var
from app.settings import Settings

ANSI_ESCAPE = "\x1b["


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put back the ones pytest installed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = {name: logging.getLogger(name).handlers[:] for name in ("uvicorn", "uvicorn.error")}
    access_disabled = logging.getLogger("uvicorn.access").disabled
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, kept in uvicorn.items():
            logging.getLogger(name).handlers[:] = kept
        logging.getLogger("uvicorn.access").disabled = access_disabled


def uvicorn_like_record() -> logging.LogRecord:
    """What uvicorn logs: the message, and a copy of it with colour escapes in an extra."""
    return logging.makeLogRecord(
        {
            "name": "uvicorn.error",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "Started server process [%d]",
            "args": (42,),
            "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
        }
    )


def log_through(stream: io.StringIO, log_format: str | None, *, request_id: str = "-") -> str:
    configure_logging("INFO", log_format, stream)  # type: ignore[arg-type]
    token = request_id_var.set(request_id)
    try:
        logging.getLogger("uvicorn.error").handle(uvicorn_like_record())
        logging.getLogger("app.test").info("bench %s booked", "rig-1", extra={"bench_id": "rig-1"})
    finally:
        request_id_var.reset(token)
    return stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("stream_type", [io.StringIO, Terminal])
def test_json_format_is_json_lines_on_any_stream(stream_type: type[io.StringIO]) -> None:
    lines = log_through(stream_type(), "json", request_id="req-7").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["message"] for r in records] == ["Started server process [42]", "bench rig-1 booked"]
    assert {r["request_id"] for r in records} == {"req-7"}
    assert records[1]["bench_id"] == "rig-1" and records[1]["logger"] == "app.test"
    assert {"time", "level", "logger", "message", "request_id"} <= set(records[0])
    assert all("color_message" not in record for record in records)
    assert ANSI_ESCAPE not in "".join(lines)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("stream_type", [io.StringIO, Terminal])
def test_console_format_is_one_readable_line_per_record(stream_type: type[io.StringIO]) -> None:
    lines = log_through(stream_type(), "console", request_id="req-7").splitlines()
    assert len(lines) == 2
    for line in lines:
        with pytest.raises(ValueError):
            json.loads(line)
    started, booked = lines
    moment, rest = started[:23], started[23:]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", moment), started
    assert rest == " INFO    uvicorn.error [req-7] Started server process [42]"
    assert booked.endswith("INFO    app.test [req-7] bench rig-1 booked bench_id=rig-1")
    assert "color_message" not in started and ANSI_ESCAPE not in started


@pytest.mark.usefixtures("restore_logging")
def test_auto_is_json_when_the_stream_is_no_terminal() -> None:
    records = [json.loads(line) for line in log_through(io.StringIO(), "auto").splitlines()]
    assert [r["logger"] for r in records] == ["uvicorn.error", "app.test"]


@pytest.mark.usefixtures("restore_logging")
def test_auto_is_console_on_a_terminal() -> None:
    started, booked = log_through(Terminal(), "auto").splitlines()
    assert " INFO    app.test bench rig-1 booked bench_id=rig-1" in booked
    assert "[-]" not in booked  # no request: no request id shown
    with pytest.raises(ValueError):
        json.loads(started)


@pytest.mark.usefixtures("restore_logging")
def test_an_unset_format_comes_from_orch_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOG_FORMAT", "console")
    assert "app.test bench rig-1 booked" in log_through(io.StringIO(), None).splitlines()[1]
    monkeypatch.setenv("ORCH_LOG_FORMAT", "json")
    assert json.loads(log_through(Terminal(), None).splitlines()[1])["bench_id"] == "rig-1"


def test_the_setting_defaults_to_auto_and_refuses_other_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORCH_LOG_FORMAT", raising=False)
    assert Settings().log_format == "auto"
    monkeypatch.setenv("ORCH_LOG_FORMAT", "pretty")
    with pytest.raises(ValueError, match="log_format"):
        Settings()


def test_a_record_naming_its_request_shows_that_id_in_both_formats() -> None:
    record = logging.makeLogRecord(
        {"name": "app", "levelname": "ERROR", "msg": "late", "request_id": "trace-me-7"}
    )
    assert json.loads(JsonFormatter().format(record))["request_id"] == "trace-me-7"
    line = ConsoleFormatter().format(record)
    assert "app [trace-me-7] late" in line and "request_id=" not in line


def test_console_quotes_values_with_spaces_and_appends_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.makeLogRecord(
            {
                "name": "app",
                "levelname": "ERROR",
                "msg": "failed",
                "exc_info": sys.exc_info(),
                "detail": "two words",
                "count": 3,
            }
        )
    first, *rest = ConsoleFormatter().format(record).splitlines()
    assert first.endswith('ERROR   app failed detail="two words" count=3')
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"
