"""`-p` as the CLI takes it, in Podman's forms, including those without a host port:
`-p 80`, `-p 80-82/udp`, `-p 127.0.0.1::80`, `-p [::1]::80`. For these a free host port (a
free run of them for a range) is chosen when the sandbox is created and recorded like any
other, so `burrow port ls` and `burrow sandbox inspect` show it (Podman: `podman port`).

A port counts as free when no sandbox has it recorded and this process can bind it for each
protocol asked, on the address asked: the CLI runs where the ports will be published (the
host's network namespace rootless, the world's rootful).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Sequence

from netns.errors import BurrowError
from rootless.ports.spec import OPTIONS, PortSpec, overlaps

EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range, as Podman's picks
TRIES = 64


def parse(specs: Sequence[str], taken: Sequence[PortSpec],
          bindable: Callable[[str, int, str], bool] | None = None) -> list[PortSpec]:
    """Every `-p`, with a host port chosen where the spec gives none."""
    probe = bindable or can_bind
    out: list[PortSpec] = []
    for spec in specs:
        out += PortSpec.parse(_with_host_port(spec, [*taken, *out], probe))
    return out


def _split(spec: str) -> tuple[str, str, str, str] | None:
    """(host address as written, host port, container port, "/proto" or ""); None when the
    shape is not one this module completes (PortSpec.parse then says what is wrong)."""
    body, slash, proto = spec.strip().partition("/")
    if body.startswith("["):
        ip, close, rest = body.partition("]")
        if not close or not rest.startswith(":"):
            return None
        parts = [ip + "]", *rest[1:].split(":")]
    else:
        parts = body.split(":")
    suffix = slash + proto
    if len(parts) == 1:
        return "", "", parts[0], suffix
    if len(parts) == 2:
        return "", parts[0], parts[1], suffix
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], suffix
    return None


def _with_host_port(spec: str, taken: Sequence[PortSpec],
                    probe: Callable[[str, int, str], bool]) -> str:
    split = _split(spec)
    if split is None or split[1]:
        return spec
    ip_text, _, ctr, suffix = split
    words = [p.strip().lower() for p in (suffix[1:] or "tcp").split(",")]
    protos = [p for p in words if p not in OPTIONS] or ["tcp"]
    probe_spec = PortSpec.parse(f"{ip_text + ':' if ip_text else ''}{ctr}:{ctr}{suffix}")
    n = probe_spec[0].range
    base = free_base(ip_text.strip("[]"), protos, n, probe_spec[0].container_port, taken, probe)
    host = f"{base}" + (f"-{base + n - 1}" if n > 1 else "")
    return f"{ip_text + ':' if ip_text else ''}{host}:{ctr}{suffix}"


def free_base(host_ip: str, protos: Sequence[str], n: int, ctr: int,
              taken: Sequence[PortSpec], probe: Callable[[str, int, str], bool]) -> int:
    """The first of `n` consecutive host ports free for every protocol."""
    rng = random.SystemRandom()
    lo, hi = EPHEMERAL
    for _ in range(TRIES):
        base = rng.randint(lo, hi - n + 1)
        cands = [PortSpec.of(host_ip or None, base, ctr, n, p) for p in protos]
        if any(overlaps(c, t) for c in cands for t in taken):
            continue
        if all(probe(host_ip, port, p) for p in protos for port in range(base, base + n)):
            return base
    raise BurrowError(f"no free host port{'s' if n > 1 else ''} found for {n} port(s) in "
                      f"{lo}-{hi}; give the host port explicitly (-p HOST:CTR)")


def can_bind(host_ip: str, port: int, proto: str) -> bool:
    """Whether this process can bind `port` now (all addresses: v6 and v4 both)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    if host_ip:
        fam = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
        return _bind(fam, kind, host_ip, port)
    return _bind(socket.AF_INET, kind, "0.0.0.0", port) and (
        not socket.has_ipv6 or _bind(socket.AF_INET6, kind, "::", port, v6only=True))


def _bind(fam: socket.AddressFamily, kind: socket.SocketKind, ip: str, port: int,
          v6only: bool = False) -> bool:
    try:
        with socket.socket(fam, kind) as s:
            if v6only:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((ip, port))
    except OSError as e:
        # No IPv6 on this host at all is not a taken port.
        return v6only and e.errno in (97, 99)  # EAFNOSUPPORT, EADDRNOTAVAIL
    return True
