"""``ccpipe keys generate``, ``sign``, ``verify``, ``attest``, ``encrypt``, ``decrypt``: the sign core by hand.

Flags follow the tools users know: cosign's (``--key``, ``--output-key-prefix``, the
``COSIGN_PASSWORD`` environment variable) and skopeo's (``--encryption-key jwe:PUB.pem``,
``--decryption-key PRIV.pem``, ``--encrypt-layer N``). Images are ``oci:DIR[:TAG]`` (a bare
``DIR[:TAG]`` is taken as ``oci:``); ``sign``, ``verify``, ``attest`` and ``verify-attestation``
also take ``docker://HOST/REPO[:TAG|@DIGEST]`` as cosign does (:mod:`.remote_image`); other
transports are refused with a hint.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ccpipe.oci.cosign_names import COSIGN_SIGN_PREDICATE_TYPE
from ccpipe.oci.layout import LayoutRef
from ccpipe.oci.registry.docker_ref import DOCKER_TRANSPORT, DockerRef
from ccpipe.pipeline.cli.common import output_file_prefix, print_json, say
from ccpipe.pipeline.cli.remote_image import on_remote_image
from ccpipe.schemas.config import Settings
from ccpipe.schemas.errors import InvalidInput
from ccpipe.stages.sign import (
    attest_image,
    decrypt_image,
    encrypt_image,
    generate_keys,
    load_private_key,
    parse_recipient,
    sign_image,
    verify_attestation,
    verify_image_any,
)
from ccpipe.stages.sign.cosign import FORMAT_BUNDLE, Verified
from ccpipe.stages.sign.encrypt import ImageResult

OTHER_TRANSPORTS = frozenset(
    {"docker", "docker-archive", "oci-archive", "dir", "containers-storage", "docker-daemon", "sif", "ostree"}
)
"""skopeo's transports other than ``oci:``, refused with a hint rather than read as a directory name."""
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
T = TypeVar("T")


def image_ref(value: str) -> LayoutRef:
    """An ``oci:DIR[:TAG]`` reference; raises :class:`InvalidInput` for another transport."""
    transport = value.partition(":")[0]
    if transport in OTHER_TRANSPORTS:
        raise InvalidInput(
            f"image {value!r} uses the {transport}: transport; these commands work on OCI layouts",
            hint="give oci:DIR[:TAG] (copy the image there first, e.g. with skopeo copy)",
            code="cli.image.transport",
        )
    return LayoutRef.parse(value)


def signable_ref(value: str) -> LayoutRef | DockerRef:
    """``docker://HOST/REPO[:TAG|@DIGEST]`` or an ``oci:DIR[:TAG]`` reference; raises :class:`InvalidInput`."""
    if not value.startswith(DOCKER_TRANSPORT):
        return image_ref(value)
    try:
        return DockerRef.parse(value)
    except ValueError as exc:
        raise InvalidInput(
            f"image {value!r} is not a valid registry reference: {exc}",
            hint="give docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:HEX",
            code="cli.image.reference",
        ) from exc


def on_image(
    settings: Settings,
    ref: LayoutRef | DockerRef,
    work: Callable[[Path, str | None, str | None], T],
    *,
    push_back: bool = False,
) -> T:
    """Run ``work(layout, image ref, default identity)`` on a layout image or a registry image.

    A registry image is fetched into a temporary layout and named by its digest; its default
    identity is its repository (``HOST/REPO``, what cosign signs for). With ``push_back``, what
    ``work`` attached is pushed to the registry.
    """
    if isinstance(ref, DockerRef):
        return on_remote_image(
            settings, ref, lambda layout, digest: work(layout, digest, ref.identity), push_back=push_back
        )
    return work(ref.path, ref.ref, None)


def _password() -> str:
    # cosign's habit: the password comes from COSIGN_PASSWORD; unset means an empty password
    return os.environ.get("COSIGN_PASSWORD", "")


def cmd_keys_generate(settings: Settings, args: argparse.Namespace) -> int:
    """Write NAME.key (cosign's encrypted format, password from COSIGN_PASSWORD) and NAME.pub."""
    key, pub = generate_keys(output_file_prefix(args.output_key_prefix, "--output-key-prefix"), _password())
    if args.json:
        print_json({"private_key": str(key), "public_key": str(pub)})
    else:
        say(f"Private key written to {key}")
        say(f"Public key written to {pub}")
    return 0


def _usage(message: str, hint: str) -> InvalidInput:
    return InvalidInput(message, hint=hint, code="cli.usage")


def _signer(args: argparse.Namespace) -> Any:
    """The key (--key) or the keyless Sigstore signer (--trust-config + --identity-token)."""
    if bool(args.key) == bool(args.trust_config):
        raise _usage("give either --key or --trust-config (keyless)", "e.g. ccpipe sign --key cosign.key oci:DIR:TAG")
    if args.key:
        return load_private_key(args.key, _password())
    if not args.identity_token:
        raise _usage("keyless signing needs --identity-token", "give the OIDC token or a file holding it")
    from ccpipe.stages.sign.keyless import SigstoreSigner, load_trust_config  # sigstore: imported only when used

    token = args.identity_token
    if Path(token).is_file():
        token = Path(token).read_text().strip()
    return SigstoreSigner(load_trust_config(Path(args.trust_config)), token)


def cmd_sign(settings: Settings, args: argparse.Namespace) -> int:
    """Sign IMAGE with --key (or keylessly): its sha256-<hex>.sig tag and a Sigstore bundle referrer."""
    ref = signable_ref(args.image)
    signer = _signer(args)
    result = on_image(
        settings, ref,
        lambda layout, image, repo: sign_image(layout, image, signer, identity=args.identity or repo),
        push_back=True,
    )  # fmt: skip
    if args.json:
        print_json(
            {
                "image_digest": result.image_digest,
                "signature_digest": result.manifest_digest,
                "tag": result.tag,
                "bundle_digest": result.bundle_digest,
            }
        )
    else:
        bundle = f"; Sigstore bundle referrer {result.bundle_digest}" if result.bundle_digest else ""
        say(f"Signed {result.image_digest}: {result.tag} ({result.manifest_digest}){bundle}")
    return 0


def _where(found: Verified) -> str:
    """Which format verified, for the user: the bundle referrer or the tag."""
    if found.format == FORMAT_BUNDLE:
        return f"Sigstore bundle, referrer {found.manifest_digest}"
    return f".{found.format} tag, {found.manifest_digest}"


def _claim(found: Verified) -> dict[str, Any]:
    """What verified, as cosign prints it: a bundle's statement in the simple-signing shape."""
    if found.format != FORMAT_BUNDLE:
        return found.document
    names = [s["name"] for s in found.document["subject"] if isinstance(s.get("name"), str)]
    return {
        "critical": {
            "identity": {"docker-reference": names[0] if names else ""},
            "image": {"docker-manifest-digest": found.image_digest},
            "type": COSIGN_SIGN_PREDICATE_TYPE,
        },
        "optional": {},
    }


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Verify IMAGE's signature with --key (bundle referrer first, .sig second) or keylessly.

    Says which format verified; exits 1 unless one does.
    """
    ref = signable_ref(args.image)
    if bool(args.key) == bool(args.trust_config):
        raise _usage("give either --key or --trust-config (keyless)", "e.g. ccpipe verify --key cosign.pub oci:DIR:TAG")
    if args.key:
        found = on_image(
            settings, ref, lambda layout, image, _: verify_image_any(layout, image, args.key, identity=args.identity)
        )
        claim, where = _claim(found), _where(found)
    else:
        if not (args.certificate_identity and args.certificate_oidc_issuer):
            raise _usage(
                "keyless verification needs --certificate-identity and --certificate-oidc-issuer",
                "name who must have signed, as cosign does",
            )
        from ccpipe.stages.sign.keyless import load_trust_config, verify_image_keyless

        trust = load_trust_config(Path(args.trust_config))
        claim = on_image(settings, ref, lambda layout, image, _: verify_image_keyless(
            layout, image, trust, cert_identity=args.certificate_identity,
            cert_oidc_issuer=args.certificate_oidc_issuer, identity=args.identity,
        ))  # fmt: skip
        where = "keyless .sig tag"
    if args.json:
        print_json([claim])
    else:
        digest = claim["critical"]["image"]["docker-manifest-digest"]
        say(f"Verified OK ({where}): {digest} signed for {claim['critical']['identity']['docker-reference']!r}")
    return 0


def cmd_attest(settings: Settings, args: argparse.Namespace) -> int:
    """Attach a signed in-toto attestation (DSSE) of --predicate to IMAGE (cosign attest).

    It is stored as the sha256-<hex>.att tag and as a Sigstore bundle referrer.
    """
    ref = signable_ref(args.image)
    try:
        doc = json.loads(Path(args.predicate).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"predicate {args.predicate} is not a readable JSON file", code="cli.predicate") from exc
    # a whole in-toto statement (ccpipe build --provenance) is accepted: its predicate is attached
    predicate = doc.get("predicate", doc) if isinstance(doc, dict) and "_type" in doc else doc
    if not isinstance(predicate, dict):
        raise InvalidInput(f"predicate {args.predicate} is not a JSON object", code="cli.predicate")
    key = load_private_key(args.key, _password())
    result = on_image(
        settings, ref,
        lambda layout, image, repo: attest_image(
            layout, image, key, predicate_type=args.type, predicate=predicate, identity=args.identity or repo
        ),
        push_back=True,
    )  # fmt: skip
    if args.json:
        print_json(
            {
                "image_digest": result.image_digest,
                "attestation_digest": result.manifest_digest,
                "bundle_digest": result.bundle_digest,
            }
        )
    else:
        bundle = f"; Sigstore bundle referrer {result.bundle_digest}" if result.bundle_digest else ""
        say(f"Attested {result.image_digest}: {result.tag} ({result.manifest_digest}){bundle}")
    return 0


def cmd_verify_attestation(settings: Settings, args: argparse.Namespace) -> int:
    """Verify IMAGE's attestation with --key (bundle referrer first, .att second); print the statement."""
    ref = signable_ref(args.image)
    found = on_image(
        settings, ref, lambda layout, image, _: verify_attestation(layout, image, args.key, predicate_type=args.type)
    )
    if args.json:
        print_json(found.document)
    else:
        say(f"Verified OK ({_where(found)}): {found.document['predicateType']} about {ref}")
    return 0


def _report(result: ImageResult, args: argparse.Namespace, verb: str) -> int:
    changed = sum(1 for layer in result.layers if layer.changed)
    if args.json:
        print_json(
            {
                "manifest_digest": result.manifest_digest,
                "source_manifest_digest": result.source_manifest_digest,
                "layers_changed": changed,
            }
        )
    else:
        say(f"{verb} {changed} layer(s): {result.manifest_digest}")
    return 0


def cmd_encrypt(settings: Settings, args: argparse.Namespace) -> int:
    """Copy SRC to DST with its layers encrypted for every --encryption-key (skopeo's flags)."""
    src, dst = image_ref(args.src), image_ref(args.dst)
    recipients = [parse_recipient(spec) for spec in args.encryption_key]
    result = encrypt_image(src, dst, recipients, layers=args.encrypt_layer or None)
    return _report(result, args, "Encrypted")


def cmd_decrypt(settings: Settings, args: argparse.Namespace) -> int:
    """Copy SRC to DST with every encrypted layer decrypted by one of --decryption-key."""
    result = decrypt_image(image_ref(args.src), image_ref(args.dst), list(args.decryption_key))
    return _report(result, args, "Decrypted")


REMOTE_OR_LAYOUT = "docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]"


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Keys, signatures, attestations and encryption on OCI layouts."""
    keys = add("keys", lambda s, a: 0, "signing keys (cosign's format)", json_flag=False)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = add("generate", cmd_keys_generate, "write NAME.key and NAME.pub (password: COSIGN_PASSWORD)", into=keys_sub)
    p.add_argument("--output-key-prefix", default="cosign", metavar="NAME", help="file name prefix (default: cosign)")

    p = add("sign", cmd_sign, "sign an image in a registry or an OCI layout (cosign style)")
    p.add_argument("--key", help="private key file (NAME.key; password: COSIGN_PASSWORD)")
    p.add_argument("--trust-config", metavar="FILE", help="keyless: Sigstore ClientTrustConfig JSON (instead of --key)")
    p.add_argument("--identity-token", metavar="TOKEN", help="keyless: the OIDC identity token, or a file holding it")
    p.add_argument(
        "--identity", help="docker-reference to sign for (default: HOST/REPO of a docker:// image, else the tag)"
    )
    p.add_argument("image", metavar="IMAGE", help=REMOTE_OR_LAYOUT)

    p = add("verify", cmd_verify, "verify an image's signature; exit 1 if none verifies")
    p.add_argument("--key", help="public key file (NAME.pub)")
    p.add_argument("--trust-config", metavar="FILE", help="keyless: Sigstore ClientTrustConfig JSON (instead of --key)")
    p.add_argument("--certificate-identity", help="keyless: the signer's identity (email or URI) to require")
    p.add_argument("--certificate-oidc-issuer", help="keyless: the OIDC issuer to require")
    p.add_argument("--identity", help="also require this docker-reference")
    p.add_argument("image", metavar="IMAGE", help=REMOTE_OR_LAYOUT)

    p = add("attest", cmd_attest, "attach a signed in-toto attestation (DSSE) to an image")
    p.add_argument("--key", required=True, help="private key file (NAME.key)")
    p.add_argument("--predicate", required=True, help="JSON file of the predicate (or a whole in-toto statement)")
    p.add_argument("--type", default=SLSA_PROVENANCE_V1, help="predicate type URI (default: SLSA provenance v1)")
    p.add_argument("--identity", help="subject name (default: HOST/REPO of a docker:// image, else the tag)")
    p.add_argument("image", metavar="IMAGE", help=REMOTE_OR_LAYOUT)

    p = add("verify-attestation", cmd_verify_attestation, "verify an image's attestation; exit 1 if none verifies")
    p.add_argument("--key", required=True, help="public key file (NAME.pub)")
    p.add_argument("--type", help="require this predicate type")
    p.add_argument("image", metavar="IMAGE", help=REMOTE_OR_LAYOUT)

    p = add("encrypt", cmd_encrypt, "encrypt an image's layers (ocicrypt, skopeo's flags)")
    p.add_argument("--encryption-key", action="append", required=True, metavar="jwe:PUB.pem", help="recipient")
    p.add_argument("--encrypt-layer", action="append", type=int, metavar="N", help="only this layer (repeatable)")
    p.add_argument("src", metavar="SRC", help="oci:DIR[:TAG]")
    p.add_argument("dst", metavar="DST", help="oci:DIR[:TAG]")

    p = add("decrypt", cmd_decrypt, "decrypt an image's layers (skopeo's --decryption-key)")
    p.add_argument("--decryption-key", action="append", required=True, metavar="PRIV.pem", help="private key")
    p.add_argument("src", metavar="SRC", help="oci:DIR[:TAG]")
    p.add_argument("dst", metavar="DST", help="oci:DIR[:TAG]")
