"""RCAR over real HTTP against a KBS storing its events in a real nats-server.

Every attack in the issue's list ends with no key and exactly one refusal event for the
workload, and the service keeps serving.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.js import JetStreamContext

from ccpipe.enclave_runner.tee.emulated_snp import EmulatedSnpBackend
from ccpipe.enclave_runner.tee.sample import SampleBackend
from ccpipe.evidence.initdata import initdata_digest
from ccpipe.pipeline.reader import read_events
from ccpipe.schemas.events import EventType
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements
from ccpipe.stages.attest.kbs.admin_auth import admin_key_paths, load_admin_private_key
from ccpipe.stages.attest.kbs.admin_client import KbsAdminClient
from ccpipe.stages.attest.kbs.binding import device_data_digest, runtime_data_digest
from ccpipe.stages.attest.kbs.client import KbsSession, fetch_resource
from ccpipe.stages.attest.kbs.errors import KbsRefused
from ccpipe.stages.attest.kbs.requirements import requirements_path
from ccpipe.stages.attest.kbs.service import Kbs, build_kbs, publisher_for, serve_http
from ccpipe.stages.attest.kbs.store import FileBackend
from ccpipe.stages.attest.rvps import sample_message

pytestmark = pytest.mark.integration
SECRET = b"\x42" * 32
EMULATED_SNP = TeeRequirements(types=[TeeType.SNP], allow_emulated=True)
"""What the test workloads ask for: the emulated SNP enclaves these tests launch."""


def initdata_for(workload: str) -> bytes:
    """A minimal initdata document naming the workload (so each workload has its own digest)."""
    text = f'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"ccpipe.toml" = "workload = \\"{workload}\\""\n'
    return text.encode()


async def register_requirements(admin: KbsAdminClient, workload: str, tee: TeeRequirements = EMULATED_SNP) -> None:
    """The workload's ``[tee]`` requirements, as the sign stage registers them with its key."""
    await admin.set_resource(requirements_path(workload), tee.model_dump_json().encode())


@dataclasses.dataclass
class Harness:
    """A running KBS, its admin client, and an emulated SNP enclave per workload."""

    url: str
    kbs: Kbs
    admin: KbsAdminClient
    data_dir: Path
    js: JetStreamContext

    def backend(self, workload: str) -> EmulatedSnpBackend:
        """An emulated SNP guest launched with ``workload``'s initdata."""
        return EmulatedSnpBackend(self.data_dir, host_data=initdata_digest(initdata_for(workload).decode()))

    async def register(self, workload: str, *, measurement: str | None = None) -> None:
        """What the sign stage registers: reference values and the image key."""
        backend = self.backend(workload)
        values: dict[str, list[Any]] = {
            f"scope/{workload}/init_data_digest": [initdata_digest(initdata_for(workload).decode()).hex()],
            f"scope/{workload}/snp_launch_measurement": [measurement or backend.measurement.hex()],
        }
        await self.admin.set_reference_values(sample_message(values))
        await register_requirements(self.admin, workload)
        await self.admin.set_resource(f"ccpipe/{workload}/image-key", SECRET)

    async def events(self, workload: str, *, challenges: bool = False) -> list[Any]:
        """The stored events of ``workload`` (``attestation.challenged`` only if asked for)."""
        found = [e.event for e in await read_events(self.js, workload) if e.event is not None]
        return [e for e in found if challenges or e.type.value != "attestation.challenged"]

    async def session(self, workload: str, **kw: Any) -> KbsSession:
        """A client session for ``workload`` on its own enclave."""
        return KbsSession(self.url, kw.pop("backend", None) or self.backend(workload), workload_id=workload,
                          tee="snp", init_data=initdata_for(workload), **kw)


@pytest.fixture
async def kbs(data_dir: Path, js: JetStreamContext) -> AsyncIterator[Harness]:
    """An embedded KBS on loopback (file resource backend), events in the session's nats-server."""
    EmulatedSnpBackend(data_dir)  # the emulated PKI exists before the verifier looks for it
    kbs = build_kbs(data_dir, publisher_for(js, data_dir), FileBackend(data_dir / "kbs-resources"),
                    allow_emulated=True)
    async with serve_http(kbs) as url:
        admin = KbsAdminClient(url, load_admin_private_key(admin_key_paths(data_dir)[0]))
        yield Harness(url, kbs, admin, data_dir, js)


def types(events: list[Any]) -> list[str]:
    """Event types in order."""
    return [e.type.value for e in events]


async def test_kbs_rcar_releases_the_key_and_records_both_events(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    key = await fetch_resource(kbs.url, kbs.backend(workload_id), f"ccpipe/{workload_id}/image-key",
                               workload_id=workload_id, tee="snp", init_data=initdata_for(workload_id),
                               node_id="node-1")
    assert key == SECRET
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.verified", "key.released"]
    challenged = (await kbs.events(workload_id, challenges=True))[0]
    assert challenged.type.value == "attestation.challenged" and challenged.payload.node_id == "node-1"
    assert events[0].payload.challenge_event_id == challenged.id
    verified, released = events
    evidence = base64.b64decode(verified.payload.evidence)
    assert json.loads(evidence)["attestation_report"]  # the evidence itself, for re-verification
    assert verified.payload.evidence_digest.startswith("sha256:") and verified.payload.policy_digest
    assert verified.payload.ear_status in ("affirming", "warning") and verified.payload.emulated
    assert released.payload.resource == f"ccpipe/{workload_id}/image-key"
    assert released.payload.token_id == verified.payload.token_id
    assert released.payload.tee_pubkey_thumbprint == verified.payload.tee_pubkey_thumbprint
    assert released.payload.attestation_event_id == verified.id
    assert released.source.component == "kbs"
    # "node-1" was only named, never proven by a node key: the release is credited to no node
    assert released.payload.node_id is None and released.payload.claimed_node_id == "node-1"


async def test_kbs_rcar_rsa_key_and_several_resources_with_one_attestation(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    await kbs.admin.set_resource(f"ccpipe/{workload_id}/cosign-pubkey", b"PUBKEY")
    async with await kbs.session(workload_id, key_alg="RSA") as s:
        assert await s.get_resource(f"ccpipe/{workload_id}/image-key") == SECRET
        assert await s.get_resource(f"ccpipe/{workload_id}/cosign-pubkey") == b"PUBKEY"
        token = s.token
    assert types(await kbs.events(workload_id)) == ["attestation.verified", "key.released", "key.released"]
    # The token alone (Bearer, no cookie) is enough for another request, on a fresh connection.
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{kbs.url}/kbs/v0/resource/ccpipe/{workload_id}/image-key",
                              headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
        jwe = await resp.json()
    assert set(jwe) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert header == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}


async def refused(coro: Any) -> KbsRefused:
    with pytest.raises(KbsRefused) as info:
        await coro
    return info.value


async def test_kbs_rcar_unknown_measurement_gets_nothing(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id, measurement="00" * 48)
    err = await refused(fetch_resource(kbs.url, kbs.backend(workload_id), f"ccpipe/{workload_id}/image-key",
                                       workload_id=workload_id, tee="snp", init_data=initdata_for(workload_id)))
    assert err.status == 401 and err.variant == "AttestationError"
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.rejected"]
    assert events[0].payload.reason.code == "attest.policy.contraindicated"


async def test_kbs_rcar_debug_guest_gets_nothing(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    backend = kbs.backend(workload_id)
    backend._template = dataclasses.replace(backend._template, policy=backend._template.policy | (1 << 19))
    err = await refused(fetch_resource(kbs.url, backend, f"ccpipe/{workload_id}/image-key",
                                       workload_id=workload_id, tee="snp", init_data=initdata_for(workload_id)))
    assert err.status == 401
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.rejected"] and events[0].payload.reason.code == "attest.policy.debug"


async def test_kbs_rcar_evidence_for_another_workload_gets_nothing(kbs: Harness, workload_id: str) -> None:
    other = workload_id + "-b"
    await kbs.register(workload_id)
    await kbs.register(other)
    # The enclave was launched with the other workload's initdata but asks for this workload.
    await refused(fetch_resource(kbs.url, kbs.backend(other), f"ccpipe/{workload_id}/image-key",
                                 workload_id=workload_id, tee="snp"))
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.rejected"]
    assert events[0].payload.reason.code == "attest.evidence.init_data"
    # A genuine attestation of the other workload does not open this workload's key either.
    async with await kbs.session(other) as s:
        err = await refused(s.get_resource(f"ccpipe/{workload_id}/image-key"))
    assert err.variant == "PolicyDeny"
    denied = (await kbs.events(workload_id))[-1]
    assert denied.type == EventType.KEY_DENIED and denied.payload.rule == "ccpipe:workload-match"
    assert "ccpipe:workload-match" not in str(err)  # the rule goes to the trail, not to the requester


class Raw:
    """Hand-made RCAR requests (what an attacker can send)."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http, self.cookie, self.last_cookie = url, http, "", ""

    async def auth(self, workload: str) -> str:
        body = {"version": "0.4.0", "tee": "snp", "extra-params": {"ccpipe-workload": workload}}
        async with self.http.post(f"{self.url}/kbs/v0/auth", json=body) as resp:
            assert resp.status == 200
            self.cookie = resp.cookies["kbs-session-id"].value
            return str((await resp.json())["nonce"])

    async def post(self, path: str, data: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kw: dict[str, Any] = {"json": data} if isinstance(data, dict) else {"data": data}
        async with self.http.post(f"{self.url}/kbs/v0/{path}", headers={"Cookie": f"kbs-session-id={self.cookie}"},
                                  **kw) as resp:
            if "kbs-session-id" in resp.cookies:
                self.last_cookie = resp.cookies["kbs-session-id"].value
            return resp.status, await resp.json(content_type=None)

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.url}/kbs/v0/{path}",
                                 headers={"Cookie": f"kbs-session-id={self.cookie}"}) as resp:
            return resp.status, await resp.json(content_type=None)


def attestation(backend: EmulatedSnpBackend, nonce: str, jwk: dict[str, Any], workload: str,
                bind_jwk: dict[str, Any] | None = None) -> dict[str, Any]:
    evidence = backend.get_evidence(runtime_data_digest(nonce, bind_jwk or jwk))
    return {"runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": evidence.evidence_json(), "additional_evidence": ""},
            "init-data": {"format": "toml", "body": initdata_for(workload).decode()}}


def ec_jwk() -> dict[str, Any]:
    from joserfc.jwk import ECKey

    return {**ECKey.generate_key("P-256", private=True).as_dict(private=False), "alg": "ECDH-ES+A256KW"}


async def test_kbs_rcar_replayed_nonce_is_refused(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    backend, jwk = kbs.backend(workload_id), ec_jwk()
    async with aiohttp.ClientSession() as http:
        victim = Raw(kbs.url, http)
        body = attestation(backend, await victim.auth(workload_id), jwk, workload_id)
        assert (await victim.post("attest", body))[0] == 200
        # Replay into the same session (nonce already used) and into a fresh one (other nonce).
        status, err = await victim.post("attest", body)
        assert status == 401 and err["type"].endswith("/AttestationError")
        attacker = Raw(kbs.url, http)
        await attacker.auth(workload_id)
        status, err = await attacker.post("attest", body)
        assert status == 401 and "nonce" in err["detail"]
        assert (await attacker.get(f"resource/ccpipe/{workload_id}/image-key"))[0] == 401
    kinds = types(await kbs.events(workload_id))
    assert kinds.count("attestation.verified") == 1 and "key.released" not in kinds
    assert kinds.count("attestation.rejected") == 2 and kinds.count("key.denied") == 1


async def test_kbs_rcar_report_data_for_another_key_is_refused(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    async with aiohttp.ClientSession() as http:
        raw = Raw(kbs.url, http)
        nonce = await raw.auth(workload_id)
        body = attestation(kbs.backend(workload_id), nonce, ec_jwk(), workload_id, bind_jwk=ec_jwk())
        status, err = await raw.post("attest", body)
    assert status == 401 and err["type"].endswith("/AttestationError")
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.rejected"]
    assert events[0].payload.reason.code == "attest.evidence.report_data"


async def test_kbs_rcar_flipped_bit_is_refused(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    async with aiohttp.ClientSession() as http:
        raw = Raw(kbs.url, http)
        jwk = ec_jwk()
        body = attestation(kbs.backend(workload_id), await raw.auth(workload_id), jwk, workload_id)
        body["tee-evidence"]["primary_evidence"]["attestation_report"]["measurement"][0] ^= 0x01
        status, _ = await raw.post("attest", body)
    assert status == 401
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.rejected"]
    assert events[0].payload.reason.code == "attest.evidence.signature"


async def test_kbs_rcar_expired_session_gets_nothing(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    async with await kbs.session(workload_id) as s:
        await s.attest()
        sessions = kbs.kbs.core.sessions
        sessions.clock = lambda: time.time() + sessions.timeout_s + 1  # as if the 5 minutes had passed
        err = await refused(s.get_resource(f"ccpipe/{workload_id}/image-key"))
    assert err.status == 401 and err.variant == "TokenNotFound"
    events = await kbs.events(workload_id)
    assert types(events) == ["attestation.verified", "key.denied"]
    assert events[1].payload.reason.code == "kbs.session.missing"


async def test_kbs_rcar_plain_coco_guest_without_ccpipe_params(kbs: Harness) -> None:
    """A Trustee guest: no ccpipe extra-params, initdata TOML sent, resource default/key/1, Bearer token."""
    from joserfc import jwe
    from joserfc.jwk import ECKey

    from ccpipe.evidence.initdata import initdata_digest as digest_of

    init = initdata_for("coco-guest").decode()
    backend = EmulatedSnpBackend(kbs.data_dir, host_data=digest_of(init))
    await kbs.admin.set_reference_values(sample_message({"snp_launch_measurement": [backend.measurement.hex()]}))
    await kbs.admin.set_resource("default/key/1", b"coco-secret")
    key = ECKey.generate_key("P-256", private=True)
    jwk = {**key.as_dict(private=False), "alg": "ECDH-ES+A256KW"}
    async with aiohttp.ClientSession() as http:
        request = {"version": "0.4.0", "tee": "snp",
                   "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]}}
        async with http.post(f"{kbs.url}/kbs/v0/auth", json=request) as resp:
            challenge = await resp.json()
            cookie = resp.cookies["kbs-session-id"]
        # an opaque cookie to the guest (the sealed session), within what any cookie store keeps
        assert challenge["extra-params"] == "" and 0 < len(cookie.value) < 4096 and cookie["expires"]
        evidence = backend.get_evidence(runtime_data_digest(challenge["nonce"], jwk))
        body = {"init-data": {"format": "toml", "body": init},
                "runtime-data": {"nonce": challenge["nonce"], "tee-pubkey": jwk},
                "tee-evidence": {"primary_evidence": evidence.evidence_json(), "additional_evidence": ""}}
        async with http.post(f"{kbs.url}/kbs/v0/attest", json=body,
                             headers={"Cookie": f"kbs-session-id={cookie.value}"}) as resp:
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["token"]
        async with http.get(f"{kbs.url}/kbs/v0/resource/default/key/1",
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            sealed = await resp.json()
    assert jwe.decrypt_json(sealed, key, algorithms=["ECDH-ES+A256KW", "A256GCM"]).plaintext == b"coco-secret"
    kinds = types(await kbs.events("kbs-unscoped"))
    assert kinds[-2:] == ["attestation.verified", "key.released"]


def with_devices(backend: EmulatedSnpBackend, nonce: str, jwk: dict[str, Any], workload: str,
                 devices: dict[str, Any]) -> dict[str, Any]:
    """An /attest body whose primary evidence binds ``devices`` (as RCAR's additional_evidence)."""
    additional = json.dumps(devices)
    body = attestation(backend, nonce, jwk, workload)
    evidence = backend.get_evidence(runtime_data_digest(nonce, jwk, additional))
    body["tee-evidence"] = {"primary_evidence": evidence.evidence_json(), "additional_evidence": additional}
    return body


def sample_device(report_data: bytes) -> dict[str, Any]:
    device: dict[str, Any] = json.loads(SampleBackend().get_evidence(report_data).evidence)
    return device


async def test_kbs_rcar_device_evidence_is_verified_against_its_own_binding(kbs: Harness, workload_id: str) -> None:
    await kbs.register(workload_id)
    backend, jwk = kbs.backend(workload_id), ec_jwk()
    async with aiohttp.ClientSession() as http:
        raw = Raw(kbs.url, http)
        nonce = await raw.auth(workload_id)
        good = sample_device(device_data_digest(nonce, jwk))
        status, answer = await raw.post("attest", with_devices(backend, nonce, jwk, workload_id, {"sample": good}))
        assert status == 200, answer
        wrong_devices = (
            lambda n: {"sample": sample_device(runtime_data_digest(n, jwk))},  # the primary's binding
            lambda n: {"sample": sample_device(device_data_digest("another nonce", jwk))},
            lambda n: {"nvgpu": {"evidence": "no verifier for this"}},
        )
        for devices in wrong_devices:
            nonce = await raw.auth(workload_id)
            status, err = await raw.post("attest", with_devices(backend, nonce, jwk, workload_id, devices(nonce)))
            assert status == 401 and err["type"].endswith("/AttestationError"), err
        body = attestation(backend, await raw.auth(workload_id), jwk, workload_id)
        body["tee-evidence"]["additional_evidence"] = "[1, 2]"
        status, err = await raw.post("attest", body)
        assert status == 400 and "additional_evidence" in err["detail"]
    events = await kbs.events(workload_id)
    verified = [e for e in events if e.type == EventType.ATTESTATION_VERIFIED]
    rejected = [e for e in events if e.type == EventType.ATTESTATION_REJECTED]
    assert len(verified) == 1 and len(rejected) == 4
    assert verified[0].payload.claims["devices"]["sample"]["emulated"] is True and verified[0].payload.emulated
    assert json.loads(verified[0].payload.additional_evidence) == {"sample": good}  # kept for re-verification
    codes = [e.payload.reason.code for e in rejected]
    assert codes == ["attest.evidence.report_data", "attest.evidence.report_data", "attest.verifier.unknown",
                     "kbs.body.malformed"]
    assert "additional evidence 'sample'" in rejected[0].payload.reason.message
    assert "nvgpu" in rejected[2].payload.reason.message and rejected[2].payload.additional_evidence
