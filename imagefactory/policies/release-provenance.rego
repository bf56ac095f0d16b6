# Example policy for `imagefactory verify-signature --policy` (cosign verify-attestation --policy),
# evaluated against the SLSA v1 provenance attested by `imagefactory sign` (--type slsaprovenance1).
#
# It allows an image only if:
#   1. it was built by imagefactory (builder id and build type),
#   2. from a clean recipe tree (a git commit, no uncommitted or untracked files),
#   3. every source archive is pinned by sha256 (one archive per library, each with a sha256),
#   4. every library was built with the release profile and its hardening flags, and no flag that
#      weakens them (a later -fno-stack-protector would win over -fstack-protector-strong).
#
# The required flags are imagefactory.toolchain.RELEASE's hardening flags (tests check they agree).
package signature

import rego.v1

required_cflags := {
	"-D_FORTIFY_SOURCE=3",
	"-fstack-protector-strong",
	"-fstack-clash-protection",
	"-fcf-protection=full",
	"-fPIC",
	"-ftrivial-auto-var-init=zero",
	"-fno-delete-null-pointer-checks",
	"-fno-strict-overflow",
	"-fno-strict-aliasing",
	"-Werror=format-security",
}

required_ldflags := {"-Wl,-z,relro", "-Wl,-z,now", "-Wl,-z,noexecstack"}

weakening := {
	"-fno-stack-protector",
	"-fstack-protector",
	"-fno-stack-clash-protection",
	"-fcf-protection=none",
	"-D_FORTIFY_SOURCE=0",
	"-D_FORTIFY_SOURCE=1",
	"-D_FORTIFY_SOURCE=2",
	"-fno-PIC",
	"-fno-pic",
	"-ftrivial-auto-var-init=uninitialized",
	"-Wl,-z,norelro",
	"-Wl,-z,lazy",
	"-Wl,-z,execstack",
}

pred := input.predicate

built_by_imagefactory if {
	startswith(pred.runDetails.builder.id, "urn:imagefactory:builder:")
	pred.buildDefinition.buildType == "urn:imagefactory:buildtype:recipe:v1"
}

clean_recipe_tree if {
	recipe := pred.buildDefinition.externalParameters.recipe
	recipe.dirty == false
	regex.match(`^[0-9a-f]{40}$`, recipe.commit)
}

libraries := pred.buildDefinition.internalParameters.libraries

archives := [d |
	some d in pred.buildDefinition.resolvedDependencies
	d.annotations.kind == "source-archive"
]

sources_pinned if {
	count(archives) == count(libraries)
	every d in archives {
		regex.match(`^[0-9a-f]{64}$`, d.digest.sha256)
	}
}

words(text) := {w | some w in split(text, " "); w != ""}

hardened(lib) if {
	lib.profile == "release"
	cflags := words(lib.flags.CFLAGS)
	ldflags := words(lib.flags.LDFLAGS)
	count(required_cflags - cflags) == 0
	count(required_ldflags - ldflags) == 0
	count(cflags & weakening) == 0
	count(ldflags & weakening) == 0
}

libraries_hardened if {
	count(libraries) > 0
	every _, lib in libraries {
		hardened(lib)
	}
}

default allow := false

allow if {
	built_by_imagefactory
	clean_recipe_tree
	sources_pinned
	libraries_hardened
}
