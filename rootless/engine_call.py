"""Calls into the engine (`burrow-netavark`, Netavark's CLI) inside the world, and the
engine-side life of one sandbox (its `NetworkOptions`, its teardown)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netns.errors import BurrowError
from rootless.backend import Runtime
from rootless.store import Store


def _bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def netavark(rt: Runtime, command: str, netns_path: str, options: dict[str, Any]
             ) -> dict[str, Any]:
    argv = [_bin("burrow-netavark"), "--config", str(rt.paths.netavark_config),
            f"--rootless={'true' if rt.rootless else 'false'}", "--aardvark-binary",
            _bin("burrow-dns"), command, netns_path]
    env = {"RUST_LOG": os.environ.get("BURROW_ENGINE_LOG", "")}
    res = rt.run(argv, input=json.dumps(options), check=False, timeout=120, env=env)
    out = res.stdout.strip()
    try:
        data = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        data = {"error": out or res.stderr.strip()}
    if res.returncode != 0 or (isinstance(data, dict) and "error" in data):
        msg = data.get("error") if isinstance(data, dict) else None
        raise BurrowError(f"network {command}: {msg or res.stderr.strip() or res.returncode}")
    return data if isinstance(data, dict) else {}


def options(rt: Runtime, rec: dict[str, Any], store: Store,
            only: Sequence[str] | None = None) -> dict[str, Any]:
    """Netavark's `NetworkOptions` for the sandbox (or only some of its networks)."""
    nets = {n: a for n, a in rec["networks"].items() if only is None or n in only}
    opts: dict[str, Any] = {
        "container_id": rec["id"], "container_name": rec["name"],
        "networks": {n: {k: v for k, v in a.items() if v not in (None, [], "")}
                     for n, a in nets.items()},
        "network_info": {n: store.network(n) for n in nets},
        "dns_servers": rec.get("dns") or None,
    }
    ports = rt.ports.engine_ports(rec)
    if ports:
        opts["port_mappings"] = ports
    return opts


def teardown_sandbox(rt: Runtime, rec: dict[str, Any], store: Store) -> list[str]:
    """Unpublish, detach from every network, remove the netns; all errors, never raises."""
    errors = rt.ports.unpublish(rec)
    if rec.get("netns"):
        try:
            netavark(rt, "teardown", rec["netns"], options(rt, rec, store))
        except BurrowError as e:
            errors.append(str(e))
        errors += rt.destroy_netns(rec["name"], rec["netns"])
    return errors
