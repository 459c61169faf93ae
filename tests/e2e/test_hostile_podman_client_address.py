"""burrow-rootlessport and a client whose address lies in the container's own subnet (rootful
Podman's default network and rootless Podman's are both 10.88.0.0/16: a rootful container, or a
LAN using the range, connecting to a rootless container's published port).

Before: the drop-in kept the client's address by dialling from Podman's rootless netns, bound
to it, but the container answers an address of its own subnet over its link, never back
through that netns: every such TCP connection and UDP datagram went unanswered. Now such a
client is dialled inside the container, which sees its own address (as with Podman's Go
rootlessport); clients from elsewhere keep theirs (test_podman_rootlessport).
"""

from __future__ import annotations

import sys

import pytest

from tests.e2e.podman_env import IMAGE, RootlessWorld
from tests.e2e.test_podman_rootlessport import (  # noqa: F401 - routed is a fixture
    HOST_IP,
    WHO_CLIENT,
    WHO_UDP_CLIENT,
    forwarders,
    routed,
    start_who,
)
from tests.nsutil import Netns

pytestmark = [pytest.mark.e2e, pytest.mark.rootless]
SUBNET_CLIENT = "10.89.23.77"  # in brlp3 (10.89.23.0/24), the container's network
def _ask(client: Netns, port: int, kind: str) -> list[str]:
    """What the server said to a client bound to SUBNET_CLIENT, split into words."""
    script = WHO_CLIENT if kind == "tcp" else WHO_UDP_CLIENT
    res = client.run([sys.executable, "-c", script, HOST_IP, str(port), SUBNET_CLIENT],
                     check=False)
    return res.stdout.split()


def test_a_client_in_the_containers_own_subnet_is_answered(
        routed: tuple[RootlessWorld, Netns],  # noqa: F811
) -> None:
    w, client = routed
    assert w.host is not None
    client.run(["ip", "addr", "add", f"{SUBNET_CLIENT}/32", "dev", "brlpc"])
    w.host.run(["ip", "route", "add", f"{SUBNET_CLIENT}/32", "dev", "brlph"])
    w.podman("run", "-d", "--name", "brlpn", "--network", "brlp3:ip=10.89.23.12",
             "-p", "8084:80", "-p", "8085:80/udp", IMAGE, "sleep", "600")
    server = start_who(w, "brlpn")
    try:
        assert forwarders(w)["go"] == []
        assert _ask(client, 8084, "tcp") == ["10.89.23.12", "10.89.23.12"]
        assert _ask(client, 8085, "udp") == ["udp", "10.89.23.12"]
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpn")
        w.host.run(["ip", "route", "del", f"{SUBNET_CLIENT}/32", "dev", "brlph"], check=False)
        client.run(["ip", "addr", "del", f"{SUBNET_CLIENT}/32", "dev", "brlpc"], check=False)
