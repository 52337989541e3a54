"""Reference values: Trustee's sample RVPS message, expiry, per-workload scopes, persistence."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccpipe.stages.attest.errors import ReferenceValueInvalid
from ccpipe.stages.attest.rvps import FileReferenceValueStore, MemoryReferenceValueStore, sample_message

M1, M2 = "aa" * 48, "bb" * 48


class Clock:
    """A settable clock for expiry tests."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def trustee_message(values: dict[str, object]) -> dict[str, str]:
    """The message exactly as Trustee's documentation writes it (built by hand, not by our helper)."""
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload}


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryReferenceValueStore | FileReferenceValueStore:
    clock = Clock()
    if request.param == "memory":
        return MemoryReferenceValueStore(clock=clock)
    return FileReferenceValueStore(tmp_path / "rv", clock=clock)


def test_trustee_sample_message_registers_each_name(store: MemoryReferenceValueStore) -> None:
    names = store.register(trustee_message({"snp_launch_measurement": [M1, M2], "snp_bootloader": [10]}))
    assert sorted(names) == ["snp_bootloader", "snp_launch_measurement"]
    assert store.get("snp_launch_measurement") == [M1, M2]
    assert store.get("snp_bootloader") == [10]  # numbers stay numbers: Trustee's policy compares ints
    assert store.get("unknown") == []


def test_registering_again_replaces_the_values(store: MemoryReferenceValueStore) -> None:
    store.register(sample_message({"mr_td": [M1]}))
    store.register(sample_message({"mr_td": [M2]}))
    assert store.get("mr_td") == [M2]


def test_expired_values_are_never_returned(store: MemoryReferenceValueStore) -> None:
    clock: Clock = store._clock  # type: ignore[assignment]
    store.register(sample_message({"mr_td": [M1]}), expires_at=clock.now + timedelta(hours=1))
    assert store.get("mr_td") == [M1]
    clock.now += timedelta(hours=2)
    assert store.get("mr_td") == []
    assert "mr_td" not in store.values_for(None)


def test_default_expiry_is_twelve_months(store: MemoryReferenceValueStore) -> None:
    clock: Clock = store._clock  # type: ignore[assignment]
    store.register(sample_message({"mr_td": [M1]}))
    clock.now += timedelta(days=364)
    assert store.get("mr_td") == [M1]
    clock.now += timedelta(days=2)
    assert store.get("mr_td") == []


def test_one_workloads_values_do_not_authorise_another(store: MemoryReferenceValueStore) -> None:
    store.register(sample_message({"snp_launch_measurement": [M1]}), scope="wl-a")
    store.register(sample_message({"snp_launch_measurement": [M2]}), scope="wl-b")
    store.register(sample_message({"snp_bootloader": [10]}))
    assert store.values_for("wl-a") == {"snp_launch_measurement": [M1], "snp_bootloader": [10]}
    assert store.values_for("wl-b")["snp_launch_measurement"] == [M2]
    assert "snp_launch_measurement" not in store.values_for(None)
    assert "snp_launch_measurement" not in store.values_for("wl-c")
    assert store.get("snp_launch_measurement") == []


def test_scope_may_be_named_inside_the_message(store: MemoryReferenceValueStore) -> None:
    names = store.register(trustee_message({"scope/wl-a/init_data_digest": ["cd" * 32]}))
    assert names == ["scope/wl-a/init_data_digest"]
    assert store.get("init_data_digest", scope="wl-a") == ["cd" * 32]
    assert store.get("scope/wl-a/init_data_digest") == ["cd" * 32]
    assert store.values_for("wl-b") == {}


@pytest.mark.parametrize(
    "message",
    [
        {"version": "0.2.0", "type": "sample", "payload": base64.b64encode(b"{}").decode()},
        {"version": "0.1.0", "type": "swid", "payload": base64.b64encode(b"{}").decode()},
        {"version": "0.1.0", "type": "sample", "payload": "not base64!"},
        {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b"[1]").decode()},
        trustee_message({"x": [{"nested": 1}]}),
        trustee_message({"../escape": ["a"]}),
        "not json",
    ],
)
def test_malformed_messages_are_refused(store: MemoryReferenceValueStore, message: object) -> None:
    with pytest.raises(ReferenceValueInvalid):
        store.register(message)  # type: ignore[arg-type]
    assert store.values_for(None) == {}


def test_scope_cannot_escape_the_store_directory(tmp_path: Path) -> None:
    store = FileReferenceValueStore(tmp_path / "rv")
    with pytest.raises(ReferenceValueInvalid):
        store.register(sample_message({"mr_td": [M1]}), scope="../../etc")
    assert not (tmp_path / "etc").exists()


def test_file_store_survives_a_restart_and_shares_between_instances(tmp_path: Path) -> None:
    FileReferenceValueStore(tmp_path / "rv").register(sample_message({"mr_td": [M1]}), scope="wl-a")
    again = FileReferenceValueStore(tmp_path / "rv")
    assert again.values_for("wl-a") == {"mr_td": [M1]}
    leftovers = [p.name for p in (tmp_path / "rv").rglob(".*")]
    assert leftovers == []  # atomic writes leave no temporary files
    record = json.loads((tmp_path / "rv" / "scope" / "wl-a" / "mr_td.json").read_text())
    assert record["version"] == "0.1.0" and record["name"] == "mr_td" and record["expiration"].endswith("Z")
