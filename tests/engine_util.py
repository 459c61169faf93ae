"""Drive the Netavark-compatible CLI inside a throwaway "host" netns, as Podman would."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.nsutil import VENV_BIN, Netns, unique


@dataclass
class World:
    """A host netns, a config dir, and the firewall driver under test."""

    host: Netns
    config: Path
    firewall: str
    env: dict[str, str] = field(default_factory=dict)
    aardvark: str = "/nonexistent/aardvark-dns"  # DNS off unless a test asks for it

    def netavark(self, command: str, ctr: Netns | None, opts: dict[str, Any] | None,
                 *, check: bool = True, argv_extra: list[str] | None = None,
                 netns_path: str | None = None, command_args: list[str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        argv = [
            str(VENV_BIN / "python"), "-m", "netns.netavark_cli",
            "--config", str(self.config), "--rootless=false", f"--aardvark-binary={self.aardvark}",
            "--firewall-driver", self.firewall, *(argv_extra or []), command,
        ]  # fmt: skip
        if ctr is not None or netns_path is not None:
            argv.append(netns_path or ctr.path)  # type: ignore[union-attr]
        argv.extend(command_args or [])
        # No D-Bus unless a test gives one (tests/firewalld_env.py): never the machine's firewalld.
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BURROW_ENGINE": "off",
               "DBUS_SYSTEM_BUS_ADDRESS": "", **self.env}
        res = self.host.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                            input=json.dumps(opts) if opts is not None else "", check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"netavark {command} failed ({res.returncode}): {res.stdout} {res.stderr}")
        return res

    def setup(self, ctr: Netns, opts: dict[str, Any]) -> dict[str, Any]:
        res = self.netavark("setup", ctr, opts)
        return json.loads(res.stdout)

    def teardown(self, ctr: Netns | None, opts: dict[str, Any]) -> None:
        self.netavark("teardown", ctr, opts)


def assert_refused(res: subprocess.CompletedProcess[str], ctr: Netns, *needles: str) -> str:
    """A refused netavark-protocol call: exit 1, each needle in its JSON error, and no
    interface made in the container (a refusal applies nothing). Returns the error."""
    assert res.returncode == 1, res.stdout
    error: str = json.loads(res.stdout)["error"]
    for needle in needles:
        assert needle in error, error
    assert "eth0" not in ctr.run(["ip", "-o", "link"]).stdout
    return error

def network(name: str, bridge: str, subnets: list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    net = {
        "name": name, "id": unique("", 64).ljust(64, "0")[:64], "driver": "bridge",
        "network_interface": bridge,
        "subnets": [{"subnet": s, "gateway": g} for s, g in subnets],
        "ipv6_enabled": any(":" in s for s, _ in subnets), "internal": False, "dns_enabled": False,
        "ipam_options": {"driver": "host-local"},
    }  # fmt: skip
    net.update(kw)
    return net


def static_net(prefix: str, third: int, dual: bool
               ) -> tuple[dict[str, Any], Callable[[int], dict[str, Any]]]:
    """A network whose name and bridge are unique(prefix), on 10.<third>.0.0/24 (and
    fd<third>::/64 when `dual`), and the options of container c<i> on it: eth0 at host part i
    of each subnet."""
    br = unique(prefix)
    subnets = [(f"10.{third}.0.0/24", f"10.{third}.0.1")]
    if dual:
        subnets.append((f"fd{third}::/64", f"fd{third}::1"))
    net = network(br, br, subnets)

    def opts(i: int) -> dict[str, Any]:
        ips = [f"10.{third}.0.{i}"] + ([f"fd{third}::{i}"] if dual else [])
        return options(f"c{i}", [(net, {"interface_name": "eth0", "static_ips": ips})])

    return net, opts


def options(name: str, nets: list[tuple[dict[str, Any], dict[str, Any]]], ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "container_id": unique("", 64).ljust(64, "0")[:64],
        "container_name": name,
        "networks": {n["name"]: per for n, per in nets},
        "network_info": {n["name"]: copy.deepcopy(n) for n, _ in nets},
    }
    if ports:
        out["port_mappings"] = ports
    return out


def port(host_port: int, container_port: int, protocol: str = "tcp", host_ip: str = "", rng: int = 1) -> dict[str, Any]:
    return {"host_ip": host_ip, "container_port": container_port, "host_port": host_port, "range": rng, "protocol": protocol}


SERVER = r"""
import socket, sys, threading
fam = socket.AF_INET6
port0, count, proto, reply = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
socks = []
for p in range(port0, port0 + count):
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", p))
    if proto == "tcp":
        s.listen(16)
    socks.append(s)
def serve(s):
    while True:
        if proto == "tcp":
            c, _ = s.accept(); c.sendall(reply + b" " + str(s.getsockname()[1]).encode()); c.close()
        else:
            data, addr = s.recvfrom(2048); s.sendto(reply + b" " + str(s.getsockname()[1]).encode(), addr)
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = r"""
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
if proto == "tcp":
    s.connect((host, port)); print(s.recv(100).decode())
else:
    s.sendto(b"hi", (host, port)); print(s.recvfrom(100)[0].decode())
"""


def start_server(ns: Netns, port0: int, *, count: int = 1, proto: str = "tcp", reply: str = "hello") -> subprocess.Popen[str]:
    proc = ns.popen([str(VENV_BIN / "python"), "-c", SERVER, str(port0), str(count), proto, reply],
                    stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def request(ns: Netns, host: str, port: int, proto: str = "tcp") -> str:
    res = ns.run([str(VENV_BIN / "python"), "-c", CLIENT, host, str(port), proto], check=False, timeout=20)
    return res.stdout.strip() if res.returncode == 0 else f"FAILED: {res.stderr.strip()[-200:]}"


def ping(ns: Netns, addr: str) -> bool:
    return ns.run(["ping", "-c1", "-W2", addr], check=False).returncode == 0


def wait_for(pred: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def run_in_process(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any],
                   *, env_driver: str | None = None) -> tuple[int, str]:
    """burrow-netavark's `command` run in this process from inside `host` (no DNS): its exit
    code and output. nftables by flag, or `env_driver` by NETAVARK_FW (no flag), as Podman
    passes a driver choice."""
    from netns import netavark_cli
    from netns.nsenter import entered

    driver = [] if env_driver else ["--firewall-driver=nftables"]
    argv = ["--rootless=false", *driver, "--aardvark-binary=/nonexistent",
            "--config", str(config), command, ctr.path]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": ""}
    if env_driver:
        env |= {"NETAVARK_FW": env_driver, "RUST_LOG": "warn"}
    fd = os.open(host.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            out, err, code = netavark_cli.run(argv, json.dumps(opts).encode(), env)
    finally:
        os.close(fd)
    return code, out + err
