# oci.mk — `microvm oci`, the OCI runtime (oci/, cmd/microvm/oci.go).
#
#   make test-oci   the state machine, config translation and bad-input tests
#   make fuzz-oci   the state-file fuzz target, longer (OCI_FUZZTIME)
#   make oci-validation  runtime-tools' validation suite, runc vs microvm, in the rig
#
# `make fuzz` picks up FuzzParseState by itself (scripts/fuzz-all.sh).

OCI_FUZZTIME ?= 60s

.PHONY: test-oci fuzz-oci

test-oci:
	$(GO) test ./oci/
	$(GO) test -run 'TestOCI' ./cmd/microvm/

fuzz-oci:
	$(GO) test -run '^$$' -fuzz '^FuzzParseState$$' -fuzztime $(OCI_FUZZTIME) ./oci/

# oci-validation: runtime-tools' validation suite against runc and microvm
# oci in the rig (scripts/oci-validation.sh; OCI_TESTS picks programs).
OCI_TESTS ?=
.PHONY: oci-validation
oci-validation: deps build kernel debian-kernel
	scripts/oci-validation.sh $(OCI_TESTS)
