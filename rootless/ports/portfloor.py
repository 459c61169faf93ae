"""The lowest port an unprivileged process may bind (stdlib only: burrow-rootlessport's phase 1
imports it before ready, where the forwarder's imports would slow `podman run`)."""

from __future__ import annotations


def unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024
