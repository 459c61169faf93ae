"""The engine call behind burrow-cni, in the process that runs the plugin's logic.

That process is the warm engine when the thin client (`netns.cni.client`) reached it, else the
plugin process itself. Either way the typed API is called directly. The netns is opened here
with O_NONBLOCK and checked to be a network namespace before use, so a path that names a FIFO
can never block the (shared) engine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netns.errors import BurrowError, MultiError
from netns.schema import NetworkOptions, StatusBlock

if TYPE_CHECKING:
    from netns.cni.hostside import HostSide
    from netns.engine import Context

Status = dict[str, StatusBlock]


def open_netns(path: str) -> int:
    from netns import engine

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise BurrowError(f"invalid namespace path {path}: {exc.strerror} (os error {exc.errno})") from None
    try:
        engine.check_netns(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class Engine:
    state_dir: str
    dns_binary: str | None  # None: burrow-dns beside this interpreter, else aardvark-dns
    firewall_driver: str | None
    env: Mapping[str, str]

    def setup(self, options: NetworkOptions, netns: str, bridge: str = "") -> tuple[Status, HostSide | None]:
        """The engine's status, and the host side of the container's port on `bridge`."""
        from netns import engine
        from netns.cni import hostside

        fd = open_netns(netns)
        try:
            status = engine.setup(self._context(), options, fd)
            ifname = options.networks[0][1].interface_name
            return status, hostside.read(fd, ifname, bridge) if bridge else None
        finally:
            os.close(fd)

    def teardown(self, options: NetworkOptions, netns: str | None) -> None:
        """`netns` None or gone: the engine removes the host side only."""
        from netns import engine

        fd = None
        if netns:
            try:
                fd = open_netns(netns)
            except BurrowError:
                fd = None  # the container (and its interfaces) went already
        try:
            engine.teardown(self._context(), options, fd)
        except MultiError as exc:
            # A DEL must succeed when the interface is gone already (a retried DEL).
            if not all(isinstance(e, engine.InterfaceGone) for e in exc.errors):
                raise
        finally:
            if fd is not None:
                os.close(fd)

    def _context(self) -> Context:
        from netns import engine
        from netns.netavark_cli import default_dns_binary

        return engine.Context.build(
            config=self.state_dir, rootless=False,
            aardvark_binary=self.dns_binary or default_dns_binary(),
            firewall_driver=self.firewall_driver, env=self.env,
        )  # fmt: skip
