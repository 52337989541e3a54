"""``ccpipe build`` and the signing commands as a user runs them (subprocess, real skopeo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.unit.stages.build.build_helpers import git
from tests.unit.stages.sign.private_sigstore import ISSUER, PrivateSigstore
from tests.unit.stages.sign.sign_helpers import write_pem_pair

pytestmark = pytest.mark.integration
CCPIPE = [sys.executable, "-m", "ccpipe"]
SPEC = """[workload]
name = "hello"
[build]
entrypoint = ["/app/hello.sh"]
env = { GREETING = "hi" }
[[build.copy]]
src = "app/"
dst = "/app/"
mode = "0755"
[tee]
types = ["snp"]
"""


def ccpipe(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CCPIPE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CCPIPE_DATA_DIR": str(data_dir), **env},
    )


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the demo workload, one commit."""
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / "app" / "hello.sh").write_text('#!/bin/sh\necho "$GREETING"\n')
    (root / "ccpipe.toml").write_text(SPEC)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def built(tmp_path: Path, repo: Path) -> Path:
    """``ccpipe build`` of the repository into a layout; returns the layout directory."""
    out = tmp_path / "plain"
    r = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_build_twice_same_digest_and_skopeo_reads_it(tmp_path: Path, repo: Path) -> None:
    clone = tmp_path / "elsewhere" / "clone"
    clone.parent.mkdir()
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    first = ccpipe(tmp_path / "d1", "build", str(repo), "--out", str(tmp_path / "a"))
    second = ccpipe(tmp_path / "d2", "build", str(clone), "--ref", "main", "--out", str(tmp_path / "b"), "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    digest = first.stdout.strip()
    info = json.loads(second.stdout)
    assert digest.startswith("sha256:") and info["image_digest"] == digest
    assert info["commit"] == git(repo, "rev-parse", "HEAD")
    assert info["provenance"]["subject"][0]["digest"]["sha256"] == digest.removeprefix("sha256:")

    inspected = skopeo("inspect", f"oci:{tmp_path / 'a'}:hello")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == digest
    config = skopeo("inspect", "--config", f"oci:{tmp_path / 'b'}:hello")
    assert config.returncode == 0, config.stderr
    doc = json.loads(config.stdout)
    assert doc["config"]["Entrypoint"] == ["/app/hello.sh"] and "GREETING=hi" in doc["config"]["Env"]


def test_build_of_a_missing_ref_fails_with_one_sentence(tmp_path: Path, repo: Path) -> None:
    r = ccpipe(tmp_path / "data", "build", str(repo), "--ref", "no-such-branch", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and r.stdout == ""
    line = one_sentence(r.stderr)
    assert "no-such-branch" in line and str(repo) in line


def test_build_refuses_a_base_outside_the_allowed_dirs(tmp_path: Path, repo: Path, built: Path) -> None:
    spec = (repo / "ccpipe.toml").read_text().replace("[build]\n", f'[build]\nbase = "oci:{built}:hello"\n')
    (repo / "ccpipe.toml").write_text(spec)
    git(repo, "commit", "-q", "-am", "base")
    refused = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(tmp_path / "o"))
    assert refused.returncode == 1 and "not under an allowed base directory" in one_sentence(refused.stderr)
    allowed = ccpipe(tmp_path / "data", "build", str(repo), "--out", str(tmp_path / "o"), "--base-dir", str(built))
    assert allowed.returncode == 0, allowed.stderr


def rsa_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """An RSA key pair as skopeo's --decryption-key / --encryption-key take them: (private, public) PEM files."""
    return write_pem_pair(folder, name, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_keys_sign_verify_like_cosign(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "data"
    env = {"COSIGN_PASSWORD": "s3cret"}
    gen = ccpipe(data, "keys", "generate", "--output-key-prefix", str(tmp_path / "ci"), **env)
    assert gen.returncode == 0, gen.stderr
    assert (tmp_path / "ci.key").read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    assert oct((tmp_path / "ci.key").stat().st_mode & 0o777) == "0o600"
    image = f"oci:{built}:hello"
    signed = ccpipe(data, "sign", "--key", str(tmp_path / "ci.key"), "--identity", "reg/ccpipe/hello", image, **env)
    assert signed.returncode == 0, signed.stderr
    ok = ccpipe(data, "verify", "--key", str(tmp_path / "ci.pub"), "--identity", "reg/ccpipe/hello", image, "--json")
    assert ok.returncode == 0, ok.stderr
    digest = json.loads(ok.stdout)[0]["critical"]["image"]["docker-manifest-digest"]
    assert json.loads(skopeo("inspect", image).stdout)["Digest"] == digest

    # a wrong password opens nothing; a wrong key, a wrong identity, a missing signature: exit 1, one sentence
    bad_pw = ccpipe(data, "sign", "--key", str(tmp_path / "ci.key"), image, COSIGN_PASSWORD="guess")
    assert bad_pw.returncode == 1 and "password" in one_sentence(bad_pw.stderr)
    assert ccpipe(data, "keys", "generate", "--output-key-prefix", str(tmp_path / "other")).returncode == 0
    wrong = ccpipe(data, "verify", "--key", str(tmp_path / "other.pub"), image)
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "verifies with this key" in one_sentence(wrong.stderr)
    elsewhere = ccpipe(data, "verify", "--key", str(tmp_path / "ci.pub"), "--identity", "evil/repo", image)
    assert elsewhere.returncode == 1 and "evil/repo" in one_sentence(elsewhere.stderr)
    unsigned = ccpipe(data, "build", str(built.parent / "repo"), "--out", str(tmp_path / "fresh"))
    assert unsigned.returncode == 0
    missing = ccpipe(data, "verify", "--key", str(tmp_path / "ci.pub"), f"oci:{tmp_path / 'fresh'}:hello")
    assert missing.returncode == 1 and "no signature" in one_sentence(missing.stderr)


def test_tampered_signature_payload_is_refused(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "data"
    assert ccpipe(data, "keys", "generate", "--output-key-prefix", str(tmp_path / "k")).returncode == 0
    image = f"oci:{built}:hello"
    assert ccpipe(data, "sign", "--key", str(tmp_path / "k.key"), image).returncode == 0
    sig_manifest = json.loads(skopeo("inspect", "--raw", f"oci:{built}:" + sig_tag_of(built)).stdout)
    blob = built / "blobs" / "sha256" / sig_manifest["layers"][0]["digest"].removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes().replace(b'"optional":null', b'"optional":{"x":1}'))
    # the Sigstore bundle referrer still verifies, and says so; once it is tampered with too, nothing does
    r = ccpipe(data, "verify", "--key", str(tmp_path / "k.pub"), image)
    assert r.returncode == 0 and "Sigstore bundle" in r.stdout
    for entry in json.loads((built / "index.json").read_text())["manifests"]:
        if entry.get("artifactType") == "application/vnd.dev.sigstore.bundle.v0.3+json":
            referrer = json.loads((built / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")).read_text())
            bundle = built / "blobs" / "sha256" / referrer["layers"][0]["digest"].removeprefix("sha256:")
            bundle.write_bytes(bundle.read_bytes().replace(b'"sig":"', b'"sig":"AA'))
    r = ccpipe(data, "verify", "--key", str(tmp_path / "k.pub"), image)
    assert r.returncode == 1 and one_sentence(r.stderr).startswith("ccpipe verify:")


def sig_tag_of(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    tag: str = next(
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in index["manifests"]
        # untagged entries are the Sigstore bundle referrers
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith(".sig")
    )
    return tag


def blobs_of(image: str) -> list[str]:
    """The config and layer digests of an image, as skopeo reads its manifest."""
    manifest = json.loads(skopeo("inspect", "--raw", image).stdout)
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def test_encrypt_decrypt_interoperate_with_skopeo(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "data"
    priv, pub = rsa_pair(tmp_path, "alice")
    other_priv, _ = rsa_pair(tmp_path, "mallory")
    enc = ccpipe(
        data, "encrypt", "--encryption-key", f"jwe:{pub}", f"oci:{built}:hello", f"oci:{tmp_path / 'enc'}:hello"
    )
    assert enc.returncode == 0, enc.stderr
    plain_digest = json.loads(skopeo("inspect", f"oci:{built}:hello").stdout)["Digest"]
    # skopeo decrypts what ccpipe encrypted (it rewrites the manifest: compare config and layers)
    out = skopeo("copy", "--decryption-key", str(priv), f"oci:{tmp_path / 'enc'}:hello", f"oci:{tmp_path / 'sk'}:hello")
    assert out.returncode == 0, out.stderr
    assert blobs_of(f"oci:{tmp_path / 'sk'}:hello") == blobs_of(f"oci:{built}:hello")
    # ... ccpipe decrypts what skopeo encrypted, back to the very same image
    out = skopeo("copy", "--encryption-key", f"jwe:{pub}", f"oci:{built}:hello", f"oci:{tmp_path / 'skenc'}:hello")
    assert out.returncode == 0, out.stderr
    dec = ccpipe(
        data, "decrypt", "--decryption-key", str(priv), f"oci:{tmp_path / 'skenc'}:hello",
        f"oci:{tmp_path / 'back'}:hello", "--json",
    )  # fmt: skip
    assert dec.returncode == 0, dec.stderr
    assert json.loads(dec.stdout)["manifest_digest"] == plain_digest
    # the wrong private key: exit 1, one sentence, nothing tagged in the destination
    wrong = ccpipe(
        data, "decrypt", "--decryption-key", str(other_priv), f"oci:{tmp_path / 'enc'}:hello",
        f"oci:{tmp_path / 'nope'}:hello",
    )  # fmt: skip
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "key" in one_sentence(wrong.stderr)
    assert skopeo("inspect", f"oci:{tmp_path / 'nope'}:hello").returncode != 0


def test_keyless_sign_and_verify_against_a_private_sigstore(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "data"
    image = f"oci:{built}:hello"
    with PrivateSigstore() as deployment:
        (tmp_path / "trust.json").write_text(json.dumps(deployment.trust_config()))
        (tmp_path / "token").write_text(deployment.token("ci@pipeline.private.test"))
        signed = ccpipe(
            data, "sign", "--trust-config", str(tmp_path / "trust.json"), "--identity-token", str(tmp_path / "token"),
            image,
        )  # fmt: skip
        assert signed.returncode == 0, signed.stderr
    trust = ["--trust-config", str(tmp_path / "trust.json"), "--certificate-oidc-issuer", ISSUER]
    ok = ccpipe(data, "verify", *trust, "--certificate-identity", "ci@pipeline.private.test", image)  # offline
    assert ok.returncode == 0, ok.stderr
    other = ccpipe(data, "verify", *trust, "--certificate-identity", "mallory@evil.test", image)
    assert other.returncode == 1 and "verifies keylessly" in one_sentence(other.stderr)
    both = ccpipe(data, "verify", *trust, "--key", str(tmp_path / "x.pub"), image)
    assert both.returncode == 2 and "either --key or --trust-config" in one_sentence(both.stderr)
