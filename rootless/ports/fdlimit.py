"""Raise the soft fd limit to the hard one, as every Go program (rootlessport) does at start-up
(stdlib only: burrow-rootlessport's phase 1 calls it before it binds, while `podman run`
waits; with the usual soft 1024 a `-p` range of 1,000+ ports failed there with "too many open
files", where upstream binds it)."""

from __future__ import annotations

import resource


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit.

    A TCP connection costs the forwarder 6 fds (2 sockets, 2 pipes), so the usual soft limit of
    1024 would cap it at ~170 connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                hard = int(f.read())
        except (OSError, ValueError):
            hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass  # keep the soft limit: the caps follow whatever it is
