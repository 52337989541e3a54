"""What an enclave running a signed image must show, derived from what the pipeline made.

Pure functions over digests and names (no I/O), used by the sign stage before it publishes
``signed``:

* :func:`signature_policy` — the containers-policy.json the guest enforces on pull: only
  ``sigstoreSigned`` images of the workload's repository, verified with the cosign public key
  the KBS holds at ``kbs:///ccpipe/<workload>/cosign-pubkey``; everything else rejected;
* :func:`workload_initdata` — the initdata TOML (KBS URL, image digest, that policy), whose
  digest the host binds into the TEE's launch data (SNP HOST_DATA / TDX MRCONFIGID);
* :func:`reference_values` / :func:`rvps_message` — the reference values registered with the
  attestation service in Trustee's RVPS ``sample`` message, each name scoped to the workload
  (``scope/<workload>/<name>``) so one workload's values never authorise another's enclave.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from ccpipe.evidence.initdata import initdata_digest, make_initdata
from ccpipe.evidence.measurement import Config, launch_measurement_for, tdx_measurements_for

RVPS_VERSION = "0.1.0"
"""Trustee's reference value message version."""

ReferenceValue = str | int | float | bool


def signature_policy(repository: str, pubkey_uri: str, requirement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """containers-policy.json: ``repository``'s images must carry a signature by the key at ``pubkey_uri``.

    ``requirement`` replaces the key requirement (keyless: the CA, issuer and identity).
    """
    requirement = dict(requirement) if requirement is not None else {
        "type": "sigstoreSigned",
        "keyPath": pubkey_uri,
        "signedIdentity": {"type": "matchRepository"},
    }  # fmt: skip
    return {"default": [{"type": "reject"}], "transports": {"docker": {repository: [requirement]}}}


def workload_initdata(
    kbs_url: str, image_digest: str, repository: str, pubkey_uri: str, requirement: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """The workload's initdata TOML and its digest (hex, as ``signed.initdata_digest`` carries it).

    ``image`` in the initdata is ``repository@image_digest``. Raises
    :class:`~ccpipe.evidence.errors.InvalidInitdata` for a malformed digest.
    """
    text = make_initdata(
        kbs_url,
        image_digest,
        signature_policy(repository, pubkey_uri, requirement),
        image=f"{repository}@{image_digest}",
    )
    return text, initdata_digest(text).hex()


def launch_reference_values(config: Config = b"") -> dict[str, list[ReferenceValue]]:
    """The launch measurements of the runner's enclave stack (SNP MEASUREMENT, TDX MRTD/RTMR1/RTMR2)."""
    tdx = tdx_measurements_for(config).reference_values()
    return {
        "snp_launch_measurement": [launch_measurement_for(config).hex()],
        "mr_td": [tdx["mr_td"]],
        "rtmr_1": [tdx["rtmr_1"]],
        "rtmr_2": [tdx["rtmr_2"]],
    }


def reference_values(
    image_digest: str, initdata_digest_hex: str, launch: Mapping[str, list[ReferenceValue]] | None = None
) -> dict[str, list[ReferenceValue]]:
    """The values an enclave for this image must show: image digest, initdata digest, launch values."""
    return {"image_digest": [image_digest], "init_data_digest": [initdata_digest_hex], **(launch or {})}


def rvps_message(scope: str, values: Mapping[str, list[ReferenceValue]]) -> dict[str, str]:
    """Trustee's RVPS ``sample`` message registering ``values`` under ``scope/<scope>/<name>``."""
    scoped = {f"scope/{scope}/{name}": list(v) for name, v in values.items()}
    payload = json.dumps(scoped, separators=(",", ":"), sort_keys=True).encode()
    return {"version": RVPS_VERSION, "type": "sample", "payload": base64.b64encode(payload).decode()}
