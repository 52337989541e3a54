"""Launch measurements of the runner's stack: deterministic, and changed by any code or config change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ccpipe.evidence.measurement import (
    launch_measurement_for,
    rtmr_extend,
    runner_package_dir,
    stack_listing,
    tdx_measurements_for,
)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "enclave_runner"
    (root / "tee").mkdir(parents=True)
    (root / "__init__.py").write_text('"""runner"""\n')
    (root / "tee" / "a.py").write_text("A = 1\n")
    return root


def test_listing_is_sorted_hashed_and_skips_bytecode(package: Path) -> None:
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (package / "tee" / "b.pyc").write_bytes(b"junk")
    (package / "tee" / "README.md").write_text("docs are not shipped in the wheel, so not measured")
    listing = stack_listing(package).decode().splitlines()
    init_digest = hashlib.sha384(b'"""runner"""\n').hexdigest()
    a_digest = hashlib.sha384(b"A = 1\n").hexdigest()
    assert listing == [f"{init_digest}  enclave_runner/__init__.py", f"{a_digest}  enclave_runner/tee/a.py"]


def test_measurement_is_48_bytes_and_deterministic(package: Path) -> None:
    m = launch_measurement_for(b"cfg", package_dir=package)
    assert len(m) == 48 and m == launch_measurement_for(b"cfg", package_dir=package)


def test_code_change_config_change_and_new_file_change_the_measurement(package: Path) -> None:
    before = launch_measurement_for(b"cfg", package_dir=package)
    assert launch_measurement_for(b"cfg2", package_dir=package) != before
    (package / "tee" / "a.py").write_text("A = 2\n")
    changed = launch_measurement_for(b"cfg", package_dir=package)
    assert changed != before
    (package / "tee" / "new.toml").write_text("x = 1\n")
    assert launch_measurement_for(b"cfg", package_dir=package) != changed


def test_mapping_config_is_canonical(package: Path) -> None:
    a = launch_measurement_for({"b": 1, "a": [1, 2]}, package_dir=package)
    b = launch_measurement_for({"a": [1, 2], "b": 1}, package_dir=package)
    assert a == b != launch_measurement_for({"a": [2, 1], "b": 1}, package_dir=package)


def test_tdx_registers_follow_the_extend_rule(package: Path) -> None:
    m = tdx_measurements_for(b"cfg", package_dir=package)
    code = hashlib.sha384(stack_listing(package)).digest()
    assert m.rtmrs[1] == hashlib.sha384(bytes(48) + code).digest() == rtmr_extend(bytes(48), code)
    assert m.rtmrs[2] == rtmr_extend(bytes(48), hashlib.sha384(b"cfg").digest())
    assert m.rtmrs[3] == bytes(48)
    assert m.mr_td != launch_measurement_for(b"cfg", package_dir=package)  # domain-separated
    assert tdx_measurements_for(b"other", package_dir=package).mr_td == m.mr_td  # MRTD covers code only
    assert set(m.reference_values()) == {"mr_td", "rtmr_0", "rtmr_1", "rtmr_2", "rtmr_3"}


def test_default_package_is_the_installed_runner() -> None:
    import ccpipe.enclave_runner

    assert runner_package_dir() == Path(ccpipe.enclave_runner.__file__).resolve().parent
    listing = stack_listing().decode()
    assert "enclave_runner/tee/emulated_snp.py" in listing and ".pyc" not in listing
    # the format's own module is not part of the measured runner stack any more
    assert "measurement.py" not in listing


def test_measured_kinds_are_what_the_package_installs() -> None:
    import tomllib

    from ccpipe.evidence.measurement import MEASURED_SUFFIXES
    from tests.conftest import REPO_ROOT

    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    assert {p.removeprefix("*") for p in patterns} | {".py"} == MEASURED_SUFFIXES
