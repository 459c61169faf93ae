"""The rootful engine demo: what Podman would do, in throwaway namespaces, step by step.

A fresh "host" netns (never the machine's own), two "container" netns, one dual-stack network:
the server container publishes port 8080 -> 80; the client reaches it by name over IPv4 and
IPv6, and the host reaches it through the published port. Everything is torn down at the end.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rootless.cli.output import bold  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

HTTP_SERVER = r"""
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from web1, you are {self.client_address[0]}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.HTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); super().server_bind()
s = S(("::", 80), H); print("ready", flush=True); s.serve_forever()
"""

FETCH = r"""
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())
"""


def step(text: str) -> None:
    print("\n" + bold(f"==> {text}"), flush=True)  # plain when piped or with NO_COLOR


def main() -> int:
    dns_bin = shutil.which("burrow-dns", path=str(VENV_BIN)) or "/usr/lib/podman/aardvark-dns"
    netavark = str(VENV_BIN / "burrow-netavark")
    work = Path(tempfile.mkdtemp(prefix="burrow-demo-"))
    host, web, cli = Netns(), Netns(), Netns()
    net = {
        "name": "demo", "id": secrets.token_hex(32), "driver": "bridge", "network_interface": "burrow-demo0",
        "subnets": [{"subnet": "10.89.77.0/24", "gateway": "10.89.77.1"},
                    {"subnet": "fd89:77::/64", "gateway": "fd89:77::1"}],
        "ipv6_enabled": True, "internal": False, "dns_enabled": True, "ipam_options": {"driver": "host-local"},
    }  # fmt: skip

    def opts(name: str, v4: str, v6: str, ports: list[dict[str, object]] | None = None) -> dict[str, object]:
        o: dict[str, object] = {
            "container_id": secrets.token_hex(32), "container_name": name,
            "networks": {"demo": {"interface_name": "eth0", "static_ips": [v4, v6], "aliases": [f"{name}-alias"]}},
            "network_info": {"demo": net},
        }  # fmt: skip
        if ports:
            o["port_mappings"] = ports
        return o

    o_web = opts("web1", "10.89.77.10", "fd89:77::10",
                 [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp"}])
    o_cli = opts("client", "10.89.77.11", "fd89:77::11")

    def nv(command: str, ctr: Netns, o: dict[str, object]) -> str:
        argv = [netavark, "--config", str(work), "--rootless=false", f"--aardvark-binary={dns_bin}", command, ctr.path]
        print(f"$ burrow-netavark ... {command} {ctr.path}  (JSON on stdin)")
        res = host.run(argv, input=json.dumps(o), check=False)
        if res.returncode != 0:
            raise SystemExit(f"burrow-netavark {command} failed: {res.stdout}{res.stderr}")
        return res.stdout.strip()

    try:
        step("setup: web1 on network 'demo' (10.89.77.0/24 + fd89:77::/64), publishing 8080->80")
        t0 = time.monotonic()
        print(nv("setup", web, o_web))
        print(f"   ({(time.monotonic() - t0) * 1000:.0f} ms, including the first start of the engine and DNS)")
        step("setup: client on the same network")
        t0 = time.monotonic()
        print(nv("setup", cli, o_cli))
        print(f"   ({(time.monotonic() - t0) * 1000:.0f} ms)")
        server = web.popen([str(VENV_BIN / "python"), "-c", HTTP_SERVER], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        step("the bridge, seen in the host netns")
        print(host.run(["ip", "-br", "addr", "show", "burrow-demo0"]).stdout.strip())
        step("client resolves web1 through the DNS server on the gateway")
        for qtype in ("A", "AAAA"):
            out = cli.run(["dig", "+short", "@10.89.77.1", "web1.dns.podman", qtype], check=False).stdout.strip()
            print(f"   web1 {qtype}: {out}")
        step("client -> web1 over IPv4 and IPv6 (HTTP)")
        for url in ("http://10.89.77.10/", "http://[fd89:77::10]/"):
            res = cli.run([str(VENV_BIN / "python"), "-c", FETCH, url], check=False)
            print(f"   {url}: {res.stdout.strip() or res.stderr.strip()[-200:]}")
        step("host -> published port 127.0.0.1:8080 and [fd89:77::1]:8080")
        for url in ("http://127.0.0.1:8080/", "http://[fd89:77::1]:8080/"):
            res = host.run([str(VENV_BIN / "python"), "-c", FETCH, url], check=False)
            print(f"   {url}: {res.stdout.strip() or res.stderr.strip()[-200:]}")
        step("teardown both containers")
        nv("teardown", cli, o_cli)
        nv("teardown", web, o_web)
        left = host.run(["ip", "-br", "link"]).stdout.strip()
        print(f"   links left in the host netns: {left.split()[0]} (only loopback)")
        print("\nDemo complete.")
        return 0
    finally:
        for ns in (web, cli, host):
            ns.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
