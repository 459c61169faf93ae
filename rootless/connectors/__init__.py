"""Connectors: the link from the per-user namespace to the host network."""

from __future__ import annotations

import shutil

from netns.errors import BurrowError
from rootless.connectors.base import Connector, ConnectorInfo
from rootless.connectors.pasta import Pasta
from rootless.connectors.slirp4netns import Slirp4netns

__all__ = ["Connector", "ConnectorInfo", "select"]

_KINDS: dict[str, type[Slirp4netns] | type[Pasta]] = {"slirp4netns": Slirp4netns,
                                                       "pasta": Pasta}


def select(name: str | None) -> Connector:
    """The named connector, or whichever is installed (slirp4netns first)."""
    if name:
        if name not in _KINDS:
            raise BurrowError(f"unknown connector {name!r}; use slirp4netns or pasta")
        return _KINDS[name]()
    for kind, cls in _KINDS.items():
        if shutil.which(kind):
            return cls()
    raise BurrowError("no connector installed: `apt-get install slirp4netns` (or passt)")
