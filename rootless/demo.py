"""`burrow demo`: the README's first command, end to end, cleaning up after itself."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from netns.errors import BurrowError
from rootless import sandbox
from rootless.backend import World
from rootless.ports.spec import PortSpec
from rootless.ports.userspace import addresses

PY = "/usr/bin/python3" if sys.executable else "python3"
FETCH = (
    "import socket,sys,urllib.request\n"
    "fam={'4':socket.AF_INET,'6':socket.AF_INET6}[sys.argv[2]]\n"
    "ip=socket.getaddrinfo(sys.argv[1],80,fam,socket.SOCK_STREAM)[0][4][0]\n"
    "url='http://'+(('['+ip+']') if ':' in ip else ip)+'/'\n"
    "body=urllib.request.urlopen(url,timeout=5).read().decode().strip()\n"
    "print(f'  {sys.argv[1]} -> {ip} -> {body!r}')\n"
)


# The page is served from memory: a file under /tmp would be left behind, and would belong to
# the first user who ran the demo.
SERVE = (
    "import http.server,socket,sys\n"
    "body=('hello from '+sys.argv[1]+'\\n').encode()\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length',str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self,*a): pass\n"
    "class S(http.server.ThreadingHTTPServer):\n"
    "    address_family=socket.AF_INET6\n"
    "    def server_bind(self):\n"
    "        self.socket.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)  # v4 and v6\n"
    "        super().server_bind()\n"
    "S(('::',80),H).serve_forever()\n"
)


def _free_port() -> int:
    for port in (8080, 18080):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step(text: str) -> None:
    print(text, flush=True)


def run(w: World) -> int:
    web, client = "demo-web", "demo-client"
    port = _free_port()
    server: subprocess.Popen[bytes] | None = None
    made: list[str] = []
    try:
        _step(f"1. sandbox {web} on the default dual-stack network, port 127.0.0.1:{port} -> 80")
        rec = sandbox.create(w, web, [], PortSpec.parse(f"127.0.0.1:{port}:80"), [],
                             w.network_mtu)
        made.append(web)
        v4, v6 = addresses(rec.to_json())
        _step(f"   {web}: {v4} {v6}")
        _step(f"2. sandbox {client}")
        # Only what the demo made is removed: a `demo-client` of the user's that was there
        # first (create refuses it) must survive the clean-up.
        sandbox.create(w, client, [], [], [], w.network_mtu)
        made.append(client)
        _step(f"3. HTTP server in {web} on [::]:80")
        server = subprocess.Popen(sandbox.exec_argv(w, web, [PY, "-c", SERVE, web]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(w, client, web)
        _step(f"4. {client} reaches {web} by name over IPv4 and IPv6")
        for fam in ("4", "6"):
            res = subprocess.run(sandbox.exec_argv(w, client, [PY, "-c", FETCH, web, fam]),
                                 capture_output=True, text=True, timeout=30)
            if res.returncode:
                raise BurrowError(f"demo: {client} -> {web} over IPv{fam} failed: "
                                  f"{res.stderr.strip().splitlines()[-1:]}")
            print(res.stdout, end="")
        _step(f"5. the host reaches {web} through the published port")
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        except OSError as e:
            raise BurrowError(f"demo: the host -> 127.0.0.1:{port} -> {web} failed: {e}; "
                              f"see `burrow status` and the logs in {w.paths.log_dir}") from e
        _step(f"  127.0.0.1:{port} -> {body.decode().strip()!r}")
        _step("demo OK")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        for name in reversed(made):
            try:
                sandbox.remove(w, name)
            except BurrowError as e:
                print(f"cleanup: {e}", file=sys.stderr)
        _step("cleaned up")


def _wait_port(w: World, client: str, web: str) -> None:
    probe = (f"import socket,time\nfor _ in range(100):\n try:\n"
             f"  socket.create_connection(('{web}',80),1).close();break\n"
             f" except OSError: time.sleep(0.05)\n")
    subprocess.run(sandbox.exec_argv(w, client, [PY, "-c", probe]), timeout=30,
                   capture_output=True)
    time.sleep(0.05)
