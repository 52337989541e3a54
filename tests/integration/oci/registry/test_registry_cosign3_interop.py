"""cosign 3 (Debian's build, installed by scripts/install-system-deps.sh) and ccpipe, both ways, on a real registry.

The suite's docker-registry (distribution 2.8) has no referrers API, so every bundle here travels
through the ``sha256-<hex>`` fallback index. cosign signs with its defaults (a Sigstore bundle
referrer) with a key and no transparency log (``--tlog-upload=false`` needs
``--use-signing-config=false`` in 3.1) and reads the key's password from ``COSIGN_PASSWORD``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccpipe.oci.registry import RegistryClient, list_referrers, push_layout
from ccpipe.pipeline.servers import EmbeddedRegistry
from ccpipe.stages.sign import attest_image, load_private_key, sign_image
from tests.integration.oci.registry.registry_images import make_image

# cosign is installed by scripts/install-system-deps.sh (./run test); a missing one fails loudly.
pytestmark = pytest.mark.integration
PASSWORD = {"COSIGN_PASSWORD": "cosign-pw"}
SLSA = "https://slsa.dev/provenance/v1"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, cwd=cwd, env={**os.environ, **PASSWORD, **env}
    )


def cosign(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run("cosign", *args, cwd=cwd)


def ccpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "ccpipe", *args, cwd=cwd, CCPIPE_DATA_DIR=str(cwd / "data"))


def cosign_verify(key: str, image: str, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cosign("verify", "--key", key, "--insecure-ignore-tlog", "--allow-http-registry", *extra, image, cwd=cwd)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """cosign.key/.pub made by cosign, ccpipe.key/.pub made by ccpipe, other.pub from neither signer."""
    assert cosign("generate-key-pair", cwd=tmp_path).returncode == 0
    for name in ("ccpipe", "other"):
        made = ccpipe("keys", "generate", "--output-key-prefix", name, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    return tmp_path


def pushed_image(registry: EmbeddedRegistry, folder: Path, repo: str) -> tuple[str, str]:
    """An image pushed as ``repo:v1``; returns its ``host/repo`` and its digest."""
    digest = make_image(folder / "src", "v1")

    async def push() -> None:
        async with RegistryClient(registry.address, plain_http=True) as client:
            await push_layout(client, folder / "src", repo, "v1")

    asyncio.run(push())
    return f"{registry.address}/{repo}", digest


def test_cosign_3_is_installed() -> None:
    out = subprocess.run(["cosign", "version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "cosign" in out.stdout + out.stderr


def test_cosigns_default_signature_is_verified_by_ccpipe(
    registry_server: EmbeddedRegistry, keys: Path, repo: str
) -> None:
    name, digest = pushed_image(registry_server, keys, repo)
    signed = cosign("sign", "-y", "--key", "cosign.key", "--tlog-upload=false", "--use-signing-config=false",
                    "--allow-http-registry", f"{name}@{digest}", cwd=keys)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    ok = ccpipe("verify", "--key", "cosign.pub", f"docker://{name}:v1", cwd=keys)
    assert ok.returncode == 0, ok.stderr
    assert "Sigstore bundle" in ok.stdout and digest in ok.stdout  # cosign 3 wrote no .sig: the bundle answered
    wrong = ccpipe("verify", "--key", "other.pub", f"docker://{name}@{digest}", cwd=keys)
    assert wrong.returncode == 1 and "with this key" in wrong.stderr


def test_ccpipe_signature_of_a_tag_is_verified_by_cosign_in_both_formats(
    registry_server: EmbeddedRegistry, keys: Path, repo: str
) -> None:
    name, digest = pushed_image(registry_server, keys, repo)
    signed = ccpipe("sign", "--key", "ccpipe.key", f"docker://{name}:v1", "--json", cwd=keys)
    assert signed.returncode == 0, signed.stderr
    result = json.loads(signed.stdout)
    assert result["image_digest"] == digest and result["bundle_digest"]  # the tag was resolved; the digest signed
    # the bundle referrer (cosign 3's default) and the .sig (cosign's older format, CoCo guests') both verify
    for extra in ((), ("--new-bundle-format=false",)):
        ok = cosign_verify("ccpipe.pub", f"{name}@{digest}", *extra, cwd=keys)
        assert ok.returncode == 0, (extra, ok.stderr)
        claims = json.loads(ok.stdout)
        assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
    # the .sig names the repository, not a tag
    legacy = cosign_verify("ccpipe.pub", f"{name}@{digest}", "--new-bundle-format=false", cwd=keys)
    assert json.loads(legacy.stdout)[0]["critical"]["identity"]["docker-reference"] == name
    for extra in ((), ("--new-bundle-format=false",)):
        refused = cosign_verify("other.pub", f"{name}@{digest}", *extra, cwd=keys)
        assert refused.returncode != 0, extra
    # ccpipe reads its own back, bundle first; the repository is the identity
    again = ccpipe("verify", "--key", "ccpipe.pub", "--identity", name, f"docker://{name}@{digest}", cwd=keys)
    assert again.returncode == 0 and "Sigstore bundle" in again.stdout, again.stderr


def test_the_pipelines_image_is_verified_by_cosign_and_ccpipe_in_both_formats(
    registry_server: EmbeddedRegistry, keys: Path, repo: str
) -> None:
    # what the sign stage writes (sign_image, attest_image) and the deploy stage pushes (push_layout)
    digest = make_image(keys / "signed", "hello")
    name = f"{registry_server.address}/{repo}"
    key = load_private_key(keys / "ccpipe.key", PASSWORD["COSIGN_PASSWORD"])
    sign_image(keys / "signed", "hello", key, identity=name)
    attest_image(keys / "signed", "hello", key, predicate_type=SLSA, predicate={"buildDefinition": {}}, identity=name)

    async def push() -> list[dict[str, object]]:
        async with RegistryClient(registry_server.address, plain_http=True) as client:
            await push_layout(client, keys / "signed", repo, "w1", source_ref=digest)
            return await list_referrers(client, repo, digest)

    referrers = asyncio.run(push())
    assert [r["artifactType"] for r in referrers] == ["application/vnd.dev.sigstore.bundle.v0.3+json"] * 2
    for extra in ((), ("--new-bundle-format=false",)):
        ok = cosign_verify("ccpipe.pub", f"{name}@{digest}", *extra, cwd=keys)
        assert ok.returncode == 0, (extra, ok.stderr)
        att = cosign("verify-attestation", "--key", "ccpipe.pub", "--insecure-ignore-tlog", "--allow-http-registry",
                     "--type", "slsaprovenance1", *extra, f"{name}@{digest}", cwd=keys)  # fmt: skip
        assert att.returncode == 0, (extra, att.stderr)
    ok = ccpipe("verify", "--key", "ccpipe.pub", f"docker://{name}:w1", cwd=keys)
    assert ok.returncode == 0 and "Sigstore bundle" in ok.stdout, ok.stderr
    att = ccpipe("verify-attestation", "--key", "ccpipe.pub", "--type", SLSA, f"docker://{name}:w1", cwd=keys)
    assert att.returncode == 0 and "Sigstore bundle" in att.stdout, att.stderr
    wrong = ccpipe("verify-attestation", "--key", "other.pub", f"docker://{name}:w1", cwd=keys)
    assert wrong.returncode == 1


def test_ccpipe_attests_a_registry_image_cosign_verifies_it(
    registry_server: EmbeddedRegistry, keys: Path, repo: str
) -> None:
    name, digest = pushed_image(registry_server, keys, repo)
    (keys / "predicate.json").write_text(json.dumps({"buildDefinition": {"buildType": "https://ccpipe.dev/build/v1"}}))
    made = ccpipe("attest", "--key", "ccpipe.key", "--predicate", "predicate.json", f"docker://{name}:v1", cwd=keys)
    assert made.returncode == 0, made.stderr
    att = cosign("verify-attestation", "--key", "ccpipe.pub", "--insecure-ignore-tlog", "--allow-http-registry",
                 "--type", "slsaprovenance1", f"{name}@{digest}", cwd=keys)  # fmt: skip
    assert att.returncode == 0, att.stderr
    ours = ccpipe("verify-attestation", "--key", "ccpipe.pub", f"docker://{name}@{digest}", "--json", cwd=keys)
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout)["predicate"]["buildDefinition"]["buildType"] == "https://ccpipe.dev/build/v1"
