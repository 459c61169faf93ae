"""The host's name servers, for sandboxes on no DNS-enabled network."""

from __future__ import annotations

import ipaddress

# systemd-resolved's stub (127.0.0.53) is unreachable from a sandbox; its upstream list is not.
_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")


def _read(path: str) -> list[str]:
    try:
        with open(path) as f:
            return [ln.split()[1] for ln in f if ln.startswith("nameserver") and
                    len(ln.split()) > 1]
    except OSError:
        return []


def host_servers(*, skip_loopback: bool = False) -> list[str]:
    for path in _FILES:
        servers = _read(path)
        if skip_loopback:
            servers = [s for s in servers if not _loopback(s)]
        if servers:
            return servers
    return []


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False
