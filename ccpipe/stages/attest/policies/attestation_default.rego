# ccpipe's default attestation policy (policy id "default").
#
# Reads Trustee's AS policy document: the verifier's claims under the TEE's name (snp, tdx,
# sample), init_data and report_data at the top level, plus ccpipe {emulated, tee, workload_id}.
# Reference values come from the RVPS through query_reference_value(name) (see
# stages/attest/rvps.py for the names).
#
# Output: trust_claims, the AR4SI trustworthiness vector that becomes the EAR appraisal.
# Rules are written per claim; each claim's value for a TEE is decided by one else-chain,
# so two rules can never disagree.
#
# Every read names the claim it needs (never a whole claims object): the attestation service
# then knows from this text which claims a decision depends on, and reuses the decision for
# the next appraisal with the same claims (report_data, which differs every time, is not read).
#
# Differences from Trustee's default CPU policy (same names, same reference value names):
#   * hardware is 2 when the verifier checked the vendor chain and TCB, and every TCB
#     reference value that IS registered matches; Trustee needs all four registered;
#   * emulated or sample evidence gets hardware 32 (warning): it is never "genuine";
#   * configuration checks the initdata digest (host_data / MRCONFIGID) against the
#     workload's init_data_digest reference values: a registered but different digest is 96.

package policy

import rego.v1

default executables := 33

default hardware := 97

default configuration := 36

default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
	"file-system": file_system,
	"instance-identity": instance_identity,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

# --- helpers ---------------------------------------------------------------

registered(name) if count(query_reference_value(name)) > 0

# A claim matches a reference value name when that name is not registered at all or the
# claim is one of its values (used for optional pins such as TCB SVNs and XFAM).
pinned_or_absent(name, value) if not registered(name)

pinned_or_absent(name, value) if value in query_reference_value(name)

zeros := "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"

# Trustee's regularize_data: zero-pad or truncate a hex digest to the field's width.
fit(digest, width) := substring(concat("", [lower(digest), zeros]), 0, width)

init_data_matches if {
	is_string(input.init_data)
	some digest in query_reference_value("init_data_digest")
	fit(digest, count(input.init_data)) == lower(input.init_data)
}

init_data_state := "match" if {
	init_data_matches
} else := "mismatch" if {
	registered("init_data_digest")
} else := "unregistered"

emulated if input.ccpipe.emulated == true

# Whose claims these are: every verifier of a TEE emits its launch measurement.
has_snp if input.snp.measurement

has_tdx if input.tdx.quote.body.mr_td

has_sample if input.sample.launch_digest

# --- SEV-SNP ---------------------------------------------------------------

executables := 3 if {
	has_snp
	input.snp.measurement in query_reference_value("snp_launch_measurement")
} else := 3 if {
	has_tdx
	input.tdx.quote.body.mr_td in query_reference_value("mr_td")
	pinned_or_absent("rtmr_1", input.tdx.quote.body.rtmr_1)
	pinned_or_absent("rtmr_2", input.tdx.quote.body.rtmr_2)
} else := 3 if {
	has_sample
	input.sample.launch_digest in query_reference_value("launch_digest")
}

snp_tcb_ok if {
	pinned_or_absent("snp_bootloader", input.snp.reported_tcb_bootloader)
	pinned_or_absent("snp_tee_svn", input.snp.reported_tcb_tee)
	pinned_or_absent("snp_snp_svn", input.snp.reported_tcb_snp)
	pinned_or_absent("snp_microcode", input.snp.reported_tcb_microcode)
}

tdx_hardware_ok if {
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
	pinned_or_absent("mr_seam", input.tdx.quote.body.mr_seam)
}

tdx_hardware_outdated if {
	input.tdx.tcb_status in {"SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"}
}

hardware := 32 if {
	emulated
} else := 32 if {
	has_sample
} else := 2 if {
	has_snp
	snp_tcb_ok
} else := 2 if {
	has_tdx
	tdx_hardware_ok
} else := 32 if {
	has_tdx
	tdx_hardware_outdated
}

debug_off if {
	has_snp
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

debug_off if {
	has_tdx
	input.tdx.td_attributes.debug == false
	pinned_or_absent("xfam", input.tdx.quote.body.xfam)
}

debug_off if {
	has_sample
	input.sample.debug == false
}

configuration := 96 if {
	init_data_state == "mismatch"
} else := 2 if {
	debug_off
	init_data_state == "match"
} else := 3 if {
	debug_off
} else := 32 if {
	has_snp
} else := 32 if {
	has_tdx
}
