"""The pure check of a workload's [tee] requirements against a token's verified claims."""

from __future__ import annotations

from typing import Any

import pytest

from ccpipe.schemas.errors import InvalidInput
from ccpipe.schemas.spec_rules import TeeType
from ccpipe.schemas.workload import TeeRequirements, parse_workload_spec
from ccpipe.stages.attest.kbs.requirements import tee_decision, verified_tcb

SNP_TCB = {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}


def claims(tee: str | None = "snp", *, emulated: Any = False, tcb: dict[str, int] | None = None) -> dict[str, Any]:
    ccpipe: dict[str, Any] = {"tee": tee, "tcb": SNP_TCB if tcb is None else tcb, "workload_id": "wl"}
    if emulated is not None:
        ccpipe["emulated"] = emulated
    return {"ccpipe": ccpipe}


def decide(tee: TeeRequirements, token: dict[str, Any], *, installation: bool = True) -> str | None:
    found = tee_decision(tee.model_dump_json().encode(), token, installation_allows_emulated=installation,
                         workload_id="wl")
    assert found is None or not found.allowed
    return None if found is None else found.rule


SNP = TeeRequirements(types=[TeeType.SNP], allow_emulated=True)


@pytest.mark.parametrize(("wanted", "token", "installation", "rule"), [
    (SNP, claims(), True, None),
    (SNP, claims(emulated=True), True, None),
    (TeeRequirements(types=[TeeType.TDX], allow_emulated=True), claims(), True, "ccpipe:tee.types"),
    (SNP, claims(tee=None), True, "ccpipe:tee.types"),  # a token without a verified type
    (TeeRequirements(types=[TeeType.SNP]), claims(emulated=True), True, "ccpipe:tee.allow_emulated"),
    (SNP, claims(emulated=True), False, "ccpipe:tee.allow_emulated"),
    (SNP, claims(emulated=None), False, "ccpipe:tee.allow_emulated"),  # no emulated claim counts as emulated
    (SNP, claims(emulated=False), False, None),  # hardware evidence needs no consent to emulation
    (SNP.model_copy(update={"min_tcb": {"snp": 23, "microcode": 25}}), claims(), True, None),
    (SNP.model_copy(update={"min_tcb": {"snp": 24}}), claims(), True, "ccpipe:tee.min_tcb"),
    (SNP.model_copy(update={"min_tcb": {"fmc": 1}}), claims(), True, "ccpipe:tee.min_tcb"),  # absent component
])
def test_requirement_check(wanted: TeeRequirements, token: dict[str, Any], installation: bool,
                           rule: str | None) -> None:
    assert decide(wanted, token, installation=installation) == rule


def test_missing_or_damaged_requirements_release_nothing() -> None:
    for record in (None, b"{}", b'{"types": ["snp"], "allow_emulated": true, "extra": 1}'):
        found = tee_decision(record, claims(), installation_allows_emulated=True, workload_id="wl")
        assert found is not None and found.rule == "ccpipe:tee.requirements"


def test_denial_reason_names_the_requirement() -> None:
    found = tee_decision(TeeRequirements(types=[TeeType.TDX]).model_dump_json().encode(), claims(),
                         installation_allows_emulated=True, workload_id="wl")
    assert found is not None and found.reason == "types: TEE snp is not one of tdx"


def test_verified_tcb_per_tee() -> None:
    assert verified_tcb("snp", {**SNP_TCB, "fmc": 2}) == {**SNP_TCB, "fmc": 2}
    tdx = {"tee_tcb_svn": "0305" + "00" * 14, "pce_svn": 11, "tcb_status": "UpToDate", "fmspc": "00"}
    assert verified_tcb("tdx", tdx) == {"tdx_module": 3, "tdx_module_major": 5, "pce_svn": 11, "tcb_up_to_date": 1}
    assert verified_tcb("tdx", {**tdx, "tcb_status": "OutOfDate"})["tcb_up_to_date"] == 0
    assert verified_tcb("sample", {"svn": "1"}) == {"svn": 1}
    assert verified_tcb("snp", {"snp": "23"}) == {}  # only integers are versions
    assert verified_tcb(None, SNP_TCB) == {}


def test_sgx_is_refused_in_the_spec_until_it_has_a_verifier() -> None:
    text = '[workload]\nname = "w"\n[tee]\ntypes = ["snp", "sgx"]\n'
    with pytest.raises(InvalidInput, match=r"tee\.types: item 1: 'sgx' is not supported yet: ccpipe has no verifier"):
        parse_workload_spec(text)
