"""Where a webhook may point: http(s) only, and never at this network's insides.

The host is resolved and every address it has is checked: loopback, private, link-local
(the cloud metadata address 169.254.169.254 among them), multicast, reserved and
unspecified ones are refused unless ``ORCH_WEBHOOK_ALLOW_NETWORKS`` lists a network that
holds them. Checked when a subscription is made or changed, and again before each
attempt (a name may resolve elsewhere later).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from app.networks import Network, parse_networks

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = ipaddress.ip_address("169.254.169.254")


def allowed_networks(setting: str) -> tuple[Network, ...]:
    """``ORCH_WEBHOOK_ALLOW_NETWORKS`` as networks (the settings validated it)."""
    return parse_networks(setting)


def _internal(address: Address) -> str | None:
    if address == METADATA:
        return "the cloud metadata address"
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
    ):
        if flag:
            return f"a {reason} address"
    return None


def refused_address(address: Address, allowed: Sequence[Network]) -> str | None:
    if any(address in network for network in allowed):
        return None
    reason = _internal(address)
    return None if reason is None else f"{address} is {reason}"


def shape_problem(url: str) -> str | None:
    """What is wrong with the URL itself, before any lookup (None: nothing)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"only http and https URLs are delivered to, not {parts.scheme or 'no scheme'!r}"
    if not parts.hostname:
        return "the URL names no host"
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as error:
        return f"the URL's port is not valid: {error}"
    return None


async def check_target(url: str, allowed: Sequence[Network]) -> str | None:
    """Why ``url`` may not be delivered to now, or None when it may."""
    problem = shape_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as error:
            return f"{host!r} does not resolve: {error}"
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    for address in addresses:
        reason = refused_address(address, allowed)
        if reason is not None:
            return (
                f"{host!r} resolves to {reason}; not delivered to (see ORCH_WEBHOOK_ALLOW_NETWORKS)"
            )
    return None
