"""pasta (passt), attached from the host with `--userns`/`--netns` and stopped by pid.

pasta configures the namespace and then daemonizes: the launcher's exit status and output are
the readiness signal, and `--pid` gives the daemon's pid. pasta has no exit-fd and (spec §2.3.5)
stays alive when the holder dies, so a tiny tether process watches both pidfds.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack

import pexpect

from netns.errors import BurrowError
from rootless.connectors.base import CONNECTOR_MTU, ConnectorInfo, masquerade_script
from rootless.connectors.errors import explain
from rootless.procs import ProcRef
from rootless.userns import Holder


class Pasta:
    name = "pasta"

    def start(self, holder: Holder, *, host_loopback: bool, timeout: float = 10.0
              ) -> ConnectorInfo:
        exe = shutil.which("pasta")
        if exe is None:
            raise BurrowError("start pasta: not installed; `apt-get install passt` or use "
                              "`--connector slirp4netns`")
        pidfile = holder.paths.pasta_pid
        pidfile.unlink(missing_ok=True)
        # No automatic port forwarding in either direction: ports go through our forwarder.
        args = ["--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
                "-m", str(CONNECTOR_MTU), "--userns", holder.userns_path,
                "--netns", holder.netns_path, "--pid", str(pidfile)]
        if not host_loopback:
            # Without map-gw, TCP to the gateway is not remapped to the host's loopback.
            args.append("--no-map-gw")
        child = pexpect.spawn(exe, args, encoding="utf-8", codec_errors="replace",
                              ignore_sighup=True, timeout=timeout, echo=False,
                              preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
        idx = child.expect([pexpect.EOF, pexpect.TIMEOUT])
        output = child.before or ""
        child.close(force=True)
        if idx == 1:
            raise explain(self.name, output + f" (not configured within {timeout:.0f} s)")
        if child.exitstatus != 0:
            raise explain(self.name, output)
        ref = self._daemon(pidfile)
        with ExitStack() as undo:
            undo.callback(ref.stop, grace=1.0)
            tether = subprocess.Popen(
                [sys.executable, "-m", "rootless.connectors.tether", str(holder.pid),
                 str(ref.pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, cwd="/",
            )
            undo.callback(tether.kill)
            tref = ProcRef.of(tether.pid)
            interface, gw4, gw6 = self._route(holder)
            info = ConnectorInfo(self.name, ref, interface, gw4 if host_loopback else None,
                                 gw6 if host_loopback else None, host_loopback,
                                 (tref,) if tref else ())
            holder.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra\n"
                        + masquerade_script(interface)],
                       what="configure pasta link")
            undo.pop_all()
        return info

    @staticmethod
    def _daemon(pidfile: object) -> ProcRef:
        from pathlib import Path

        path = Path(str(pidfile))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                ref = ProcRef.of(int(path.read_text().strip()))
                if ref is not None:
                    return ref
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.005)
        raise BurrowError(f"start pasta: no pid in {path}")

    @staticmethod
    def _route(holder: Holder) -> tuple[str, str | None, str | None]:
        """pasta copies the host's interface name and gateways; read them back."""
        res = holder.run(["sh", "-c", "ip -j route show default; echo; "
                          "ip -j -6 route show default"], what="read pasta routes")
        parts = [p for p in res.stdout.split("\n") if p.strip()]
        v4 = json.loads(parts[0]) if parts else []
        v6 = json.loads(parts[1]) if len(parts) > 1 else []
        if not v4 and not v6:
            raise BurrowError("start pasta: no default route in the namespace; the host "
                              "needs a default route for pasta to copy")
        dev = (v4 or v6)[0].get("dev", "eth0")
        gw4 = v4[0].get("gateway") if v4 else None
        gw6 = v6[0].get("gateway") if v6 else None
        return str(dev), gw4, gw6
