"""``audit verify`` re-checks the enrolments behind the keyring it verifies signatures with.

The keyring file's component keys are a copy the enrolment mirror wrote; verify does not take
that copy on trust. It rebuilds the component keys from the admin-signed records the mirror kept
(:func:`ccpipe.pipeline.enrolment.load_records`), opening each with the admin key pinned in the
data directory, so a key written into the file by anyone else counts for nothing here either,
and a record that does not verify is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ccpipe.pipeline.audit.event_signing import Keyring
from ccpipe.pipeline.enrolment import enrolled_keys, load_records, pinned_admin_public


@dataclass(frozen=True)
class EnrolmentCheck:
    """What verify found about the enrolments (``checked`` False: no admin key pinned, nothing to re-check)."""

    checked: bool
    keys: int = 0
    ignored: tuple[str, ...] = ()
    why_not: str = ""

    @property
    def ok(self) -> bool:
        """No record failed to verify under the pinned admin key."""
        return not self.ignored


def rebuild_from_enrolments(data_dir: Path, keyring: Keyring) -> EnrolmentCheck:
    """Replace ``keyring``'s component keys with those the admin-signed records vouch for.

    Without an admin key pinned in ``data_dir`` (a single host's data directory in library use)
    the keyring is left as it is and the check says so.
    """
    admin_public = pinned_admin_public(data_dir)
    if admin_public is None:
        return EnrolmentCheck(False, why_not=f"no admin key is pinned in {data_dir}")
    records = load_records(data_dir)
    found = enrolled_keys(records or [], admin_public)
    keyring.replace_components(found.keys)
    if records is None:
        return EnrolmentCheck(False, why_not="no enrolment records were kept here (no mirror has run)")
    return EnrolmentCheck(True, len(found.keys), tuple(found.ignored))
