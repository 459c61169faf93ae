"""The null firewall: every call succeeds and changes nothing (`--firewall-driver none`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from netns.firewall.types import NetworkFw, PortFw


class NoFirewall:
    name = "none"

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        pass

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        pass

    def reload(self) -> None:
        pass
