"""Retention of ended workloads' image layouts: which go, which stay, and what is removed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccpipe.schemas.errors import InvalidInput
from ccpipe.stages.sign.retention import due_for_removal, remove_layouts, workloads_with_layouts

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ENDED = {"w-old": NOW - timedelta(hours=5), "w-mid": NOW - timedelta(hours=2), "w-new": NOW - timedelta(minutes=1)}


def test_by_default_every_ended_workload_goes_at_once() -> None:
    assert due_for_removal(ENDED, now=NOW, keep_last=0, keep_for=timedelta()) == ["w-mid", "w-new", "w-old"]


def test_the_latest_n_ended_workloads_stay() -> None:
    assert due_for_removal(ENDED, now=NOW, keep_last=2, keep_for=timedelta()) == ["w-old"]
    assert due_for_removal(ENDED, now=NOW, keep_last=5, keep_for=timedelta()) == []


def test_workloads_ended_within_the_hours_stay_and_either_setting_keeps_them() -> None:
    assert due_for_removal(ENDED, now=NOW, keep_last=0, keep_for=timedelta(hours=3)) == ["w-old"]
    assert due_for_removal(ENDED, now=NOW, keep_last=1, keep_for=timedelta(hours=3)) == ["w-old"]
    assert due_for_removal(ENDED, now=NOW, keep_last=3, keep_for=timedelta(hours=1)) == []


def workload_files(data: Path, wl: str, *kinds: str) -> Path:
    root = data / "images" / wl
    root.mkdir(parents=True)
    for kind in kinds:
        (root / kind / "blobs").mkdir(parents=True)
        (root / kind / "blobs" / "x").write_bytes(b"layer")
    (root / "signed.json").write_text("{}")
    (root / "initdata.toml").write_text("version = '0.1.0'\n")
    return root


def test_only_the_layouts_are_removed_the_receipt_and_initdata_stay(tmp_path: Path) -> None:
    root = workload_files(tmp_path, "w-1", "plain", "signed")
    assert remove_layouts(tmp_path, "w-1") == [root / "plain", root / "signed"]
    assert sorted(p.name for p in root.iterdir()) == ["initdata.toml", "signed.json"]
    assert remove_layouts(tmp_path, "w-1") == []  # nothing left to remove: not an error


def test_only_workloads_with_a_layout_are_listed(tmp_path: Path) -> None:
    assert workloads_with_layouts(tmp_path) == []
    workload_files(tmp_path, "w-signed", "signed")
    workload_files(tmp_path, "w-plain", "plain")
    workload_files(tmp_path, "w-cleaned")
    assert workloads_with_layouts(tmp_path) == ["w-plain", "w-signed"]


def test_a_workload_id_that_leaves_the_images_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        remove_layouts(tmp_path, "..")
