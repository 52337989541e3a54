"""The embedded registry's generated passwords are safe to pass on a command line."""

from __future__ import annotations

import stat
from pathlib import Path

from ccpipe.pipeline.services import REGISTRY_ROLES, registry_password_file, write_registry_credentials


def test_generated_passwords_never_read_as_an_option_and_stay_private(tmp_path: Path) -> None:
    # cosign, skopeo and crane take '--registry-password X': a password starting with '-' is read as
    # an option (CI saw cosign answer UNAUTHORIZED because of it), so none may start with one
    seen = set()
    for _ in range(10):
        write_registry_credentials(tmp_path)
        for role in REGISTRY_ROLES:
            path = registry_password_file(tmp_path, role)
            password = path.read_text().strip()
            assert len(password) >= 43 and password.isalnum() and not password.startswith("-"), password
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            seen.add(password)
    assert len(seen) == 10 * len(REGISTRY_ROLES)  # a new password at every start
