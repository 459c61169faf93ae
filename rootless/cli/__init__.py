"""`burrow`: the typer app (`rootless.cli.core`), one module per command group, and `main`.

Importing a command module registers its commands on the apps in `core`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from netns.errors import BurrowError
from rootless.cli.core import Ctx, app, ctx, emit, make_world
from rootless.settings import Settings

# The command modules: each registers its commands on the apps in `core` as it is imported.
# A new command module is one entry here.
COMMAND_MODULES = (
    "world_cmds",    # up, status, down, demo, netavark
    "sandbox_cmds",  # sandbox ..., exec
    "network_cmds",  # network ...
    "port_cmds",     # port ...
    "run_cmds",      # run
)


def _register() -> None:
    from rootless.podman import podman_app  # its heavier imports are lazy, per command

    for mod in COMMAND_MODULES:
        importlib.import_module(f"rootless.cli.{mod}")
    app.add_typer(podman_app, name="podman")


_register()

__all__ = ["Ctx", "app", "ctx", "emit", "main", "make_world"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()  # the one read of the BURROW_* environment
    except BurrowError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    try:
        app(args=list(argv) if argv is not None else None, prog_name="burrow",
            standalone_mode=False, obj=settings)
    except BurrowError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1
    except Exception as e:
        # Usage errors come from the click copy that typer bundles (typer._click), so match
        # them by shape rather than importing a `click` that may not be installed.
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return int(getattr(e, "exit_code"))  # noqa: B009 - duck-typed click exception
        if type(e).__name__ == "Abort":
            return 1
        if settings.debug:
            raise
        print(f"Error: {type(e).__name__}: {e} (set BURROW_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    return 0
