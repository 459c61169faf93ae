"""docs/architecture.md, the one page that says where each module is, stays true: every
module of netns/ and rootless/ is named on it, and every module it names exists.

A new module that nobody added to the page is how it drifted before (netns/bridges.py,
neigh.py, rundir.py and rootless/ports/inhost.py arrived on one day and none was on it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text()
# Packages the page describes as a whole (their own docstrings list their parts), so a module
# of theirs may be covered by the package's name alone.
WHOLE = {"cni", "drivers", "cli", "connectors", "rootlessport"}


def _modules() -> list[Path]:
    return sorted(p for top in ("netns", "rootless") for p in (ROOT / top).rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py"))


def test_every_module_is_on_the_page() -> None:
    missing = [str(p.relative_to(ROOT)) for p in _modules()
               if f"{p.name}`" not in PAGE
               and not (p.parent.name in WHOLE and f"{p.parent.name}/" in PAGE)]
    assert not missing, f"add these to docs/architecture.md (The parts): {missing}"


def test_every_module_the_page_names_exists() -> None:
    names = {p.name for top in ("netns", "rootless", "scripts", "tests")
             for p in (ROOT / top).rglob("*.py")}
    named = set(re.findall(r"([A-Za-z_][\w]*\.py)`", PAGE))
    assert named, "the page names modules as `name.py`"
    gone = sorted(n for n in named if n not in names and n != "<name>.py")
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
