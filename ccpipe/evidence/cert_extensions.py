"""Vendor extensions of endorsement certificates: AMD VCEK/VLEK TCB extensions, Intel SGX PCK extension.

AMD (VCEK/VLEK, KDS spec): one X.509 extension per value under ``1.3.6.1.4.1.3704.1``:
``.1`` structVersion INTEGER, ``.2`` productName IA5String, ``.3.1`` blSPL, ``.3.2`` teeSPL,
``.3.3`` snpSPL, ``.3.4``-``.3.7`` spl_4..7, ``.3.8`` ucodeSPL, ``.3.9`` fmcSPL (Turin) — all
INTEGER — and ``.4`` hwID (the chip id: 64 raw bytes for Milan/Genoa, 8 for Turin; some
certificates wrap it in a DER OCTET STRING).

Intel (PCK certificate, "SGX PCK Certificate and CRL Profile"): one extension
``1.2.840.113741.1.13.1``, a SEQUENCE of (OID, value) pairs: ``.1`` PPID, ``.2`` TCB (sixteen
component SVNs ``.2.1``-``.2.16``, PCESVN ``.2.17``, CPUSVN ``.2.18``), ``.3`` PCE-ID, ``.4``
FMSPC, ``.5`` SGX type (ENUMERATED), and for platform CA certificates ``.6`` platform instance
id and ``.7`` configuration (dynamicPlatform, cachedKeys, SMTEnabled).

Parsing raises :class:`MalformedEvidence`; encoding is used by the emulated PKI.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from ccpipe.evidence import _der
from ccpipe.evidence.errors import MalformedEvidence
from ccpipe.evidence.snp_report import TcbVersion

AMD_OID = "1.3.6.1.4.1.3704.1"
VCEK_STRUCT_VERSION = f"{AMD_OID}.1"
VCEK_PRODUCT_NAME = f"{AMD_OID}.2"
VCEK_BL_SPL = f"{AMD_OID}.3.1"
VCEK_TEE_SPL = f"{AMD_OID}.3.2"
VCEK_SNP_SPL = f"{AMD_OID}.3.3"
VCEK_UCODE_SPL = f"{AMD_OID}.3.8"
VCEK_FMC_SPL = f"{AMD_OID}.3.9"
VCEK_HW_ID = f"{AMD_OID}.4"

SGX_EXTENSION = "1.2.840.113741.1.13.1"
_SGX_TCB = f"{SGX_EXTENSION}.2"
_SGX_CONFIGURATION = f"{SGX_EXTENSION}.7"


@dataclass(frozen=True)
class VcekExtensions:
    """The AMD extensions of a VCEK/VLEK certificate."""

    struct_version: int | None
    product_name: str | None
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    fmc_spl: int | None
    hw_id: bytes | None

    def matches(self, tcb: TcbVersion) -> bool:
        """True when every SPL equals the corresponding component of ``tcb`` (FMC only for Turin)."""
        same = (self.bl_spl, self.tee_spl, self.snp_spl, self.ucode_spl) == (
            tcb.bootloader,
            tcb.tee,
            tcb.snp,
            tcb.microcode,
        )
        return same and (not tcb.turin or self.fmc_spl == tcb.fmc)

    def extensions(self) -> list[x509.Extension[x509.UnrecognizedExtension]]:
        """These values as X.509 extensions, encoded as AMD does (hwID as raw bytes)."""
        pairs: list[tuple[str, bytes]] = []
        if self.struct_version is not None:
            pairs.append((VCEK_STRUCT_VERSION, _der.integer(self.struct_version)))
        if self.product_name is not None:
            pairs.append((VCEK_PRODUCT_NAME, _der.tlv(_der.IA5STRING, self.product_name.encode("ascii"))))
        if self.fmc_spl is not None:
            pairs.append((VCEK_FMC_SPL, _der.integer(self.fmc_spl)))
        pairs += [
            (VCEK_BL_SPL, _der.integer(self.bl_spl)),
            (VCEK_TEE_SPL, _der.integer(self.tee_spl)),
            *((f"{AMD_OID}.3.{i}", _der.integer(0)) for i in (4, 5, 6, 7)),
            (VCEK_SNP_SPL, _der.integer(self.snp_spl)),
            (VCEK_UCODE_SPL, _der.integer(self.ucode_spl)),
        ]
        if self.hw_id is not None:
            pairs.append((VCEK_HW_ID, self.hw_id))
        return [_unrecognized(o, v) for o, v in pairs]


def _unrecognized(dotted: str, value: bytes) -> x509.Extension[x509.UnrecognizedExtension]:
    oid = x509.ObjectIdentifier(dotted)
    return x509.Extension(oid, False, x509.UnrecognizedExtension(oid, value))


def _extension_value(cert: x509.Certificate, dotted: str) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(dotted))
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise MalformedEvidence(f"certificate extension {dotted} has an unexpected type")
    return value.value


def vcek_extensions(cert: x509.Certificate) -> VcekExtensions:
    """Read the AMD extensions of a VCEK/VLEK certificate.

    Raises :class:`MalformedEvidence` if a required SPL is missing or an extension is malformed.
    """
    try:

        def spl(dotted: str, required: bool = True) -> int | None:
            value = _extension_value(cert, dotted)
            if value is None:
                if required:
                    raise ValueError(f"missing extension {dotted}")
                return None
            return _der.decode_uint(_der.expect(value, _der.INTEGER))

        name = _extension_value(cert, VCEK_PRODUCT_NAME)
        hw_id = _extension_value(cert, VCEK_HW_ID)
        if hw_id is not None and len(hw_id) not in (8, 64):
            hw_id = _der.expect(hw_id, _der.OCTET_STRING)  # newer certificates wrap it in DER
        return VcekExtensions(
            struct_version=spl(VCEK_STRUCT_VERSION, required=False),
            product_name=None if name is None else _der.expect(name, _der.IA5STRING).decode("ascii"),
            bl_spl=spl(VCEK_BL_SPL) or 0,
            tee_spl=spl(VCEK_TEE_SPL) or 0,
            snp_spl=spl(VCEK_SNP_SPL) or 0,
            ucode_spl=spl(VCEK_UCODE_SPL) or 0,
            fmc_spl=spl(VCEK_FMC_SPL, required=False),
            hw_id=hw_id,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvidence(f"VCEK certificate extensions: {exc}") from exc


@dataclass(frozen=True)
class PckExtensions:
    """The values of an Intel SGX PCK certificate's extension."""

    ppid: bytes
    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: tuple[bool, bool, bool] | None = None
    """dynamicPlatform, cachedKeys, SMTEnabled (platform CA certificates only)."""

    def encode(self) -> bytes:
        """The DER value of the ``1.2.840.113741.1.13.1`` extension."""
        if len(self.sgx_tcb_components) != 16:
            raise ValueError("a PCK TCB has 16 SGX component SVNs")
        tcb = [
            _der.sequence(_der.oid(f"{_SGX_TCB}.{i + 1}"), _der.integer(svn))
            for i, svn in enumerate(self.sgx_tcb_components)
        ]
        tcb.append(_der.sequence(_der.oid(f"{_SGX_TCB}.17"), _der.integer(self.pce_svn)))
        tcb.append(_der.sequence(_der.oid(f"{_SGX_TCB}.18"), _der.tlv(_der.OCTET_STRING, self.cpu_svn)))
        items = [
            _der.sequence(_der.oid(f"{SGX_EXTENSION}.1"), _der.tlv(_der.OCTET_STRING, self.ppid)),
            _der.sequence(_der.oid(_SGX_TCB), _der.sequence(*tcb)),
            _der.sequence(_der.oid(f"{SGX_EXTENSION}.3"), _der.tlv(_der.OCTET_STRING, self.pce_id)),
            _der.sequence(_der.oid(f"{SGX_EXTENSION}.4"), _der.tlv(_der.OCTET_STRING, self.fmspc)),
            _der.sequence(_der.oid(f"{SGX_EXTENSION}.5"), _der.integer(self.sgx_type, _der.ENUMERATED)),
        ]
        if self.platform_instance_id is not None:
            items.append(
                _der.sequence(_der.oid(f"{SGX_EXTENSION}.6"), _der.tlv(_der.OCTET_STRING, self.platform_instance_id))
            )
        if self.configuration is not None:
            flags = [
                _der.sequence(_der.oid(f"{_SGX_CONFIGURATION}.{i + 1}"), _der.boolean(v))
                for i, v in enumerate(self.configuration)
            ]
            items.append(_der.sequence(_der.oid(_SGX_CONFIGURATION), _der.sequence(*flags)))
        return _der.sequence(*items)

    def extension(self) -> x509.Extension[x509.UnrecognizedExtension]:
        """This value as the X.509 extension (not critical, as Intel issues it)."""
        return _unrecognized(SGX_EXTENSION, self.encode())


def _pairs(value: bytes) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tag, item in _der.children(value):
        if tag != _der.SEQUENCE:
            raise ValueError("SGX extension entries must be SEQUENCEs")
        inner = _der.children(item)
        if len(inner) != 2 or inner[0][0] != _der.OID:
            raise ValueError("SGX extension entries are (OID, value) pairs")
        out[_der.decode_oid(inner[0][1])] = inner[1]
    return out


def parse_pck_extension(value: bytes) -> PckExtensions:
    """Parse the DER value of the SGX extension; raises :class:`MalformedEvidence` if malformed."""
    try:
        top = _pairs(_der.expect(value, _der.SEQUENCE))
        tcb = _pairs(top[_SGX_TCB][1])
        comps = tuple(_der.decode_uint(tcb[f"{_SGX_TCB}.{i}"][1]) for i in range(1, 17))
        config = None
        if _SGX_CONFIGURATION in top:
            flags = _pairs(top[_SGX_CONFIGURATION][1])
            config = tuple(flags[f"{_SGX_CONFIGURATION}.{i}"][1] != b"\x00" for i in (1, 2, 3))
        instance = top.get(f"{SGX_EXTENSION}.6")
        return PckExtensions(
            ppid=top[f"{SGX_EXTENSION}.1"][1],
            sgx_tcb_components=comps,
            pce_svn=_der.decode_uint(tcb[f"{_SGX_TCB}.17"][1]),
            cpu_svn=tcb[f"{_SGX_TCB}.18"][1],
            pce_id=top[f"{SGX_EXTENSION}.3"][1],
            fmspc=top[f"{SGX_EXTENSION}.4"][1],
            sgx_type=_der.decode_uint(top[f"{SGX_EXTENSION}.5"][1]),
            platform_instance_id=None if instance is None else instance[1],
            configuration=config,  # type: ignore[arg-type]
        )
    except (KeyError, ValueError) as exc:
        raise MalformedEvidence(f"SGX PCK certificate extension: {exc}") from exc


def pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Read the SGX extension of a PCK certificate; raises :class:`MalformedEvidence` if absent or malformed."""
    value = _extension_value(cert, SGX_EXTENSION)
    if value is None:
        raise MalformedEvidence("certificate has no SGX PCK extension (1.2.840.113741.1.13.1)")
    return parse_pck_extension(value)
