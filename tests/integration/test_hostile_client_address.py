"""A client whose address lies in the sandbox's own subnet (rootful Podman's default network is
10.88.0.0/16, as is burrow's rootless default: a rootful container, or a LAN that uses the
range, connecting to a published port).

Before: UDP kept the client's address by dialling from the user's netns (clientaddr VIA), but
the sandbox answers an address of its own subnet over its link, never back through that netns:
every UDP datagram from such a client went unanswered (and so did every burrow-rootlessport
dial, TCP too). Now such a client is dialled as if not kept (the sandbox sees its own address,
as before client addresses were kept); TCP, dialled inside the sandbox, keeps it.

The test's "host" is a netns of its own with the client on a veth, as in test_client_address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_client_address import HostSession, addresses, ask, host_and_client
from tests.integration.test_forwarder_hardening import FAMILY_SERVER, run_in
from tests.nsutil import Netns

pytestmark = pytest.mark.rootless

HOST4, CLIENT4 = "10.88.200.1", "10.88.0.7"  # in the world's default network, 10.88.0.0/16
PORT = 18080


@pytest.fixture
def world(rootless_user: Any) -> Iterator[tuple[HostSession, Netns]]:
    with host_and_client(rootless_user, "ad3c", [(HOST4, CLIENT4, 16)], routed=False) as w:
        yield w


def test_a_client_in_the_sandboxs_own_subnet_is_answered(
        world: tuple[HostSession, Netns]) -> None:
    rl, client = world
    rl.burrow("sandbox", "create", "web", "-p", f"{PORT}:80", "-p", f"{PORT}:90/udp",
              check=True, timeout=60)
    run_in(rl, "web", FAMILY_SERVER, "td:80,ud:90")
    v4, _, _ = addresses(rl, "web")
    assert v4.startswith("10.88.") and v4 != CLIENT4
    # UDP: dialled inside the sandbox, which sees its own address (it timed out before).
    assert ask(client, HOST4, PORT, "u") == f"d:::ffff:{v4}"
    # TCP is dialled inside the sandbox bound to the client's address: kept, as before.
    assert ask(client, HOST4, PORT, "t") == f"d:::ffff:{CLIENT4}"
