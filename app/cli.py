"""The ``orchestrator`` command: serve, create-tables, dev-tokens."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import signal
import socket
import sys
import tempfile
from pathlib import Path
from types import FrameType

from app.settings import Settings

# Seconds the requests in flight get to finish once SIGTERM arrived; then they are cancelled.
# Below the 30 s an orchestrator (Kubernetes, ECS, systemd) waits before it sends SIGKILL.
GRACEFUL_TIMEOUT_S = 25


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class _CannotListen(Exception):
    """The address to serve on cannot be bound; the message is the line to print."""


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket uvicorn would bind itself, bound here before anything is said."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)  # uvicorn's default backlog
    except OSError as error:
        listener.close()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            raise _CannotListen(
                f"orchestrator: {address} is in use (another orchestrator serve?): stop it, "
                f"or choose another port with ORCH_PORT={port + 1 if port else 8001} make run"
            ) from error
        raise _CannotListen(
            f"orchestrator: cannot listen on {address}: {error.strerror or error}"
        ) from error
    return listener


def _keep_cursor_secret(path: Path) -> bool:
    """Make a file holding a random cursor-signing key (mode 0600), unless one exists.

    Written aside and linked into place, so a replica starting at the same time reads
    either no file or the whole key, and the first one made is the one every process uses.
    Returns whether this call made it.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        os.link(draft, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(draft)
    return True


def _serve(settings: Settings, fd: int | None, graceful_timeout_s: int, workers: int = 1) -> int:
    """Serve until SIGTERM or SIGINT, then stop gracefully and exit with status 0.

    The listening socket is bound first: when the port is taken, one line on stderr says so
    and the exit status is 2, before any banner or file. On the signal uvicorn closes the
    listening socket (new connections are refused), lets the requests in flight finish (at
    most ``graceful_timeout_s``), runs the lifespan's shutdown (housekeeping stops, the
    store closes), and then raises the signal again for the handler it found installed:
    ``_stopped`` makes that a clean exit rather than a death by signal. A signal before
    uvicorn took over stops the process the same way.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)

    # systemd socket activation, or a parent (the tests) that bound the port: served as
    # given, not duplicated (uvicorn --fd keeps a duplicate open, which would go on
    # accepting connections into its backlog while the server drains).
    if fd is not None:
        listener = socket.socket(fileno=fd)
    else:
        try:
            listener = _listen(settings.host, settings.port)
        except _CannotListen as error:
            print(error, file=sys.stderr)
            return 2
    import uvicorn

    from app.http.auth import write_dev_tokens

    host, port = listener.getsockname()[:2]
    made = write_dev_tokens(settings.tokens_file, settings.tokens_file.with_name("dev-tokens.env"))
    # The embedded store's data outlives the process: so do its cursors, signed with a key
    # kept beside the data rather than one drawn per process (the lifespan reads it).
    made_secret = (
        not settings.cursor_secret
        and settings.store == "sqlite"
        and _keep_cursor_secret(settings.cursor_secret_file)
    )
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(f"Bench Orchestrator on {base}  (store: {settings.store}", end="")
    print(f", {settings.sqlite_path})" if settings.store == "sqlite" else ")")
    print(f"  API docs: {base}/docs")
    dev_tokens = settings.tokens_file.with_name("dev-tokens.env")
    where = f" (one of {dev_tokens})" if dev_tokens.exists() else ""
    print(f"  dashboard: {base}/ui  sign in with a bearer token{where}")
    if made:
        print(f"  made development tokens in {settings.tokens_file}:")
        for name, token in made.items():
            print(f"    {name}={token}")
    if made_secret:
        print(f"  made the key that signs pagination cursors in {settings.cursor_secret_file}")
    env_file = settings.tokens_file.with_name("dev-tokens.env")
    if env_file.exists():
        print(
            f"  authenticate: . {env_file} && "
            f'curl -H "Authorization: Bearer $ADMIN_TOKEN" {base}/v1/benches'
        )
    sys.stdout.flush()
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout_s,
        workers=workers,
    )
    if workers > 1:
        # Worker processes accept on the one socket; on SIGTERM the supervisor passes the
        # signal on and each worker drains as a single server would (docs/operations.md).
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[listener]).run()
        return 0
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def _create_tables(settings: Settings) -> int:
    from app.store.dynamodb.store import DynamoStore
    from app.store.dynamodb.tables import create_tables

    async def run() -> list[str]:
        store = await DynamoStore.open(settings.model_copy(update={"create_tables": False}))
        try:
            return await create_tables(store.client, settings.table_prefix)
        finally:
            await store.close()

    for name in asyncio.run(run()):
        print(f"table ready: {name}")
    return 0


def _dev_tokens(settings: Settings) -> int:
    from app.http.auth import write_dev_tokens

    made = write_dev_tokens(settings.tokens_file, settings.tokens_file.with_name("dev-tokens.env"))
    if made is None:
        print(f"{settings.tokens_file} exists; left as it is")
        return 0
    for name, token in made.items():
        print(f"{name}={token}")
    return 0


def _housekeeping(settings: Settings, once: bool, metrics_port: int | None) -> int:
    import json
    from dataclasses import asdict

    from prometheus_client import start_http_server

    from app.clock import SystemClock
    from app.ops.housekeeping import Housekeeper, run_forever
    from app.ops.metrics import Metrics
    from app.store.factory import open_store

    async def run() -> None:
        store = await open_store(settings)
        try:
            metrics = Metrics()
            if metrics_port is not None:
                # A housekeeping-only process has no API: it serves its own counters.
                metrics.attach_store(store)
                start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
            housekeeper = Housekeeper(store, SystemClock(), settings, metrics)
            if once:
                print(json.dumps(asdict(await housekeeper.run_once())))
            else:
                await run_forever(housekeeper, settings.housekeeping_interval_s or 15.0)
        finally:
            await store.close()

    asyncio.run(run())
    return 0


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from app.feed.cli import ExportOptions, run_export

    return run_export(
        settings,
        ExportOptions(
            sink=args.sink,
            follow=args.follow,
            batch=args.batch,
            name=args.name,
            poll_interval_s=args.poll_interval,
            s3_endpoint_url=args.s3_endpoint_url,
            metrics_port=args.metrics_port,
        ),
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API (settings from ORCH_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--fd", type=int, help="serve on this inherited listening socket instead of host:port"
    )
    serve.add_argument(
        "--graceful-timeout",
        type=int,
        default=GRACEFUL_TIMEOUT_S,
        help="seconds requests in flight get to finish after SIGTERM (default: %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes serving the one port (default: %(default)s; see docs/operations.md)",
    )
    commands.add_parser("create-tables", help="create the DynamoDB tables (idempotent)")
    commands.add_parser("dev-tokens", help="make a development tokens file if none exists")
    chores = commands.add_parser("housekeeping", help="expire leases, time out runs, ...")
    chores.add_argument("--once", action="store_true", help="one pass, print what it did")
    chores.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics (actions) on 127.0.0.1"
    )
    export = commands.add_parser("export", help="copy the change feed to a sink")
    export.add_argument(
        "--sink", required=True, help="file://DIR, s3://BUCKET/PREFIX or postgresql://..."
    )
    export.add_argument("--follow", action="store_true", help="keep exporting new changes")
    export.add_argument("--batch", type=int, default=500, help="events per batch")
    export.add_argument("--name", help="checkpoint name (default: the sink URL)")
    export.add_argument("--poll-interval", type=float, default=1.0, help="seconds, --follow")
    export.add_argument("--s3-endpoint-url", help="S3 endpoint of a local stack (moto)")
    export.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics (lag, events) on 127.0.0.1"
    )
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in ("host", "port") and value is not None
    }
    settings = Settings().model_copy(update=overrides)
    if args.command == "serve":
        return _serve(settings, args.fd, args.graceful_timeout, args.workers)
    if args.command == "create-tables":
        return _create_tables(settings)
    if args.command == "housekeeping":
        return _housekeeping(settings, args.once, args.metrics_port)
    if args.command == "export":
        return _export(settings, args)
    return _dev_tokens(settings)


if __name__ == "__main__":
    raise SystemExit(main())
