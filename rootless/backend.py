"""The seam between the CLI's sandbox logic and the "world" the sandboxes live in.

There are two worlds, picked once by `rootless.cli.make_world` (the composition root):

- rootless (`rootless.world.RootlessWorld`): a per-user user+net+mount namespace held by
  catatonit, a connector (slirp4netns or pasta) to the host, and the userspace port forwarder;
- rootful (`rootless.rootful.RootfulWorld`): burrow run by real root. The world is the current
  network namespace; published ports are kernel DNAT rules the engine writes; no connector.

Sandbox code (`rootless.sandbox`) sees only these Protocols.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rootless.paths import StatePaths
from rootless.ports.spec import PortSpec
from rootless.procs import ProcRef
from rootless.records import SandboxRecord
from rootless.settings import Settings


class Ports(Protocol):
    """How a sandbox's published ports reach it from the host."""

    def check(self, ports: Sequence[PortSpec]) -> None:
        """Refuse ports nobody can publish here (in use, privileged), before any change."""
        ...

    def engine_ports(self, rec: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`port_mappings` for the engine's setup/teardown (the engine then does the DNAT)."""
        ...

    def publish(self, rec: Mapping[str, Any]) -> None:
        """Start forwarding after the engine set the sandbox up."""
        ...

    def unpublish(self, rec: Mapping[str, Any]) -> list[str]:
        """Stop forwarding; returns errors instead of raising (teardown goes on)."""
        ...

    def retarget(self, rec: Mapping[str, Any]) -> None:
        """Point the published ports at the sandbox's networks as they are now (after
        `network connect`/`disconnect`), without unbinding them."""
        ...


class Runtime(Protocol):
    """A running world: where the engine runs and where sandbox namespaces live."""

    @property
    def paths(self) -> StatePaths: ...

    @property
    def rootless(self) -> bool: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def ports(self) -> Ports: ...

    @property
    def world_id(self) -> ProcRef | None:
        """The process whose death ends this world (the rootless holder); a sandbox recorded
        with another one is lost. None: the world cannot die under its sandboxes (rootful)."""
        ...

    def run(
        self, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60, what: str | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the world's network (and mount) namespace."""
        ...

    def netns_path(self, name: str) -> str:
        """Where the sandbox's network namespace is (or will be), as `run` sees it."""
        ...

    def create_netns(self, name: str) -> str:
        """Make the sandbox's network namespace; returns its path as `run` sees it."""
        ...

    def destroy_netns(self, path: str) -> list[str]:
        """Remove it (and whatever still runs in it); returns errors instead of raising."""
        ...

    def exec_prefix(self, name: str) -> list[str]:
        """argv that runs the rest of the command line in the sandbox's network namespace."""
        ...

    def default_dns(self) -> list[str]:
        """Name servers for a sandbox on no DNS-enabled network."""
        ...

    def missing_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        """The sandboxes among these (live) ones whose published ports are not forwarded."""
        ...

    def restore_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        """Publish the ports of these (live) sandboxes that are not forwarded now, e.g. after
        the forwarder died; returns what it did."""
        ...

    def restore_dns(self) -> list[str]:
        """Start the DNS server again if it serves networks and died; returns what it did."""
        ...


class World(Protocol):
    """The lifecycle of a world; `ensure` creates it on demand, once."""

    @property
    def mode(self) -> str: ...

    @property
    def paths(self) -> StatePaths: ...

    @property
    def network_mtu(self) -> int | None:
        """MTU for networks burrow creates (None: the engine's default)."""
        ...

    def ensure(self) -> Runtime: ...

    def current(self) -> Runtime | None:
        """The running world, without creating or repairing anything."""
        ...

    def teardown(self) -> bool:
        """Stop everything the world owns. True if there was something to stop."""
        ...

    def status(self) -> dict[str, Any]:
        """`burrow status --format json` minus the sandbox list."""
        ...

    def status_lines(self, info: dict[str, Any]) -> list[str]:
        """The mode's own lines of `burrow status` (table form) for `info` from `status`."""
        ...

    def up_message(self, rt: Runtime) -> str: ...


def require(w: World) -> Runtime:
    rt = w.current()
    if rt is None:
        from netns.errors import BurrowError

        raise BurrowError("no burrow namespace is running; create a sandbox first "
                          "(`burrow sandbox create NAME`)")
    return rt
