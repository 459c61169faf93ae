"""The golden Podman <-> Netavark exchanges in ../shared/samples (captured on this machine type)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def samples_dir() -> Path:
    """shared/ sits beside the repo for developers and CI; BURROW_SAMPLES overrides."""
    env = os.environ.get("BURROW_SAMPLES")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "samples", REPO / "tests" / "data" / "samples"]:
        if cand.is_dir():
            return cand
    raise FileNotFoundError("no samples directory: expected ../shared/samples next to the repo")


def records() -> dict[str, dict[str, Any]]:
    """Every wrapper record (one netavark call each), by file name."""
    out = {}
    for path in sorted(samples_dir().glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "argv" in data:
            out[path.name] = data
    return out


def network_configs() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(samples_dir().glob("*network-config*.json"))}
