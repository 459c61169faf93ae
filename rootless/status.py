"""`burrow status`: what is running in the world, read from state and /proc."""

from __future__ import annotations

from typing import Any

from rootless.backend import World


def collect(w: World) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": w.mode, "state_dir": str(w.paths.root), **w.status()}
    sdir = w.paths.sandboxes_dir
    info["sandboxes"] = sorted(p.stem for p in sdir.glob("*.json")) if sdir.exists() else []
    return info


def render(w: World, info: dict[str, Any]) -> str:
    lines = [f"mode:       {info['mode']}", f"state:      {info['state_dir']}",
             *w.status_lines(info), f"sandboxes:  {', '.join(info['sandboxes']) or '-'}"]
    return "\n".join(lines)
