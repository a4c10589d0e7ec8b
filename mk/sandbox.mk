# Isolation (sandbox/, docs/isolation.md): the seccomp filter and jail of
# `microvm boot`, the hostile-guest suite and the soak.
#
#   make soak            the full soak: 10,000 VMs created and destroyed in
#                        one process, 1,000 `microvm boot` processes, rounds
#                        of 2×cores concurrent VMs (`make test` runs 1,000 and
#                        100; SOAK_VMS / SOAK_PROCS change the counts)
#   make seccomp-audit   the system calls `microvm boot` makes once its filter
#                        is on, over every scenario, under strace -f
#   make bench-sandbox   start-up cost of seccomp and the jail (hyperfine -N),
#                        results in $(CACHE)/bench-sandbox/
#
# The hostile-guest suite and the seccomp/jail tests are ordinary tests
# (vmm/hostile_test.go, sandbox/, cmd/microvm/sandbox_test.go): `make test`
# runs them. They need nothing beyond Go, root and /dev/kvm.

SOAK_VMS   ?= 10000
SOAK_PROCS ?= 1000

.PHONY: soak seccomp-audit bench-sandbox

soak: build
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) MICROVM_SOAK_VMS=$(SOAK_VMS) MICROVM_SOAK_PROCS=$(SOAK_PROCS) \
		$(GO) test -count=1 -timeout 60m -v -run 'TestSoak' ./vmm

seccomp-audit: build
	@scripts/apt-install.sh strace bsdutils procps
	scripts/seccomp-audit.sh $(BIN)

bench-sandbox: build
	@scripts/apt-install.sh hyperfine
	CACHE=$(CACHE) scripts/bench-sandbox.sh $(BIN)
