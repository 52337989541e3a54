"""The AMD SEV-SNP ATTESTATION_REPORT binary layout: parse, serialize, signed portion.

The one home of this layout in ccpipe: the emulated backend writes it, the hardware backends
read it, the attestation service's verifier imports it. Pure (bytes in, dataclasses out); no
crypto, no I/O.

Layout (SEV-SNP firmware ABI specification, "ATTESTATION_REPORT structure"), 0x4A0 bytes,
all integers little-endian. :data:`LAYOUT` below is the table the code is driven by; the
offsets are these:

=======  ====  ===================  ============================================
offset   size  field                notes
=======  ====  ===================  ============================================
0x000    4     version              2, 3 (adds CPUID fields) or 5 (adds mit vectors)
0x004    4     guest_svn
0x008    8     policy               guest policy (bits: abi minor/major, SMT, debug…)
0x010    16    family_id
0x020    16    image_id
0x030    4     vmpl
0x034    4     signature_algo       1 = ECDSA P-384 with SHA-384
0x038    8     current_tcb          TCB_VERSION
0x040    8     platform_info        bit 0 SMT enabled, bit 1 TSME enabled…
0x048    4     key_info             bit 0 author_key_en, bit 1 mask_chip_key, bits 2-4 signing key
0x04C    4     (reserved)
0x050    64    report_data          guest-chosen
0x090    48    measurement          launch measurement
0x0C0    32    host_data            hypervisor-chosen at launch (CoCo: initdata digest)
0x0E0    48    id_key_digest
0x110    48    author_key_digest
0x140    32    report_id
0x160    32    report_id_ma
0x180    8     reported_tcb         the TCB the signing VCEK is derived for
0x188    1     cpuid_fam_id         version ≥ 3 (reserved in v2)
0x189    1     cpuid_mod_id         version ≥ 3
0x18A    1     cpuid_step           version ≥ 3
0x18B    21    (reserved)
0x1A0    64    chip_id              zero when mask_chip_id is set
0x1E0    8     committed_tcb
0x1E8    3     current build/minor/major (one byte each, build first)
0x1EC    3     committed build/minor/major
0x1F0    8     launch_tcb
0x1F8    8     launch_mit_vector    version ≥ 5
0x200    8     current_mit_vector   version ≥ 5
0x2A0    72    signature r          little-endian, zero-extended (P-384 uses 48 bytes)
0x2E8    72    signature s          little-endian
0x330    368   (reserved)
=======  ====  ===================  ============================================

The signature covers bytes ``[0x000, 0x2A0)``. A verifier should hash the bytes it received
(:func:`signed_portion` of the raw bytes); re-serializing drops reserved bytes, which firmware
always sets to zero.

TCB_VERSION (8 bytes): Milan/Genoa ``[bootloader, tee, 0, 0, 0, 0, snp, microcode]``;
Turin and later ``[fmc, bootloader, tee, snp, 0, 0, 0, microcode]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ccpipe.evidence.errors import MalformedEvidence, UnsupportedEvidence

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_OFFSET = 0x2A0
SIGNATURE_COMPONENT_SIZE = 72
SIG_ALGO_ECDSA_P384_SHA384 = 1

SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7

POLICY_SMT_ALLOWED = 1 << 16
POLICY_RESERVED_ONE = 1 << 17  # must be 1 in every guest policy
POLICY_MIGRATE_MA = 1 << 18
POLICY_DEBUG = 1 << 19
POLICY_SINGLE_SOCKET = 1 << 20

PLATFORM_SMT_ENABLED = 1 << 0
PLATFORM_TSME_ENABLED = 1 << 1

Kind = Literal["u8", "u32", "u64", "bytes", "tcb"]


class Field(NamedTuple):
    """One field of the report: where it is, how wide, how it is decoded, from which version."""

    name: str
    offset: int
    size: int
    kind: Kind
    since: int = 0


LAYOUT: tuple[Field, ...] = (
    Field("version", 0x000, 4, "u32"),
    Field("guest_svn", 0x004, 4, "u32"),
    Field("policy", 0x008, 8, "u64"),
    Field("family_id", 0x010, 16, "bytes"),
    Field("image_id", 0x020, 16, "bytes"),
    Field("vmpl", 0x030, 4, "u32"),
    Field("signature_algo", 0x034, 4, "u32"),
    Field("current_tcb", 0x038, 8, "tcb"),
    Field("platform_info", 0x040, 8, "u64"),
    Field("key_info", 0x048, 4, "u32"),
    Field("report_data", 0x050, 64, "bytes"),
    Field("measurement", 0x090, 48, "bytes"),
    Field("host_data", 0x0C0, 32, "bytes"),
    Field("id_key_digest", 0x0E0, 48, "bytes"),
    Field("author_key_digest", 0x110, 48, "bytes"),
    Field("report_id", 0x140, 32, "bytes"),
    Field("report_id_ma", 0x160, 32, "bytes"),
    Field("reported_tcb", 0x180, 8, "tcb"),
    Field("cpuid_fam_id", 0x188, 1, "u8", since=3),
    Field("cpuid_mod_id", 0x189, 1, "u8", since=3),
    Field("cpuid_step", 0x18A, 1, "u8", since=3),
    Field("chip_id", 0x1A0, 64, "bytes"),
    Field("committed_tcb", 0x1E0, 8, "tcb"),
    Field("current_build", 0x1E8, 1, "u8"),
    Field("current_minor", 0x1E9, 1, "u8"),
    Field("current_major", 0x1EA, 1, "u8"),
    Field("committed_build", 0x1EC, 1, "u8"),
    Field("committed_minor", 0x1ED, 1, "u8"),
    Field("committed_major", 0x1EE, 1, "u8"),
    Field("launch_tcb", 0x1F0, 8, "tcb"),
    Field("launch_mit_vector", 0x1F8, 8, "u64", since=5),
    Field("current_mit_vector", 0x200, 8, "u64", since=5),
    Field("signature_r", 0x2A0, 72, "bytes"),
    Field("signature_s", 0x2E8, 72, "bytes"),
)
"""Every named field of the report, in offset order (reserved ranges are not listed)."""

FIELDS: dict[str, Field] = {f.name: f for f in LAYOUT}

# LAYOUT unpacked once into what each per-report loop needs (NamedTuple attribute look-ups and
# kind comparisons per field cost more than the work itself; a report is parsed, checked and
# serialized several times per handshake).
_CHECKS = tuple((f.name, f.kind == "bytes", f.size, 1 << (8 * f.size)) for f in LAYOUT if f.kind != "tcb")
"""(name, is a byte string, size, integer bound) of every field :meth:`SnpReport.__post_init__` checks."""
_BYTES, _TCB, _INT = 0, 1, 2
_CODECS = tuple(
    (f.name, f.offset, f.offset + f.size, f.size, {"bytes": _BYTES, "tcb": _TCB}.get(f.kind, _INT), f.since)
    for f in LAYOUT
)
"""(name, start, end, size, codec, since) of every field, in LAYOUT order."""


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """A TCB_VERSION: the raw 64-bit value and whether it uses the Turin layout (with FMC)."""

    raw: int
    turin: bool = False

    @classmethod
    def from_parts(cls, *, bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None = None) -> TcbVersion:
        """Build from component SVNs; giving ``fmc`` selects the Turin layout."""
        if fmc is None:
            b = bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])
        else:
            b = bytes([fmc, bootloader, tee, snp, 0, 0, 0, microcode])
        return cls(int.from_bytes(b, "little"), turin=fmc is not None)

    def _byte(self, i: int) -> int:
        return (self.raw >> (8 * i)) & 0xFF

    @property
    def fmc(self) -> int | None:
        """FMC SVN (Turin and later), else None."""
        return self._byte(0) if self.turin else None

    @property
    def bootloader(self) -> int:
        """PSP bootloader SVN."""
        return self._byte(1 if self.turin else 0)

    @property
    def tee(self) -> int:
        """PSP OS (TEE) SVN."""
        return self._byte(2 if self.turin else 1)

    @property
    def snp(self) -> int:
        """SNP firmware SVN."""
        return self._byte(3 if self.turin else 6)

    @property
    def microcode(self) -> int:
        """Lowest microcode patch level of all cores."""
        return self._byte(7)


@dataclass(frozen=True)
class SnpReport:
    """An SEV-SNP attestation report, one attribute per field of :data:`LAYOUT`.

    Fields a report version does not define are None (``cpuid_*`` before v3, the mitigation
    vectors before v5). Byte fields have exactly the size of :data:`LAYOUT`; the constructor
    refuses anything else with :class:`MalformedEvidence`.
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes

    def __post_init__(self) -> None:
        for name, is_bytes, size, bound in _CHECKS:
            value = getattr(self, name)
            if is_bytes:
                if not isinstance(value, bytes) or len(value) != size:
                    raise MalformedEvidence(f"SEV-SNP report field {name} must be {size} bytes")
            elif value is not None and not 0 <= value < bound:
                raise MalformedEvidence(f"SEV-SNP report field {name} does not fit in {size} byte(s)")

    @property
    def signing_key(self) -> int:
        """Which key signed the report (KEY_INFO bits 2-4): 0 VCEK, 1 VLEK, 7 none."""
        return (self.key_info >> 2) & 0x7

    @property
    def mask_chip_key(self) -> bool:
        """True when the guest asked to mask the chip key (chip_id is then zero)."""
        return bool(self.key_info & 0x2)

    @property
    def debug_allowed(self) -> bool:
        """Guest policy bit 19: the host may debug the guest."""
        return bool(self.policy & POLICY_DEBUG)

    @property
    def migrate_ma_allowed(self) -> bool:
        """Guest policy bit 18: a migration agent may be associated."""
        return bool(self.policy & POLICY_MIGRATE_MA)

    @property
    def smt_allowed(self) -> bool:
        """Guest policy bit 16: SMT may be enabled."""
        return bool(self.policy & POLICY_SMT_ALLOWED)

    @property
    def single_socket_required(self) -> bool:
        """Guest policy bit 20."""
        return bool(self.policy & POLICY_SINGLE_SOCKET)

    @property
    def abi_major(self) -> int:
        """Minimum ABI major version from the guest policy (bits 8-15)."""
        return (self.policy >> 8) & 0xFF

    @property
    def abi_minor(self) -> int:
        """Minimum ABI minor version from the guest policy (bits 0-7)."""
        return self.policy & 0xFF

    @property
    def product(self) -> str | None:
        """Processor generation from the CPUID fields (v3+): Milan, Genoa, Turin, Venice; else None."""
        return processor_generation(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def signature_rs(self) -> tuple[int, int]:
        """The ECDSA signature (r, s) as integers."""
        return int.from_bytes(self.signature_r, "little"), int.from_bytes(self.signature_s, "little")

    def with_signature(self, r: int, s: int) -> SnpReport:
        """A copy carrying the signature (r, s), encoded little-endian in 72 bytes each."""
        return dataclasses.replace(
            self,
            signature_r=r.to_bytes(SIGNATURE_COMPONENT_SIZE, "little"),
            signature_s=s.to_bytes(SIGNATURE_COMPONENT_SIZE, "little"),
        )

    def serialize(self) -> bytes:
        """The 0x4A0 report bytes (reserved ranges zero)."""
        return serialize_snp_report(self)

    def signed_portion(self) -> bytes:
        """The bytes the signature covers, ``[0, 0x2A0)`` of :meth:`serialize`."""
        return self.serialize()[:SIGNED_SIZE]


def processor_generation(family: int | None, model: int | None) -> str | None:
    """Map CPUID family/model to AMD's product name as the KDS uses it; None if unknown."""
    if family == 0x19 and model is not None:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model is not None:
        if model <= 0x11:
            return "Turin"
        if 0x50 <= model <= 0x57 or 0x90 <= model <= 0xAF or 0xC0 <= model <= 0xC7:
            return "Venice"
    return None


def _turin_layout(raw: bytes, version: int) -> bool:
    """Whether TCB fields use the Turin layout: from CPUID (v3+), else from the chip id shape."""
    if version >= 3:
        return raw[0x188] >= 0x1A
    chip_id = raw[0x1A0:0x1E0]
    # v2 reports have no CPUID: Turin chip ids are 8 bytes, zero-extended (as the sev crate infers).
    return any(chip_id[:8]) and not any(chip_id[8:])


def parse_snp_report(raw: bytes) -> SnpReport:
    """Parse the 0x4A0-byte report ``raw``.

    Raises :class:`MalformedEvidence` if the size is wrong and :class:`UnsupportedEvidence`
    for report versions 0 and 1 (which predate this layout).
    """
    if len(raw) != REPORT_SIZE:
        raise MalformedEvidence(f"an SEV-SNP attestation report is {REPORT_SIZE} bytes, got {len(raw)}")
    version = int.from_bytes(raw[0:4], "little")
    if version < 2:
        raise UnsupportedEvidence(f"SEV-SNP attestation report version {version} is not supported (2 or later)")
    turin = _turin_layout(raw, version)
    raw = bytes(raw)
    values: dict[str, object] = {}
    for name, start, end, _, codec, since in _CODECS:
        if version < since:
            values[name] = None
        elif codec == _BYTES:
            values[name] = raw[start:end]
        elif codec == _TCB:
            values[name] = TcbVersion(int.from_bytes(raw[start:end], "little"), turin=turin)
        else:
            values[name] = int.from_bytes(raw[start:end], "little")
    return SnpReport(**values)  # type: ignore[arg-type]


def serialize_snp_report(report: SnpReport) -> bytes:
    """The 0x4A0 bytes of ``report``; fields that are None and reserved ranges are zero."""
    out = bytearray(REPORT_SIZE)
    for name, start, end, size, codec, _ in _CODECS:
        value = getattr(report, name)
        if value is None:
            continue
        if codec == _BYTES:
            out[start:end] = value
        elif codec == _TCB:
            out[start:end] = value.raw.to_bytes(8, "little")
        else:
            out[start:end] = value.to_bytes(size, "little")
    return bytes(out)


def signed_portion(report: bytes | SnpReport) -> bytes:
    """The bytes the ECDSA P-384 signature covers: ``[0, 0x2A0)``.

    Pass the raw bytes you received when verifying; raises :class:`MalformedEvidence` if they
    are not a whole report.
    """
    if isinstance(report, SnpReport):
        return report.signed_portion()
    if len(report) != REPORT_SIZE:
        raise MalformedEvidence(f"an SEV-SNP attestation report is {REPORT_SIZE} bytes, got {len(report)}")
    return bytes(report[:SIGNED_SIZE])
