"""Drive burrow-cni exactly as a CNI runtime does: env vars, config on stdin, inside a host netns."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.nsutil import VENV_BIN, Netns, unique

PLUGIN = VENV_BIN / "burrow-cni"
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BURROW_ENGINE": "off"}


@dataclass
class Reply:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class CniWorld:
    """A throwaway host netns, a network config, and private state/IPAM dirs."""

    host: Netns
    tmp: Path
    name: str = field(default_factory=lambda: unique("bn-net"))
    bridge: str = field(default_factory=lambda: unique("bn-br"))
    firewall: str = "nftables"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def data_dir(self) -> Path:
        return self.tmp / "ipam"

    def conf(self, version: str = "1.0.0", ranges: list[list[dict[str, str]]] | None = None,
             **extra: Any) -> dict[str, Any]:
        ipam = {
            "type": "host-local",
            "ranges": ranges or [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "dataDir": str(self.data_dir),
        }
        conf = {
            "cniVersion": version, "name": self.name, "type": "burrow-cni", "bridge": self.bridge,
            "isGateway": True, "ipMasq": True, "ipam": ipam, "stateDir": str(self.state_dir),
            "firewallDriver": self.firewall,
        }  # fmt: skip
        conf.update(extra)
        return conf

    def call(self, command: str, conf: dict[str, Any] | str | None, *, cid: str = "",
             netns: str = "", ifname: str = "eth0", args: str = "",
             env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Reply:  # fmt: skip
        full = {
            **BASE_ENV, **self.env, "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": "/usr/lib/cni",
            **(env or {}),
        }  # fmt: skip
        full = {k: v for k, v in full.items() if k not in drop and v != ""}
        stdin = conf if isinstance(conf, str) else json.dumps(conf) if conf is not None else ""
        res = self.host.run(["env", "-i", *(f"{k}={v}" for k, v in full.items()), str(PLUGIN)],
                            input=stdin, check=False)  # fmt: skip
        return Reply(res.returncode, res.stdout.strip(), res.stderr)

    def add(self, ctr: Netns, conf: dict[str, Any], cid: str, **kw: Any) -> dict[str, Any]:
        r = self.call("ADD", conf, cid=cid, netns=ctr.path, **kw)
        assert r.code == 0, f"ADD failed: {r.stdout} {r.stderr}"
        out: dict[str, Any] = r.json
        return out

    def delete(self, ctr: Netns | None, conf: dict[str, Any], cid: str, **kw: Any) -> None:
        r = self.call("DEL", conf, cid=cid, netns=ctr.path if ctr else "", **kw)
        assert r.code == 0 and r.stdout == "", f"DEL failed: {r.stdout} {r.stderr}"

    def held(self) -> dict[str, str]:
        """IPAM files: address -> owner line, as host-local writes them."""
        d = self.data_dir / self.name
        if not d.exists():
            return {}
        return {p.name: p.read_bytes().decode() for p in d.iterdir() if p.name[0].isdigit() or ":" in p.name}

    def ruleset(self) -> str:
        if self.firewall == "iptables":
            return self.host.run(["iptables-save"]).stdout + self.host.run(["ip6tables-save"]).stdout
        return self.host.run(["nft", "list", "ruleset"]).stdout


def cid() -> str:
    return unique("", 64).ljust(64, "0")[:64]


def run_out(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


# -- a conflist run as libcni runs it (the differential against the reference plugins) ------

REFERENCE_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@dataclass
class Chain:
    """A network config list run plugin by plugin the way libcni does: ADD in order, each
    plugin given the previous one's result as `prevResult`; DEL in reverse, and CHECK in
    order, each given the cached ADD result; `runtimeConfig` only to a plugin that declares
    the capability; the plugin found by its `type` in CNI_PATH. The runtime's cache is
    `self.cache` (container id, ifname) -> result."""

    host: Netns
    name: str
    plugins: list[dict[str, Any]]
    bin_dir: Path
    version: str = "1.0.0"
    more_bins: tuple[Path, ...] = ()  # CNI_PATH after bin_dir (plugins chained after ours)
    cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def plugin_conf(self, plugin: dict[str, Any], runtime: dict[str, Any],
                    prev: Any) -> dict[str, Any]:  # fmt: skip
        conf = {**plugin, "cniVersion": self.version, "name": self.name}
        caps = conf.get("capabilities") or {}
        rc = {k: v for k, v in runtime.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def exec(self, command: str, conf: dict[str, Any], *, cid: str = "", netns: str = "",
             ifname: str = "eth0", args: str = "") -> Reply:  # fmt: skip
        env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
               "CNI_IFNAME": ifname, "CNI_ARGS": args,
               "CNI_PATH": ":".join(map(str, (self.bin_dir, *self.more_bins)))}  # fmt: skip
        env = {k: v for k, v in env.items() if v != ""}
        binary = next((d / str(conf["type"]) for d in (self.bin_dir, *self.more_bins)
                       if (d / str(conf["type"])).exists()), self.bin_dir / str(conf["type"]))
        res = self.host.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(binary)],
                            input=json.dumps(conf), check=False)  # fmt: skip
        return Reply(res.returncode, res.stdout.strip(), res.stderr)

    def add(self, cid: str, netns: str, *, ifname: str = "eth0", args: str = "",
            runtime: dict[str, Any] | None = None) -> Reply:  # fmt: skip
        prev: Any = None
        reply = Reply(0, "", "")
        for plugin in self.plugins:
            reply = self.exec("ADD", self.plugin_conf(plugin, runtime or {}, prev), cid=cid,
                              netns=netns, ifname=ifname, args=args)  # fmt: skip
            if reply.code != 0:
                return reply
            prev = reply.json
        self.cache[(cid, ifname)] = prev
        return reply

    def delete(self, cid: str, netns: str, *, ifname: str = "eth0", args: str = "",
               runtime: dict[str, Any] | None = None) -> Reply:  # fmt: skip
        prev = self.cache.get((cid, ifname))
        for plugin in reversed(self.plugins):
            reply = self.exec("DEL", self.plugin_conf(plugin, runtime or {}, prev), cid=cid,
                              netns=netns, ifname=ifname, args=args)  # fmt: skip
            if reply.code != 0:
                return reply  # libcni stops at the first failing plugin
        self.cache.pop((cid, ifname), None)
        return Reply(0, "", "")

    def check(self, cid: str, netns: str, *, ifname: str = "eth0", args: str = "",
              runtime: dict[str, Any] | None = None) -> Reply:  # fmt: skip
        prev = self.cache.get((cid, ifname))
        for plugin in self.plugins:
            reply = self.exec("CHECK", self.plugin_conf(plugin, runtime or {}, prev), cid=cid,
                              netns=netns, ifname=ifname, args=args)  # fmt: skip
            if reply.code != 0:
                return reply
        return Reply(0, "", "")

    def network_verb(self, command: str, extra: dict[str, Any] | None = None) -> Reply:
        """GC or STATUS: every plugin, in order, without a container."""
        for plugin in self.plugins:
            reply = self.exec(command, {**self.plugin_conf(plugin, {}, None), **(extra or {})})
            if reply.code != 0:
                return reply
        return Reply(0, "", "")
