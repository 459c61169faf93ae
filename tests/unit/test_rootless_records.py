"""Pure parts of the rootless side: names at the store boundary, typed records, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.errors import BurrowError
from rootless.paths import StatePaths
from rootless.ports.spec import PortSpec
from rootless.procs import ProcRef
from rootless.records import Attachment, SandboxRecord, WorldRecord
from rootless.settings import Settings
from rootless.store import Store


def _store(tmp_path: Path) -> Store:
    return Store(StatePaths(tmp_path / "burrow").ensure())


@pytest.mark.parametrize("bad", ["../sandboxes/victim", "..", "a/b", "/etc/passwd", "", ".x",
                                 "x\ny", "a" * 64])
def test_store_refuses_path_names(tmp_path: Path, bad: str) -> None:
    store = _store(tmp_path)
    victim = store.paths.sandboxes_dir / "victim.json"
    victim.write_text(json.dumps({"name": "victim"}))
    for call in (store.network, store.delete_network, store.sandbox, store.delete_sandbox):
        with pytest.raises(BurrowError, match="letters, digits|limit is|empty"):
            call(bad)
    assert victim.exists()  # `network rm ../sandboxes/victim` once deleted this


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=70))
def test_no_name_reaches_outside_its_directory(name: str) -> None:
    paths = StatePaths(Path("/nonexistent/burrow"))
    store = Store(paths)
    try:
        path = store.file(name, ".json")
    except BurrowError:
        return
    assert path.parent == paths.sandboxes_dir and "/" not in name and name[0] != "."


def test_sandbox_record_round_trip() -> None:
    rec = SandboxRecord(
        name="web", id="ab" * 32,
        networks=(("burrow", Attachment("eth0", ("10.88.0.2", "fd88::2"), ("w",), None)),
                  ("other", Attachment("eth1", ("10.89.0.5",), (), "92:d0:c6:0a:00:10"))),
        ports=tuple(PortSpec.parse("127.0.0.1:8080:80")), dns=("1.1.1.1",), created="1970-01-01T00:00:01Z",
        state="running", creator=None, netns="/x/netns/web", world=ProcRef(10, 20),
        status={"burrow": {"dns_server_ips": ["10.88.0.1"]}}, extra={"future": 1})
    data = json.loads(json.dumps(rec.to_json()))
    assert data["networks"]["burrow"]["static_ips"] == ["10.88.0.2", "fd88::2"]
    assert data["future"] == 1
    back = SandboxRecord.from_json(data)
    assert back == rec and back.network_names == ("burrow", "other")
    assert back.ips == ["10.88.0.2", "fd88::2", "10.89.0.5"]


def test_records_reject_wrong_shapes() -> None:
    with pytest.raises(BurrowError):
        SandboxRecord.from_json({"name": "x", "networks": []})
    with pytest.raises(BurrowError):
        SandboxRecord.from_json({"name": "x", "networks": {"n": {"static_ips": "1.2.3.4"}}})
    assert WorldRecord.from_json({"holder": "nope"}) is None
    w = WorldRecord(ProcRef(5, 6), 4, True, 1.0, "pasta", True)
    assert WorldRecord.from_json(json.loads(json.dumps(w.to_json()))) == w


def test_settings_read_once_and_checked() -> None:
    s = Settings.from_env({"BURROW_STATE_DIR": "/tmp/x", "BURROW_CONNECTOR": "pasta",
                           "BURROW_DEBUG": "1", "BURROW_ENGINE_LOG": "debug",
                           "BURROW_PODMAN_CONF_DIR": "/c", "BURROW_PODMAN_HELPER_DIR": "/h"})
    assert s == Settings(Path("/tmp/x"), "pasta", True, "debug", "/c", "/h", None)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(BurrowError, match="relative"):
        Settings.from_env({"BURROW_STATE_DIR": "state"})


class _Rt:
    def __init__(self, world_id: ProcRef | None) -> None:
        self.world_id = world_id


def test_sandbox_state_sees_a_dead_world() -> None:
    from rootless.status import sandbox_state

    rec = SandboxRecord("s", "id", (), state="running", world=ProcRef(7, 70))
    assert sandbox_state(rec, _Rt(ProcRef(7, 70))) == "running"  # type: ignore[arg-type]
    assert sandbox_state(rec, _Rt(ProcRef(8, 80))) == "lost"  # type: ignore[arg-type]
    assert sandbox_state(rec, None) == "lost"  # no world runs at all
    rootful = rec.replace(world=None)
    assert sandbox_state(rootful, _Rt(None)) == "running"  # type: ignore[arg-type]
    assert sandbox_state(rec.replace(state="creating"), None) == "creating"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_network_flag_parse_is_total(text: str) -> None:
    """`--network` input either parses into safe parts or is refused with a BurrowError."""
    from rootless.sandbox import Attach

    try:
        att = Attach.parse(text)
    except BurrowError:
        return
    for part in (att.network, *att.aliases):
        assert part and "/" not in part and part[0].isalnum() and len(part) <= 63
    assert att.mac is None or len(att.mac) == 17
