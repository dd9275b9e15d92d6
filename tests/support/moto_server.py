"""moto's server in a subprocess, one per test session (per pytest-xdist worker).

Served single-threaded on purpose: moto's DynamoDB code reads, checks and writes without
a lock, so concurrent requests in its default threaded server can both win one conditional
write (../shared/design/dynamodb-under-test.md). One request at a time makes every condition exact.
It also answers a repeated transaction token as DynamoDB does (``IdempotentTransactions``),
and runs transactions without copying whole tables (``_transactions_without_table_copies``).

Run as ``python -m tests.support.moto_server --port N``; tests use ``running_moto_server``.
Set ``ORCH_TEST_DYNAMODB_ENDPOINT`` to use an endpoint that is already running instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

ENDPOINT_ENV = "ORCH_TEST_DYNAMODB_ENDPOINT"
_HOST = "127.0.0.1"
# moto answers after about 0.6 s here; a slow CI machine gets a generous margin.
_START_DEADLINE_S = 30.0
_STOP_TIMEOUT_S = 10.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_moto_server() -> Iterator[str]:
    """Yield the endpoint URL of a moto server that lives as long as the context.

    This process binds the listening socket and hands it to the child: the port is known
    and held from the start (no race for a free port), and a request sent before the
    server is up waits in the socket's backlog instead of being refused, so readiness is
    one blocking request, not a polling loop.
    """
    configured = os.environ.get(ENDPOINT_ENV)
    if configured:
        yield configured
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((_HOST, 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    endpoint = f"http://{_HOST}:{port}"
    # A file, not a pipe: nobody drains a pipe while tests run, and a full one would
    # block the server mid-request.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", "--fd", str(listener.fileno())],
            cwd=_REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
        listener.close()  # the child holds it now
        try:
            _wait_until_serving(endpoint)
        except OSError as error:
            _stop(process)
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"moto server did not start ({error}):\n{output}") from error
        try:
            yield endpoint
        finally:
            _stop(process)


def _wait_until_serving(endpoint: str) -> None:
    """Block until the server answers one request (it queues in the backlog until then)."""
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=_START_DEADLINE_S):
            return
    except urllib.error.HTTPError:
        return  # any HTTP answer means it is serving


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class IdempotentTransactions:
    """WSGI middleware: a TransactWriteItems sent again with the ClientRequestToken of one
    that committed gets the first answer and changes nothing, as DynamoDB does (for ten
    minutes). moto runs it again instead, and the copy fails on the first one's writes.
    Botocore sends a transaction again, token and all, when the answer is late (a busy
    machine, a long queue at this one-request-at-a-time server)."""

    _TARGET = "DynamoDB_20120810.TransactWriteItems"
    _KEPT = 50_000  # answers kept, oldest dropped first: far more than ten minutes' worth

    def __init__(self, app: Any) -> None:
        self._app = app
        # token -> (digest of the request body, status, headers, answer body)
        self._committed: OrderedDict[str, tuple[str, str, list[tuple[str, str]], bytes]] = (
            OrderedDict()
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") != self._TARGET:
            result: Iterable[bytes] = self._app(environ, start_response)
            return result
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        token = json.loads(body or b"{}").get("ClientRequestToken")
        digest = hashlib.sha256(body).hexdigest()
        if token in self._committed:
            seen, status, headers, answer = self._committed[token]
            if seen == digest:
                start_response(status, headers)
                return [answer]
        captured: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.append((status, headers))
            return start_response(status, headers, exc_info)

        answer = b"".join(self._app(environ, capture))
        if token and captured and captured[-1][0].startswith("200"):
            self._committed[token] = (digest, *captured[-1], answer)
            while len(self._committed) > self._KEPT:
                self._committed.popitem(last=False)
        return [answer]


def _transactions_without_table_copies() -> None:
    """moto's TransactWriteItems deep-copies a table for every action on it, to roll back
    should one fail: creating a run of 20 tasks copied Tasks and History 20 times each,
    and every transaction grew slower with the data (4.7 s per run created once 80
    existed). Here the conditions are evaluated first, against the stored items, exactly
    as moto's loop would (one action per item, so no action sees another's write): when
    one fails, the transaction is cancelled with moto's reasons before anything is
    written; when all hold, nothing can fail on a condition and no copy is needed. Any
    other error while checking leaves the transaction to moto's own code, copying each
    table once rather than once per action."""
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import ConditionalCheckFailed, TransactionCanceledException
    from moto.dynamodb.models.table import Table

    deepcopy = copy.deepcopy
    mode: dict[str, Any] = {"copies": None}  # None: copy as usual; a dict: once per table

    class TableCopies:
        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        def deepcopy(self, value: Any, *rest: Any) -> Any:
            copies = mode["copies"]
            if copies is None or not isinstance(value, Table):
                return deepcopy(value, *rest)
            if copies is _NO_COPY:
                return value
            if id(value) not in copies:
                copies[id(value)] = deepcopy(value)
            return copies[id(value)]

    def reasons(backend: Any, actions: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
        found: list[tuple[Any, Any, Any]] = []
        seen: set[tuple[str, str]] = set()
        for action in actions:
            (_, op), *more = action.items()
            if more:
                raise ValueError("one operation per action")  # moto's own error follows
            table = backend.get_table(op["TableName"])
            if "Key" in op:
                key = op["Key"]
            else:
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            item = (str(op["TableName"]), str(dict(sorted(key.items()))))
            if item in seen:
                raise ValueError("two actions on one item")  # moto's own error follows
            seen.add(item)
            current = backend.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            holds = condition is None or get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current)
            if holds:
                found.append((None, None, None))
                continue
            wants_old = op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
            old = current.to_json()["Attributes"] if wants_old and current else None
            failed = ConditionalCheckFailed(item=old)
            found.append(("ConditionalCheckFailed", str(failed.message), old))
        return found

    transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        try:
            checked = reasons(self, transact_items) if len(transact_items) <= 100 else None
        except Exception:  # moto's own code says what is wrong with the request
            checked = None
        if checked is not None and any(code is not None for code, _, _ in checked):
            raise TransactionCanceledException(checked)
        mode["copies"] = {} if checked is None else _NO_COPY
        try:
            transact(self, transact_items)
        finally:
            mode["copies"] = None  # one request at a time: the server is single-threaded

    setattr(models, "copy", TableCopies())  # noqa: B010 (the name moto's code reads)
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


_NO_COPY: dict[int, Any] = {}


def main(argv: list[str] | None = None) -> None:
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="moto server, one request at a time")
    parser.add_argument("--host", default=_HOST)
    listen = parser.add_mutually_exclusive_group(required=True)
    listen.add_argument("--port", type=int, help="bind this port")
    listen.add_argument("--fd", type=int, help="serve on this inherited listening socket")
    args = parser.parse_args(argv)
    # werkzeug logs every request; thousands of lines per session help nobody.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _transactions_without_table_copies()
    app = IdempotentTransactions(DomainDispatcherApplication(create_backend_app))
    # Single-threaded, werkzeug also speaks HTTP/1.0: every request closes its connection,
    # so an idle keep-alive connection of one client cannot hold the only thread.
    server = make_server(host=args.host, port=args.port or 0, app=app, threaded=False, fd=args.fd)
    # terminate() is the normal way to stop: exit status 0, at once. Nothing of moto's
    # state outlives the process, and tearing down its heap (every table and item of the
    # session) on a normal exit takes seconds.
    signal.signal(signal.SIGTERM, lambda *_: _exit_now(server))
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _exit_now(server: Any) -> NoReturn:
    server.server_close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
