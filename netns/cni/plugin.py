"""`burrow-cni`, the CNI front door: environment + stdin config in, result or error JSON out.

ADD: parse and check everything -> allocate addresses (host-local style, on disk) -> one engine
setup (bridge, veth, addresses, routes, port DNAT, DNS names) -> CNI result. A failed setup
gives back only the addresses this call reserved. DEL: the addresses this (container, ifname)
holds -> engine teardown (also when the netns is gone) -> release; nothing held means nothing
to do; the addresses are those the ADD's attachment record names (their files alone are read),
or, without them, every allocation file's. CHECK compares prevResult with the kernel and IPAM
(the held addresses found as DEL finds them).
GC tears down and releases every allocation not in `cni.dev/valid-attachments`, from one read
of every file. STATUS says whether an ADD could succeed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

from netns.cni import attachments, hostlocal, result, translate
from netns.cni import config as C
from netns.cni import errors as E
from netns.cni.config import Env, NetConf
from netns.cni.errors import CniError
from netns.cni.transport import Engine
from netns.errors import BurrowError
from netns.schema import IPAddress


def engine_for(conf: NetConf, env: Mapping[str, str]) -> Engine:
    return Engine(
        state_dir=conf.state_dir,
        dns_binary=conf.dns_binary,
        firewall_driver=conf.firewall_driver or env.get("NETAVARK_FW") or None,
        env=env,
    )


def version_reply(stdin: bytes) -> str:
    version = C.LATEST
    if stdin.strip():
        asked = C.load_json(stdin).get("cniVersion")
        if isinstance(asked, str) and asked in C.SUPPORTED_VERSIONS:
            version = asked
    return json.dumps({"cniVersion": version, "supportedVersions": list(C.SUPPORTED_VERSIONS)})


# -- ADD ---------------------------------------------------------------------------------


def add(env: Env, conf: NetConf, environ: Mapping[str, str]) -> str:
    # Everything per container is parsed before the first address is reserved.
    requested = C.requested_ips(env, conf)
    mac, aliases = C.requested_mac(env, conf), C.aliases(env, conf)
    ports, name = C.port_mappings(conf), C.container_name(env)
    store = hostlocal.Store(conf.data_dir, conf.name)
    key = (conf.state_dir, conf.name, env.container_id, env.ifname)
    # The record is written before any address is reserved, so without one this (container,
    # ifname) holds none, and the allocation need not read every allocation file to find
    # out (netns/cni/hostlocal.py). Until the addresses are known it names none, and a DEL
    # then looks at every file: a crash in between leaks nothing.
    rec = attachments.load(*key)
    first = rec is None
    if rec is None or rec.ips is not None:
        kept = rec or attachments.Record(name, ports)
        attachments.save(*key, dataclasses.replace(kept, ips=None))
    try:
        with store.locked():
            ips, new = hostlocal.allocate(store, conf.range_sets, (env.container_id, env.ifname),
                                          requested, may_hold=not first)
    except BaseException:
        if first:
            attachments.remove(*key)
        raise
    # A repeated ADD (same container and ifname, nothing newly reserved) must not replace
    # the record the first ADD left (only say which addresses it holds), nor remove it when
    # it fails.
    fresh = bool(new) or first
    try:
        opts = translate.options(env, conf, ips, name=name, mac=mac, aliases=aliases, ports=ports)
        kept = attachments.Record(name, ports) if fresh or rec is None else rec
        attachments.save(*key, dataclasses.replace(kept, ips=ips))
        status, host = engine_for(conf, environ).setup(opts, env.netns, conf.bridge)
    except BaseException:
        with store.locked():
            store.release(new)
        if fresh:
            attachments.remove(*key)
        raise
    return json.dumps(result.render(conf, status, env.ifname, env.netns, host))


# -- DEL, GC -----------------------------------------------------------------------------


def _held_view(conf: NetConf, held: list[IPAddress]) -> tuple[NetConf, tuple[IPAddress, ...]]:
    """The config narrowed to the range sets that hold one of `held`, and those addresses."""
    sets, ips = [], []
    for rs in conf.range_sets:
        ip = next((h for h in held if any(h in r for r in rs)), None)
        if ip is not None:
            sets.append(rs)
            ips.append(ip)
    return dataclasses.replace(conf, range_sets=tuple(sets)), tuple(ips)


def release(env: Env, conf: NetConf, environ: Mapping[str, str], netns: str | None,
            found: Sequence[IPAddress] | None = None) -> None:
    """Tear down and release what (container, ifname) holds; nothing held is success.

    Where its addresses are: `found` (GC's one scan), else those the ADD's attachment record
    names (one file read each), else (no record, or one whose ADD never got to name them)
    every allocation file is read, as host-local's ReleaseByID does."""
    owner = (env.container_id, env.ifname)
    store = hostlocal.Store(conf.data_dir, conf.name)
    rec = attachments.load(conf.state_dir, conf.name, env.container_id, env.ifname)
    known = found if found is not None else rec.ips if rec is not None else None
    with store.locked():
        held = store.owned(*owner) if known is None else store.holds(owner, known)
    view, ips = _held_view(conf, held)
    if ips:
        # The runtime's portMappings if it sent them, else those the ADD saved.
        ports = C.port_mappings(conf) or (rec.ports if rec else ())
        name = rec.name if rec else C.container_name(env)
        opts = translate.options(env, view, ips, name=name, mac=None, aliases=(), ports=ports)
        # A failure keeps the addresses: the runtime retries DEL, which must find them again.
        engine_for(view, environ).teardown(opts, netns)
    with store.locked():
        store.release(store.holds(owner, held))  # still ours: the lock was let go meanwhile
    attachments.remove(conf.state_dir, conf.name, env.container_id, env.ifname)


def gc(conf: NetConf, environ: Mapping[str, str]) -> None:
    """Release every attachment not in `cni.dev/valid-attachments`, from one scan of the
    allocation files (not one per stale owner)."""
    valid = set(conf.valid_attachments or ())
    valid_ids = {cid for cid, ifname in valid if not ifname}
    store = hostlocal.Store(conf.data_dir, conf.name)
    with store.locked():
        allocated = store.by_owner()
    stale: dict[tuple[str, str], list[IPAddress]] = {}
    for (cid, ifname), ips in allocated.items():
        if (cid, ifname) in valid or cid in valid_ids or (ifname == "" and any(c == cid for c, _ in valid)):
            continue
        # A file of an old host-local (the id alone) goes with that container's eth0.
        stale.setdefault((cid, ifname or "eth0"), []).extend(ips)
    errors: list[str] = []
    for (cid, ifname), ips in sorted(stale.items()):
        try:
            release(Env("DEL", cid, "", ifname, {}, ()), conf, environ, None, found=ips)
        except (BurrowError, CniError) as exc:
            errors.append(f"{cid}/{ifname}: {exc}")
    if errors:
        raise CniError(E.ENGINE_FAILURE, "GC could not remove every stale attachment", "; ".join(errors))


# -- CHECK, STATUS -----------------------------------------------------------------------


def check_cmd(env: Env, conf: NetConf) -> None:
    from netns.cni import check  # execs `ip`: imported only for CHECK

    if conf.cni_version.startswith("0.3"):
        raise CniError(E.INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later",
                       f"the config says {conf.cni_version}")  # fmt: skip
    expected = result.prev_addresses(conf, env.ifname)
    expected_routes = result.prev_routes(conf)
    store = hostlocal.Store(conf.data_dir, conf.name)
    owner = (env.container_id, env.ifname)
    # As DEL: the files of the addresses the ADD's record names, else (no record, or one that
    # names none) every file. A scan on every CHECK grew with the network's containers.
    rec = attachments.load(conf.state_dir, conf.name, *owner)
    with store.locked():
        found = store.owned(*owner) if rec is None or rec.ips is None else store.holds(owner, rec.ips)
    held = {str(ip) for ip in found}
    if not held:
        raise CniError(E.CHECK_FAILED, f"container {env.container_id} holds no address on {conf.name}")
    mac, addrs = check.interface(env.netns, env.ifname)
    check.compare(expected, mac, addrs, held)
    check.compare_routes(expected_routes, check.routes(env.netns))
    check.bridge_exists(conf.bridge)


def status_cmd(conf: NetConf) -> None:
    store = hostlocal.Store(conf.data_dir, conf.name)
    try:
        os.makedirs(conf.state_dir, mode=0o700, exist_ok=True)
        with store.locked():
            free = [hostlocal.free_count(store, rs) for rs in conf.range_sets]
    except (OSError, CniError, BurrowError) as exc:
        raise CniError(E.NOT_AVAILABLE, f"state directories are not usable: {exc}") from None
    for rs, n in zip(conf.range_sets, free, strict=True):
        if n <= 0:
            raise CniError(E.NOT_AVAILABLE, f"no free addresses left in {rs[0].subnet}")


# -- the front door ----------------------------------------------------------------------


def dispatch(env: Env, conf: NetConf, environ: Mapping[str, str]) -> str:
    if env.command == "ADD":
        return add(env, conf, environ)
    if env.command == "DEL":
        release(env, conf, environ, env.netns or None)
    elif env.command == "CHECK":
        check_cmd(env, conf)
    elif env.command == "GC":
        gc(conf, environ)
    elif env.command == "STATUS":
        status_cmd(conf)
    return ""


def run(environ: Mapping[str, str], stdin: bytes) -> tuple[str, int]:
    """One CNI call: (stdout, exit code). Never raises."""
    version = C.LATEST
    try:
        env = C.parse_env(environ)
        if env.command == "VERSION":
            return version_reply(stdin), 0
        obj = C.load_json(stdin)
        asked = obj.get("cniVersion")
        if isinstance(asked, str) and asked in C.SUPPORTED_VERSIONS:
            version = asked
        return dispatch(env, C.parse_conf(obj), environ), 0
    except CniError as exc:
        return exc.to_json(version), 1
    except BurrowError as exc:
        return CniError(E.ENGINE_FAILURE, str(exc)).to_json(version), 1
    except Exception as exc:  # a bug must still answer in the spec's error format
        import traceback

        traceback.print_exc()
        return CniError(E.ENGINE_FAILURE, f"internal error: {exc!r}").to_json(version), 1


def serve(stdin: bytes, env: Mapping[str, str]) -> tuple[str, str, int]:
    """One CNI call in the warm engine, sent by `netns.cni.client`: (stdout, stderr, code)."""
    import time

    started = time.monotonic()
    # The engine is the one place to run it: never hand it on to an engine again.
    out, code = run({**env, "BURROW_ENGINE": "off"}, stdin)
    err = ""
    if env.get("BURROW_ENGINE_STATS"):
        err = f"burrow-cni: engine-ms={1000 * (time.monotonic() - started):.1f}\n"
    return (out + "\n" if out else ""), err, code
