"""Signed events, the trail's side: whose keys it trusts.

Components sign what they emit (:mod:`ccpipe.pipeline.event_signature`: the
``Ccpipe-Signature`` header over :data:`~ccpipe.pipeline.event_signature.SIGNING_CONTEXT` ‖
canonical bytes). A :class:`Keyring` maps components to their public keys (the part the
components register themselves, :class:`ccpipe.pipeline.signing.ComponentKeyring`), plus the
log's note verifier keys; it is the trail's trust material, saved as JSON. The trail classifies
each event with :func:`ccpipe.pipeline.event_trust.check_event_signature` (the rule every
consumer applies too) and *flags* anything but ``valid``; it never drops or silently indexes
such an event.

Imports the runtime's signature format and :mod:`ccpipe.pipeline.audit` internals only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ccpipe.pipeline.audit.checkpoint import NoteVerifier
from ccpipe.pipeline.event_signature import ComponentKey
from ccpipe.pipeline.signing import ComponentKeyring


class Keyring(ComponentKeyring):
    """Component → event public keys, plus the log's note verifier keys.

    Saved as the components' keyring document with one more member::

        {"version": 1, "components": {…}, "log_keys": ["<C2SP verifier key>"]}
    """

    def __init__(self) -> None:
        super().__init__()
        self._log: dict[str, NoteVerifier] = {}

    def add_log_key(self, verifier: NoteVerifier | str) -> NoteVerifier:
        """Trust a log (checkpoint) verifier key, given as object or vkey string."""
        v = NoteVerifier.from_vkey(verifier) if isinstance(verifier, str) else verifier
        self._log[v.vkey] = v
        return v

    @property
    def log_keys(self) -> list[NoteVerifier]:
        """The trusted checkpoint verifier keys."""
        return list(self._log.values())

    def to_json(self) -> dict[str, Any]:
        """The JSON document (see the class docstring)."""
        return {**super().to_json(), "log_keys": sorted(self._log)}

    def _read_members(self, doc: dict[str, Any]) -> None:
        """Parse ``log_keys``; raises :class:`~ccpipe.pipeline.keyfiles.KeyMaterialError` for a bad verifier key."""
        for vkey in doc.get("log_keys", []):
            self.add_log_key(str(vkey))


def keyring_from(keys: Iterable[ComponentKey]) -> Keyring:
    """A keyring trusting the public halves of ``keys`` (handy in tests and the demo)."""
    ring = Keyring()
    for k in keys:
        ring.add(k.component, k.public_key)
    return ring
