"""Where the system bus is, without importing the D-Bus library (the no-bus path stays cheap).

`DBUS_SYSTEM_BUS_ADDRESS` from the request's environment, else the standard socket. An empty
value means "no bus" (Netavark's tests set it empty so nothing reaches the host's firewalld).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
DEFAULT_ADDRESS = f"unix:path={SYSTEM_BUS_SOCKET}"
ENV = "DBUS_SYSTEM_BUS_ADDRESS"


def system_address(env: Mapping[str, str]) -> str | None:
    """The system bus address for this environment; None when explicitly disabled (empty)."""
    value = env.get(ENV)
    if value is None:
        return DEFAULT_ADDRESS
    return value.strip() or None


def socket_path(address: str) -> str | None:
    """The first unix socket of a D-Bus address (`\\0name` for an abstract one); None if none.

    Addresses are `transport:k=v,k=v;...`, values %-escaped (D-Bus spec, "Server Addresses")."""
    for entry in address.split(";"):
        transport, _, info = entry.partition(":")
        if transport != "unix":
            continue
        kv = dict(p.partition("=")[::2] for p in info.split(",") if p)
        unescaped = {k: re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), v) for k, v in kv.items()}
        if "path" in unescaped:
            return unescaped["path"]
        if "abstract" in unescaped:
            return "\0" + unescaped["abstract"]
    return None


def maybe_present(env: Mapping[str, str]) -> bool:
    """False when there is surely no bus (disabled, or its socket file is missing): one stat."""
    address = system_address(env)
    if address is None:
        return False
    path = socket_path(address)
    return path is None or path.startswith("\0") or os.path.exists(path)
