# ccpipe's default resource (key release) policy (policy id "default").
#
# Reads the claims of a verified EAR token; data: {"plugin", "resource-path", "query"}
# (Trustee's resource policy contract). Release only through the resource plugin, only to a
# token with at least one appraisal, and only when every appraisal is affirming — except that
# an emulated enclave, accepted at all only when the attestation service allows emulation, may
# be "warning" for its hardware claim alone.
#
# Each condition is a named rule; `violations` says which failed, so a denial names its rule.
# Appraisals are read claim by claim (submods[name][claim]), never as whole objects: the
# attestation service then knows from this text which claims a decision depends on, and reuses
# it for the next token with the same claims (nonces, keys and times are not read).

package policy

import rego.v1

default allow := false

allow if count(violations) == 0

violations contains "plugin: only the resource plugin releases secrets" if data.plugin != "resource"

# The status of every appraisal, by submod name.
status[name] := value if {
	some name
	value := input.submods[name]["ear.status"]
}

violations contains "appraisal: the token carries no appraisal" if count(status) == 0

violations contains msg if {
	some name, value in status
	not acceptable(name, value)
	msg := sprintf("ear-status: appraisal %s is %s", [name, value])
}

acceptable(_, "affirming")

acceptable(name, "warning") if {
	input.submods[name]["ear.veraison.annotated-evidence"].ccpipe.emulated == true
	every claim, value in input.submods[name]["ear.trustworthiness-vector"] {
		claim_ok(claim, value)
	}
}

# Affirming tier (-32..31) for every claim; the emulated hardware claim may be 32.
claim_ok(claim, value) if {
	value >= -32
	value <= 31
}

claim_ok(claim, value) if {
	claim == "hardware"
	value == 32
}
