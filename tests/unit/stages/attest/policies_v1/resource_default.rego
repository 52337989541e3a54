# ccpipe's default resource (key release) policy (policy id "default").
#
# Input: the claims of a verified EAR token; data: {"plugin", "resource-path", "query"}
# (Trustee's resource policy contract). Release only through the resource plugin, only to a
# token with at least one appraisal, and only when every appraisal is affirming — except that
# an emulated enclave, accepted at all only when the attestation service allows emulation, may
# be "warning" for its hardware claim alone.
#
# Each condition is a named rule; `violations` says which failed, so a denial names its rule.

package policy

import rego.v1

default allow := false

allow if count(violations) == 0

violations contains "plugin: only the resource plugin releases secrets" if data.plugin != "resource"

violations contains "appraisal: the token carries no appraisal" if count(object.get(input, "submods", {})) == 0

violations contains msg if {
	some name, submod in input.submods
	not acceptable(submod)
	msg := sprintf("ear-status: appraisal %s is %s", [name, submod["ear.status"]])
}

acceptable(submod) if submod["ear.status"] == "affirming"

acceptable(submod) if {
	submod["ear.status"] == "warning"
	submod["ear.veraison.annotated-evidence"].ccpipe.emulated == true
	every claim, value in submod["ear.trustworthiness-vector"] {
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
