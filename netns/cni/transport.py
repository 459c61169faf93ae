"""The engine call behind burrow-cni: the warm engine when it answers, else in-process.

The warm engine (`netns.server`, started on demand per state dir) is reached through the thin
client's own functions (`netns.client.request_engine`), the same path `burrow-netavark` takes:
the container's netns travels as an fd, and the engine speaks the Netavark command line, so
the request crosses that socket as `NetworkOptions` JSON. In-process, the typed API is called
directly. `BURROW_ENGINE=off` forces in-process (tests, debugging); `BURROW_ENGINE_STATS=1`
says on stderr who served each call, as `burrow-netavark` does.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netns import client
from netns.errors import BurrowError
from netns.schema import NetworkOptions, StatusBlock

if TYPE_CHECKING:
    from netns.engine import Context

Status = dict[str, StatusBlock]


@dataclass(frozen=True)
class Engine:
    state_dir: str
    dns_binary: str
    firewall_driver: str | None
    env: Mapping[str, str]

    @property
    def warm(self) -> bool:
        return self.env.get("BURROW_ENGINE") != "off"

    def argv(self, command: str, netns: str) -> list[str]:
        out = ["--config", self.state_dir, "--rootless=false", "--aardvark-binary", self.dns_binary]
        if self.firewall_driver:
            out += ["--firewall-driver", self.firewall_driver]
        return [*out, command, netns]

    def served(self, by: str) -> None:
        if self.env.get("BURROW_ENGINE_STATS"):
            sys.stderr.write(f"burrow-cni: served-by={by}\n")

    def setup(self, options: NetworkOptions, netns: str) -> Status:
        if self.warm:
            reply = self._remote("setup", options, netns)
            if reply is not None:
                self.served("engine")
                return {k: StatusBlock.from_json(v) for k, v in json.loads(reply).items()}
        self.served("in-process")
        return self._local_setup(options, netns)

    def teardown(self, options: NetworkOptions, netns: str | None) -> None:
        if self.warm and netns:
            if self._remote("teardown", options, netns) is not None:
                self.served("engine")
                return
        from netns import engine

        self.served("in-process")
        engine.teardown(self._context(), options, netns or None)

    def _local_setup(self, options: NetworkOptions, netns: str) -> Status:
        from netns import engine

        return engine.setup(self._context(), options, netns)

    def _context(self) -> Context:
        from netns import engine

        return engine.Context.build(
            config=self.state_dir, rootless=False, aardvark_binary=self.dns_binary,
            firewall_driver=self.firewall_driver, env=self.env,
        )  # fmt: skip

    def _remote(self, command: str, options: NetworkOptions, netns: str) -> str | None:
        """The engine's stdout, or None when it did not serve the call (run it here instead)."""
        try:
            sock = client.socket_path(self.state_dir, self.env)
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError:
            return None
        stdin = json.dumps(options.to_json()).encode()
        try:
            fd: int | None = os.open(netns, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            fd = None  # gone: the engine opens the path itself and reports it as in-process would
        try:
            reply = client.request_engine(sock, self.argv(command, netns), stdin, fd)
        except client.Fallback as fb:
            if fb.spawn:
                try:
                    client.spawn_engine(sock)
                except OSError:
                    pass
            if fb.maybe_ran and command == "setup":
                # The engine died holding this setup: undo any prefix it applied first.
                try:
                    self.teardown(options, netns)
                except BurrowError:
                    pass
            return None
        finally:
            if fd is not None:
                os.close(fd)
        out = reply.stdout.decode("utf-8", "replace")
        if reply.code != 0:
            raise BurrowError(_error_text(out, reply.stderr))
        return out


def _error_text(out: str, err: bytes) -> str:
    try:
        return str(json.loads(out)["error"])
    except (ValueError, KeyError, TypeError):
        return (out or err.decode("utf-8", "replace")).strip() or "the engine failed"
