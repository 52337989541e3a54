"""Interop with skopeo 1.9.3 (containers/ocicrypt) in both directions, on umoci-made images."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ccpipe.stages.sign.encrypt import decrypt_image, encrypt_image
from ccpipe.stages.sign.recipients import JweRecipient, load_decryption_key
from tests.unit.stages.sign import raw_layout as layout
from tests.unit.stages.sign.sign_helpers import layer_digests, run


def test_skopeo_decrypts_what_we_encrypt_rsa(umoci_image: Path, tmp_path: Path, rsa_pair: tuple[Path, Path]) -> None:
    encrypt_image(f"{umoci_image}:t", tmp_path / "enc", [JweRecipient.from_file(rsa_pair[1])])
    run("skopeo", "copy", "--decryption-key", rsa_pair[0], f"oci:{tmp_path / 'enc'}:t", f"oci:{tmp_path / 'dec'}:t")
    assert layer_digests(tmp_path / "dec") == layer_digests(umoci_image)
    for digest in layer_digests(tmp_path / "dec"):  # skopeo wrote the bytes; check them, not just names
        assert layout.read_blob(tmp_path / "dec", digest, max_size=1 << 30)


def test_skopeo_decrypts_our_multi_recipient_image_with_either_key(
    umoci_image: Path, tmp_path: Path, rsa_pair: tuple[Path, Path], ec_pair: tuple[Path, Path]
) -> None:
    recipients = [JweRecipient.from_file(rsa_pair[1]), JweRecipient.from_file(ec_pair[1])]
    encrypt_image(f"{umoci_image}:t", tmp_path / "enc", recipients)
    for name, (priv, _) in {"rsa": rsa_pair, "ec": ec_pair}.items():
        run("skopeo", "copy", "--decryption-key", priv, f"oci:{tmp_path / 'enc'}:t", f"oci:{tmp_path / name}:t")
        assert layer_digests(tmp_path / name) == layer_digests(umoci_image)


def test_we_decrypt_what_skopeo_encrypts(
    umoci_image: Path, tmp_path: Path, rsa_pair: tuple[Path, Path], ec_pair: tuple[Path, Path]
) -> None:
    for name, (priv, pub) in {"rsa": rsa_pair, "ec": ec_pair}.items():
        enc = tmp_path / f"skopeo-enc-{name}"
        run("skopeo", "copy", "--encryption-key", f"jwe:{pub}", f"oci:{umoci_image}:t", f"oci:{enc}:t")
        assert all(d not in layer_digests(umoci_image) for d in layer_digests(enc))
        decrypt_image(f"{enc}:t", tmp_path / f"dec-{name}", [load_decryption_key(priv)])
        assert layer_digests(tmp_path / f"dec-{name}") == layer_digests(umoci_image)


def test_skopeo_refuses_our_image_with_a_wrong_key(
    umoci_image: Path, tmp_path: Path, rsa_pair: tuple[Path, Path], ec_pair: tuple[Path, Path]
) -> None:
    encrypt_image(f"{umoci_image}:t", tmp_path / "enc", [JweRecipient.from_file(rsa_pair[1])])
    proc = subprocess.run(
        [
            "skopeo",
            "copy",
            "--decryption-key",
            str(ec_pair[0]),
            f"oci:{tmp_path / 'enc'}:t",
            f"oci:{tmp_path / 'dec'}:t",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
