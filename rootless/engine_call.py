"""Calls into the engine (`burrow-netavark`, Netavark's CLI) inside the world, and the
engine-side life of one sandbox (its `NetworkOptions`, its teardown)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netns import schema
from netns.errors import BurrowError
from rootless.backend import Runtime
from rootless.records import SandboxRecord
from rootless.store import Store


def bin_path(name: str) -> str:
    """burrow's own entry points, next to this Python (the venv), else from PATH."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def netavark(rt: Runtime, command: str, netns_path: str, options: schema.NetworkOptions
             ) -> dict[str, Any]:
    if not options.networks:
        # A sandbox on `--network none`: nothing for the engine; its loopback comes up (on
        # create and on a restore), as Podman's does.
        if command == "setup":
            rt.run(["nsenter", f"--net={netns_path}", "ip", "link", "set", "lo", "up"],
                   what="bring loopback up")
        return {}
    argv = [bin_path("burrow-netavark"), "--config", str(rt.paths.netavark_config),
            f"--rootless={'true' if rt.rootless else 'false'}", "--aardvark-binary",
            bin_path("burrow-dns"), command, netns_path]
    env = {"RUST_LOG": rt.settings.engine_log}
    res = rt.run(argv, input=json.dumps(options.to_json()), check=False, timeout=120, env=env)
    out = res.stdout.strip()
    try:
        data = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        data = {"error": out or res.stderr.strip()}
    if res.returncode != 0 or (isinstance(data, dict) and "error" in data):
        msg = data.get("error") if isinstance(data, dict) else None
        raise BurrowError(f"network {command}: {msg or res.stderr.strip() or res.returncode}")
    return data if isinstance(data, dict) else {}


def options(rt: Runtime, rec: SandboxRecord, store: Store,
            only: Sequence[str] | None = None) -> schema.NetworkOptions:
    """Netavark's `NetworkOptions` for the sandbox (or only some of its networks)."""
    nets = [(n, a) for n, a in rec.networks if only is None or n in only]
    per_net = tuple(
        (n, schema.PerNetworkOptions(
            interface_name=a.interface_name,
            static_ips=tuple(schema.parse_ip(ip, f"sandbox {rec.name}") for ip in a.static_ips)
            or None,
            aliases=a.aliases or None, static_mac=a.static_mac))
        for n, a in nets)
    ports = rt.ports.engine_ports(rec.to_json())
    return schema.NetworkOptions(
        container_id=rec.id, container_name=rec.name, networks=per_net,
        network_info={n: schema.Network.from_json(store.network(n), f"network {n}")
                      for n, _ in nets},
        port_mappings=tuple(schema.PortMapping.from_json(p) for p in ports) or None,
        dns_servers=rec.dns or None)


def teardown_sandbox(rt: Runtime, rec: SandboxRecord, store: Store) -> list[str]:
    """Unpublish, detach from every network, remove the netns; all errors, never raises."""
    errors = rt.ports.unpublish(rec.to_json())
    if rec.netns:
        try:
            netavark(rt, "teardown", rec.netns, options(rt, rec, store))
        except BurrowError as e:
            errors.append(str(e))
        errors += rt.destroy_netns(rec.netns)
    return errors
