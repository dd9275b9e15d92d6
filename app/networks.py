"""IP networks named in settings (``"127.0.0.0/8, 10.1.0.0/16"``), parsed once here."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(setting: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs as networks; raises ValueError naming a bad one."""
    networks: list[Network] = []
    for part in setting.split(","):
        text = part.strip()
        if text:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as error:
                raise ValueError(f"{text!r} is not a network: {error}") from None
    return tuple(networks)
