"""Calls into the engine (`burrow-netavark`, Netavark's CLI) inside the user namespace."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from netns.errors import BurrowError
from rootless.userns import Holder


def _bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def netavark(holder: Holder, command: str, netns_path: str, options: dict[str, Any]
             ) -> dict[str, Any]:
    argv = [_bin("burrow-netavark"), "--config", str(holder.paths.netavark_config),
            "--rootless=true", "--aardvark-binary", _bin("burrow-dns"), command, netns_path]
    env = {"RUST_LOG": os.environ.get("BURROW_ENGINE_LOG", "")}
    res = holder.run(argv, input=json.dumps(options), check=False, timeout=120, env=env)
    out = res.stdout.strip()
    try:
        data = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        data = {"error": out or res.stderr.strip()}
    if res.returncode != 0 or (isinstance(data, dict) and "error" in data):
        msg = data.get("error") if isinstance(data, dict) else None
        raise BurrowError(f"network {command}: {msg or res.stderr.strip() or res.returncode}")
    return data if isinstance(data, dict) else {}
