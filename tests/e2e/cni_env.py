"""Real CNI runtimes on burrow-cni: a private containerd world, and a local OCI image.

containerd (Debian's 1.6) runs inside a throwaway net+mount namespace (tests/nsutil.Netns) with
its own root, state and sockets under the test's tmp dir; `ctr` finds CNI configs in
/etc/cni/net.d and plugins in /opt/cni/bin (go-cni's fixed defaults), so inside that mount
namespace both are bind mounts of test-owned dirs. The plugin dir holds a logging wrapper that
execs burrow-cni and records each call, so tests can check what the runtime sent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.podman_env import build_rootfs_tar
from tests.nsutil import VENV_BIN, Netns, have

PLUGIN = VENV_BIN / "burrow-cni"
IMAGE = "docker.io/library/bn-busybox:latest"

WRAPPER = """\
#!/usr/bin/python3
# Logs each CNI call (env, stdin, reply) as one JSON file, then answers as the real plugin did.
import json, os, subprocess, sys, time
REAL, LOGDIR = {real!r}, {logdir!r}
stdin = sys.stdin.buffer.read()
p = subprocess.run([REAL], input=stdin, capture_output=True)
rec = dict(env={{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}, stdin=stdin.decode(),
           stdout=p.stdout.decode(), stderr=p.stderr.decode(), rc=p.returncode)
with open(os.path.join(LOGDIR, "%.6f-%d.json" % (time.time(), os.getpid())), "w") as f:
    json.dump(rec, f)
sys.stdout.buffer.write(p.stdout); sys.stderr.buffer.write(p.stderr)
sys.exit(p.returncode)
"""


def write_plugin_wrapper(bindir: Path, logdir: Path, name: str = "burrow-cni") -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    logdir.mkdir(parents=True, exist_ok=True)
    w = bindir / name
    w.write_text(WRAPPER.format(real=str(PLUGIN), logdir=str(logdir)))
    w.chmod(0o755)


def calls(logdir: Path) -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted(logdir.glob("*.json"))]


def build_oci_image(workdir: Path) -> Path:
    """An OCI image layout tar of the busybox-static rootfs, named IMAGE (no registry needed)."""
    out = workdir / "oci.tar"
    if out.exists():
        return out
    layer = build_rootfs_tar(workdir).read_bytes()
    ldig = hashlib.sha256(layer).hexdigest()
    cfg = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{ldig}"]},
    }).encode()  # fmt: skip
    cdig = hashlib.sha256(cfg).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{cdig}", "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{ldig}", "size": len(layer)}],
    }).encode()  # fmt: skip
    mdig = hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{mdig}",
        "size": len(manifest),
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest"},
    }]}).encode()  # fmt: skip
    with tarfile.open(out, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index),
                           (f"blobs/sha256/{ldig}", layer), (f"blobs/sha256/{cdig}", cfg),
                           (f"blobs/sha256/{mdig}", manifest)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def containerd_problem() -> str | None:
    if os.geteuid() != 0:
        return "environment: containerd e2e tests need root"
    for tool in ("containerd", "ctr", "runc", "busybox", "unshare", "nsenter"):
        if not have(tool):
            return f"environment: {tool} is not installed (scripts/install adds containerd)"
    if not PLUGIN.exists():
        return "environment: .venv is not built (scripts/install)"
    if not os.path.isdir("/etc/cni/net.d") or not os.path.isdir("/opt"):
        return "environment: /etc/cni/net.d or /opt is missing (bind-mount targets)"
    return None


class ContainerdWorld:
    """containerd + ctr in a private net+mount namespace, CNI conf and plugins test-owned."""

    def __init__(self, base: Path, conflist: dict[str, Any]) -> None:
        self.base = base
        self.logdir = base / "cni-log"
        self.sock = base / "containerd.sock"
        self.ns = Netns()
        self.daemon: subprocess.Popen[str] | None = None
        try:
            self._setup(conflist)
        except BaseException:
            self.close()
            raise

    def _setup(self, conflist: dict[str, Any]) -> None:
        b = self.base
        (b / "net.d").mkdir(parents=True)
        (b / "net.d" / "10-burrow.conflist").write_text(json.dumps(conflist))
        bindir = b / "opt" / "cni" / "bin"
        write_plugin_wrapper(bindir, self.logdir)
        (bindir / "loopback").symlink_to("/usr/lib/cni/loopback")
        (b / "config.toml").write_text(
            f'version = 2\nroot = "{b}/root"\nstate = "{b}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n[ttrpc]\n  address = "{b}/containerd.ttrpc"\n'
        )
        # /run/containerd too: the runc shim keeps its containers' state in the fixed
        # /run/containerd/runc/<namespace>/<name>, shared by every containerd on the machine;
        # two test runs at once (helpers' parallel suites) then met each other's "bn-b"
        # ("container with given ID already exists", or an exec in the other world's container).
        (b / "run-containerd").mkdir()
        self.ns.run(["sh", "-c", f"mount --bind {b}/net.d /etc/cni/net.d && mount --bind {b}/opt /opt"
                     f" && mkdir -p /run/containerd && mount --bind {b}/run-containerd /run/containerd"])
        log = open(b / "containerd.log", "w")  # noqa: SIM115 (the daemon's stdout for its life)
        self.daemon = self.ns.popen(["containerd", "--config", str(b / "config.toml")],
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if time.monotonic() > deadline or self.daemon.poll() is not None:
                raise AssertionError(f"containerd did not start: {(b / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.05)
        self.ctr("image", "import", "--snapshotter", "native", str(build_oci_image(b)))

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.sock), "-n", "bn", *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.ns.run(self.ctr_argv(*args), check=check, timeout=timeout)

    def run_foreground(self, name: str, *cmd: str) -> subprocess.Popen[str]:
        """`ctr run --cni` in the foreground: ctr itself calls CNI DEL when the task exits."""
        return self.ns.popen(self.ctr_argv("run", "--cni", "--snapshotter", "native", IMAGE, name, *cmd),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip

    def wait_running(self, name: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
        """The task runs (and ctr's CNI ADD is done); a ctr that exited says why it failed."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline and proc.poll() is None:
            out = self.ctr("task", "ls", check=False).stdout
            if any(line.split()[:1] == [name] and "RUNNING" in line for line in out.splitlines()):
                if any(c["env"].get("CNI_CONTAINERID", "").endswith(f"-{name}") for c in calls(self.logdir)):
                    return
            time.sleep(0.1)
        err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        raise AssertionError(f"task {name} is not running (ctr rc {proc.poll()}: {err[-1000:]}): {out}\n"
                             f"CNI calls: {calls(self.logdir)}")

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ctr task exec`, its output read back from files in the container's rootfs.

        ctr (1.6) loses an exec's stdout now and then under load: rc 0 and nothing printed,
        seen for wget and nslookup alike in loops of this test at load 10+. The command's
        own output, written to a file in the container, is what the test checks instead.
        """
        exec_id = f"x{time.monotonic_ns()}"
        out = f"/.bn-{exec_id}"
        script = 'o=$1; shift; "$@" >"$o.out" 2>"$o.err"'
        res = self.ctr("task", "exec", "--exec-id", exec_id, name, "sh", "-c", script, "sh", out, *cmd,
                       check=False)  # fmt: skip
        rootfs = self.base / "state" / "io.containerd.runtime.v2.task" / "bn" / name / "rootfs"
        stdout, stderr = (self.ns.run(["cat", f"{rootfs}{out}.{k}"], check=False).stdout for k in ("out", "err"))
        done = subprocess.CompletedProcess(res.args, res.returncode, stdout, stderr + res.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"exec {cmd} in {name} failed (rc {done.returncode}): {stdout} {done.stderr}")
        return done

    def close(self) -> None:
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                out = self.ctr("task", "ls", "-q", check=False, timeout=20).stdout.split()
                for t in out:
                    self.ctr("task", "kill", "-s", "KILL", t, check=False, timeout=20)
        except Exception:
            pass
        self.ns.close()  # kills containerd, shims and containers inside the namespace
        subprocess.run(["umount", "-R", str(self.base / "root")], capture_output=True, check=False)
