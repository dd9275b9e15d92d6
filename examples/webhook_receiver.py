"""A small webhook receiver for the Bench Orchestrator, on the standard library alone.

    python examples/webhook_receiver.py --port 9000 --secret whsec_...
    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000

Subscribe it with ``POST /v1/webhooks`` (``{"url": "http://<this host>:9000/", ...}``);
the answer's ``secret`` is what ``--secret`` takes. Each delivery is checked the
Standard Webhooks way (standardwebhooks.com):

- ``webhook-signature`` holds ``v1,<base64 HMAC-SHA256>`` (several, space-separated,
  while a secret is being rotated) of ``<webhook-id>.<webhook-timestamp>.<body>``, keyed
  with the secret's bytes (the base64 after ``whsec_``): none matching is a 401;
- ``webhook-timestamp`` (Unix seconds) more than 5 minutes from now is a 401 (a replay);
- a ``webhook-id`` seen before is answered 204 again and not handled twice (the service
  redelivers until it gets a 2xx, so a lost answer means the same delivery once more).

Then it prints one line per event and answers 204. Replace ``handle`` with your own.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60
MAX_BODY_BYTES = 1024 * 1024


class InvalidSignature(Exception):
    """The delivery is not from the service (or is a replay): answer 401."""


def decode_secret(secret: str) -> bytes:
    """The key of a ``whsec_...`` secret (its base64, decoded)."""
    try:
        return base64.b64decode(secret.strip().removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the secret is whsec_ followed by base64") from exc


def verify(key: bytes, headers: Mapping[str, str], body: bytes, *, now: float) -> str:
    """The delivery's webhook-id, once its signature and timestamp are good."""
    message_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not message_id or not stamp or not signatures:
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not a number") from None
    if abs(now - timestamp) > TOLERANCE_S:
        raise InvalidSignature("webhook-timestamp is more than 5 minutes off")
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return message_id
    raise InvalidSignature("no signature matches")


def describe(payload: Any) -> str:
    """One line for a delivery's body: ``{"type", "timestamp", "data"}`` (the standard
    format, ``data`` being the event) or ``{"text"}`` (the slack format)."""
    if not isinstance(payload, dict):
        return json.dumps(payload)
    if "text" in payload and "type" not in payload:
        return str(payload["text"])
    event = payload.get("data")
    event = event if isinstance(event, dict) else {}
    entity = event.get("entity")
    entity = entity if isinstance(entity, dict) else {}
    parts = [
        str(payload.get("timestamp", "-")),
        str(payload.get("type", "?")),
        f"{entity.get('type', '?')} {entity.get('id', '?')}",
    ]
    if event.get("bench_id"):
        parts.append(f"on {event['bench_id']}")
    if event.get("actor"):
        parts.append(f"by {event['actor']}")
    return "  ".join(parts)


class Receiver:
    """Verifies, drops repeats, handles. Ids are remembered for as long as their
    timestamp would pass (a repeat older than that fails the timestamp check anyway)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def receive(self, headers: Mapping[str, str], body: bytes, *, now: float) -> int:
        """The status to answer: 204 (handled, or a repeat), 401 or 400."""
        try:
            message_id = verify(self.key, headers, body, now=now)
        except InvalidSignature as refused:
            print(f"refused: {refused}", file=sys.stderr, flush=True)
            return 401
        with self._lock:
            self._seen = {key: at for key, at in self._seen.items() if now - at <= TOLERANCE_S}
            if message_id in self._seen:
                return 204
            try:
                payload = json.loads(body)
            except ValueError:
                return 400
            self.handle(payload)
            self._seen[message_id] = now
        return 204

    def handle(self, payload: Any) -> None:
        print(describe(payload), flush=True)


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413)
                return
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._answer(receiver.receive(headers, body, now=time.time()))

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per event on stdout is the whole log

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Receive Bench Orchestrator webhooks.")
    parser.add_argument("--port", type=int, default=9000, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET"),
        help="the subscription's whsec_... secret (default: $WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("give --secret whsec_... or set WEBHOOK_SECRET")
    try:
        key = decode_secret(args.secret)
    except ValueError as exc:
        parser.error(str(exc))
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Receiver(key)))
    host, port = server.server_address[:2]
    print(f"listening on http://{host!s}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
