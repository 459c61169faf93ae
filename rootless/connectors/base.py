"""What every connector (the link from the per-user namespace to the host) provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rootless.procs import ProcRef
from rootless.userns import Holder

# Bridges and veths behind a connector use the tap MTU: measured 4-8x the throughput of 1500.
CONNECTOR_MTU = 65520


@dataclass(frozen=True)
class ConnectorInfo:
    kind: str
    proc: ProcRef
    interface: str               # the tap inside the namespace
    host_v4: str | None          # address inside the ns that reaches the host's 127.0.0.1
    host_v6: str | None          # ... and the host's ::1
    host_loopback: bool          # whether those addresses are open
    extra: tuple[ProcRef, ...] = ()  # helper processes (pasta's tether)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "proc": self.proc.to_json(), "interface": self.interface,
            "host_v4": self.host_v4, "host_v6": self.host_v6,
            "host_loopback": self.host_loopback, "extra": [p.to_json() for p in self.extra],
        }

    @classmethod
    def from_json(cls, data: Any) -> ConnectorInfo | None:
        if not isinstance(data, dict):
            return None
        proc = ProcRef.from_json(data.get("proc"))
        if proc is None:
            return None
        extra = tuple(p for p in (ProcRef.from_json(x) for x in data.get("extra", [])) if p)
        return cls(str(data.get("kind")), proc, str(data.get("interface")),
                   data.get("host_v4"), data.get("host_v6"), bool(data.get("host_loopback")),
                   extra)

    def stop(self) -> None:
        for p in (self.proc, *self.extra):
            p.stop(grace=1.0)


class Connector(Protocol):
    name: str

    def start(self, holder: Holder, *, host_loopback: bool, timeout: float) -> ConnectorInfo: ...


def masquerade_script(interface: str) -> str:
    """NAT from every bridge subnet out through the connector, in one nft batch.

    The engine's own per-network masquerade also covers this; this table makes egress work for
    any subnet (and with firewall driver `none`) at the cost of one rule.
    """
    return (
        "nft -f - <<'EOF'\n"
        "table inet burrow-connector {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat + 10; policy accept;\n"
        f'    oifname "{interface}" masquerade\n'
        "  }\n"
        "}\n"
        "EOF\n"
    )
