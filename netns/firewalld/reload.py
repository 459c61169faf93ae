"""`burrow-netavark firewalld-reload`: put the rules back whenever firewalld drops them.

firewalld's reload (`firewall-cmd --reload`, `systemctl reload firewalld`) replaces its runtime
config with the permanent one: the trusted-zone sources and the firewalld driver's runtime
policy settings are gone, and with firewalld's iptables backend so are iptables rules. Netavark
2.x's `firewalld-reload` (src/commands/firewalld_reload.rs) listens for the `Reloaded` signal
and re-applies every network and port forward from `$config/firewall/`; this does the same,
with the driver named in the state (`firewall/firewall-driver`). It also re-applies when
firewalld restarts (a new owner of its bus name, which sends no `Reloaded`), once firewalld
says RUNNING. A failed re-apply is logged and the listener goes on, as Netavark's does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from jeepney import HeaderFields, MatchRule
from jeepney.low_level import Message

from netns import statefiles
from netns.errors import BurrowError
from netns.firewalld import api
from netns.firewalld.address import system_address
from netns.firewalld.bus import BusError, open_system

log = logging.getLogger("netns.firewalld")

# Netavark 2.x's DEFAULT_CONFIG_DIR: what Podman passes, and where the unit file looks.
DEFAULT_CONFIG = "/run/containers/networks"
START_TIMEOUT = 60.0  # a restarted firewalld loading its config


def state_driver(config_dir: Path) -> str | None:
    """The driver that wrote the firewall state, as Netavark's `read_fw_config` takes it."""
    path = config_dir / statefiles.FIREWALL_DIR / statefiles.FIREWALL_DRIVER
    try:
        return statefiles.read_text(path).strip() or None
    except (OSError, ValueError):  # a FIFO, a symlink, bad UTF-8: the fallback's driver
        return None


def reload_rules(config_dir: Path, env: Mapping[str, str], fallback: str | None) -> bool:
    """Re-apply every persisted network and port forward; False (logged) if that failed."""
    from netns.firewall import select

    driver = state_driver(config_dir) or fallback
    try:
        select(driver, config_dir, env).reload()
    except BurrowError as exc:
        log.error("failed to reload firewall rules: %s", exc)
        return False
    log.info("re-applied the firewall rules of %s (%s)", config_dir, driver or "default driver")
    return True


def _rules() -> tuple[MatchRule, MatchRule]:
    reloaded = MatchRule(type="signal", interface=api.IFACE, member=api.RELOADED, path=api.PATH)
    owner = MatchRule(type="signal", sender="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                      member="NameOwnerChanged", path="/org/freedesktop/DBus")
    owner.add_arg_condition(0, api.SERVICE)
    return reloaded, owner


def _wait_running(fw: api.Firewalld, timeout: float) -> bool:
    """A new firewalld owns its name before it has applied its config: wait for RUNNING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fw.state() == "RUNNING":
                return True
        except BusError:
            pass
        time.sleep(0.1)
    return False


def listen(config_dir: Path, env: Mapping[str, str], fallback: str | None = None, *,
           ready: Callable[[], None] | None = None) -> None:
    """Re-apply now (firewalld may have flushed before we started), then on every reload or
    restart of firewalld, until the bus connection ends (a BusError) or the process is killed."""
    bus = open_system(env)
    if bus is None:
        where = system_address(env) or "DBUS_SYSTEM_BUS_ADDRESS is empty"
        raise BurrowError(f"firewalld-reload: DBus error: no system bus ({where})")
    fw = api.Firewalld(bus)
    with bus, bus.signals(*_rules()) as signals:
        # Subscribed first, then applied: a reload in between is not lost.
        owner = bus.name_owner(api.SERVICE)  # after subscribing: a change is seen either way
        reload_rules(config_dir, env, fallback)
        log.info("listening for firewalld reloads on %s", bus.address)
        if ready is not None:
            ready()
        while True:
            first = signals.wait()
            assert first is not None  # no timeout: only a BusError ends the wait
            batch = [first]
            while (more := signals.wait(timeout=0)) is not None:
                batch.append(more)  # a burst of reloads: one re-apply after the last
            batch, owner = genuine(batch, owner)
            if not batch:
                continue
            new_owner = _last_owner(batch)
            if new_owner == "":
                log.info("firewalld stopped; waiting for it to start again")
                continue
            if new_owner is not None and not _wait_running(fw, START_TIMEOUT):
                log.error("firewalld restarted but is not RUNNING after %g s", START_TIMEOUT)
                continue
            log.debug("firewalld reloaded or restarted (%d signals)", len(batch))
            reload_rules(config_dir, env, fallback)


def genuine(batch: list[Message], owner: str) -> tuple[list[Message], str]:
    """The batch without the `Reloaded` signals firewalld did not send, and firewalld's bus
    name's owner after it. Any local user may emit a signal with firewalld's path, interface
    and member on the system bus, and the match rule cannot name the sender (the daemon would
    resolve a well-known name, jeepney's filter compares it with the unique one): each such
    signal made this root daemon re-apply every rule. netavark's zbus proxy checks the sender."""
    out = []
    for m in batch:
        if m.header.fields.get(HeaderFields.member) == "NameOwnerChanged":
            owner = str(m.body[2])  # the match rule names the bus daemon as sender
            out.append(m)
        elif owner and m.header.fields.get(HeaderFields.sender) == owner:
            out.append(m)
        else:
            log.debug("ignored a %s signal from %s, which is not firewalld (%s)",
                      api.RELOADED, m.header.fields.get(HeaderFields.sender), owner or "none")
    return out, owner


def _last_owner(batch: list[Message]) -> str | None:
    """firewalld's bus name's newest owner in these signals: "" gone, None no change."""
    owners = [str(m.body[2]) for m in batch
              if m.header.fields.get(HeaderFields.member) == "NameOwnerChanged"]
    return owners[-1] if owners else None


def main(config: str | None, driver: str | None, log_level: str | None,
         env: Mapping[str, str]) -> int:
    """The command: a daemon whose log goes to stderr (journald under systemd), info by default.
    A failure to start prints Netavark's `{"error": ...}` line on stdout and exits 1."""
    import sys

    from netns import logs
    from netns.errors import error_json

    level = logs.parse_level(log_level or env.get("RUST_LOG")) or logging.INFO
    logs.configure("burrow-firewalld-reload", level=level, stream=sys.stderr)
    try:
        listen(Path(config or DEFAULT_CONFIG), env, driver)
    except BurrowError as exc:
        print(error_json(exc), flush=True)
        return exc.exit_code
    return 0  # not reached: listen returns only by raising
