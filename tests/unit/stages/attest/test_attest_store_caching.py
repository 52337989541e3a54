"""File-backed stores cache what they parsed, yet every process sees another's writes at once.

Two store instances on one directory stand for two processes. Files written in a test are
younger than the racy window (they are always re-read), so most tests move the cache's clock
past it: what is then checked is the stat signature (a rename gives a new inode even when the
size and mtime are forced equal).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccpipe.stages.attest import stat_cache
from ccpipe.stages.attest.policy_store import FilePolicyStore
from ccpipe.stages.attest.rvps import FileReferenceValueStore, sample_message

LATER = 10_000_000_000


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file looks older than the racy window: only signatures decide."""
    real = stat_cache._now_ns
    monkeypatch.setattr(stat_cache, "_now_ns", lambda: real() + LATER)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths opened by the caches (what a cache hit avoids)."""
    opened: list[str] = []
    real_open = open

    def counting_open(path: str, *a: object, **k: object) -> object:
        opened.append(str(path))
        return real_open(path, *a, **k)  # type: ignore[call-overload]

    monkeypatch.setattr(stat_cache, "open", counting_open, raising=False)
    return opened


def same_size_and_mtime(path: Path, like: os.stat_result) -> None:
    """Force ``path``'s mtime to ``like``'s: a write within one timestamp tick."""
    os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns))


def test_reference_values_are_read_once_then_from_the_cache(tmp_path: Path, settled: None, reads: list[str]) -> None:
    store = FileReferenceValueStore(tmp_path)
    store.register(sample_message({"m": ["aa"]}), scope="wl")
    for _ in range(5):
        assert store.values_for("wl") == {"m": ["aa"]}
    assert len(reads) == 1


def test_a_value_replaced_by_another_process_is_seen_even_within_one_tick(tmp_path: Path, settled: None) -> None:
    a, b = FileReferenceValueStore(tmp_path), FileReferenceValueStore(tmp_path)
    a.register(sample_message({"m": ["aa"]}), scope="wl")
    path = tmp_path / "scope" / "wl" / "m.json"
    before = path.stat()
    assert b.get("m", scope="wl") == ["aa"]  # cached by b
    a.register(sample_message({"m": ["bb"]}), scope="wl")  # same size: only the inode tells
    same_size_and_mtime(path, before)
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    assert b.get("m", scope="wl") == ["bb"]
    assert b.values_for("wl") == {"m": ["bb"]}


def test_names_added_or_removed_by_another_process_are_seen(tmp_path: Path, settled: None) -> None:
    a, b = FileReferenceValueStore(tmp_path), FileReferenceValueStore(tmp_path)
    a.register(sample_message({"m": ["aa"]}))
    assert b.values_for(None) == {"m": ["aa"]}
    a.register(sample_message({"n": ["cc"]}))
    assert b.values_for(None) == {"m": ["aa"], "n": ["cc"]}
    (tmp_path / "global" / "m.json").unlink()
    assert b.values_for(None) == {"n": ["cc"]} and b.get("m") == []


def test_a_cached_value_expires(tmp_path: Path, settled: None) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = FileReferenceValueStore(tmp_path, clock=lambda: now[0])
    store.register(sample_message({"m": ["aa"]}), scope="wl", expires_at=now[0] + timedelta(hours=1))
    assert store.values_for("wl") == {"m": ["aa"]} and store.get("m", scope="wl") == ["aa"]
    now[0] += timedelta(hours=2)
    assert store.values_for("wl") == {} and store.get("m", scope="wl") == []


def test_returned_lists_are_the_callers_own(tmp_path: Path, settled: None) -> None:
    store = FileReferenceValueStore(tmp_path)
    store.register(sample_message({"m": ["aa"]}))
    store.values_for(None)["m"].append("forged")
    store.get("m").append("forged")
    assert store.get("m") == ["aa"]


def test_a_young_file_is_re_read_even_if_its_signature_looks_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A filesystem with coarse timestamps could give two versions one signature: until the
    # racy window has passed, a file is never served from the cache.
    monkeypatch.setattr(stat_cache, "signature", lambda st: (0, 0, 0, 0, 0))
    a, b = FileReferenceValueStore(tmp_path), FileReferenceValueStore(tmp_path)
    a.register(sample_message({"m": ["aa"]}))
    assert b.get("m") == ["aa"]
    a.register(sample_message({"m": ["bb"]}))
    assert b.get("m") == ["bb"]


def test_an_unreadable_value_is_an_error_not_a_cached_absence(tmp_path: Path, settled: None) -> None:
    from ccpipe.stages.attest.errors import ReferenceValueInvalid

    store = FileReferenceValueStore(tmp_path)
    store.register(sample_message({"m": ["aa"]}))
    (tmp_path / "global" / "m.json").write_text("{not json")
    with pytest.raises(ReferenceValueInvalid):
        store.get("m")


RESOURCE = 'package policy\nimport rego.v1\nallow if input.x == "{v}"\n'


def policy_stores(tmp_path: Path) -> tuple[FilePolicyStore, FilePolicyStore]:
    return FilePolicyStore(tmp_path), FilePolicyStore(tmp_path)


def test_policy_look_ups_are_cached(tmp_path: Path, settled: None, reads: list[str]) -> None:
    a, _ = policy_stores(tmp_path)
    a.set_policy("p", RESOURCE.format(v="1"), kind="resource", scope="team/x")
    for _ in range(5):
        assert a.get_policy("p", kind="resource").scope == "team/x"
        assert [p.policy_id for p in a.list_policies("resource")] == ["p"]
    assert len(reads) == 1


@pytest.mark.parametrize("look", [
    lambda s: s.get_policy("p", kind="resource").text,
    lambda s: next(p.text for p in s.list_policies("resource")),
])
def test_a_policy_set_by_another_process_is_seen(
    tmp_path: Path, settled: None, look: Callable[[FilePolicyStore], str]
) -> None:
    a, b = policy_stores(tmp_path)
    a.set_policy("p", RESOURCE.format(v="1"), kind="resource")
    path = tmp_path / "resource" / "p.json"
    before = path.stat()
    assert look(b) == RESOURCE.format(v="1")
    a.set_policy("p", RESOURCE.format(v="2"), kind="resource")  # same size, new inode
    same_size_and_mtime(path, before)
    assert look(b) == RESOURCE.format(v="2")


def test_policies_added_and_removed_by_another_process_are_listed(tmp_path: Path, settled: None) -> None:
    a, b = policy_stores(tmp_path)
    a.set_policy("p", RESOURCE.format(v="1"), kind="resource")
    assert [p.policy_id for p in b.list_policies("resource")] == ["p"]
    a.set_policy("q", RESOURCE.format(v="1"), kind="resource")
    assert [p.policy_id for p in b.list_policies("resource")] == ["p", "q"]
    (tmp_path / "resource" / "p.json").unlink()
    assert [p.policy_id for p in b.list_policies("resource")] == ["q"]
    assert b.get_policy("default", kind="resource").policy_id == "default"  # the shipped one


def test_an_attestation_policy_replaced_by_another_process_is_compiled_anew(tmp_path: Path, settled: None) -> None:
    a, b = policy_stores(tmp_path)
    text = 'package policy\nimport rego.v1\ntrust_claims := {"executables": %d}\n'
    a.set_policy("default", text % 3)
    assert b.compiled_attestation_policy("default").trust_vector({}, {}) == {"executables": 3}
    a.set_policy("default", text % 4)
    assert b.compiled_attestation_policy("default").trust_vector({}, {}) == {"executables": 4}


def test_an_unlistable_store_is_an_error_not_an_empty_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ccpipe.stages.attest.errors import PolicyInvalid, ReferenceValueInvalid

    values, policies = FileReferenceValueStore(tmp_path / "rv"), FilePolicyStore(tmp_path / "p")
    values.register(sample_message({"m": ["aa"]}))
    policies.set_policy("p", RESOURCE.format(v="1"), kind="resource")

    def refuse(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(ReferenceValueInvalid, match="cannot be listed"):
        values.values_for(None)
    with pytest.raises(PolicyInvalid, match="cannot be listed"):
        policies.list_policies("resource")
