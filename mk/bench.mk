# bench.mk — `microvm bench`: VM and container startup side by side.
#
#   make bench                      every path, interleaved (BENCH_FLAGS to tune)
#   make bench BENCH_FLAGS='--runs 30 --plot bench.svg --export-markdown bench.md'
#   make bench-go                   the Go benchmarks (benchstat-friendly)
#
# The tests boot the same tiny guest in QEMU (qemu-system-x86) and build
# kvm_floor.c with cc; MICROVM_BENCH_REQUIRE names the paths that must be
# available in `make test` (a missing one fails the test instead of skipping).

APT_PACKAGES += qemu-system-x86 runc crun podman busybox-static
# The VM paths need /dev/kvm: on a host without one they are required in the
# rig's run of the bench tests instead (internal/rigsuite), not here.
comma := ,
BENCH_REQUIRE_VM := $(if $(wildcard /dev/kvm),vm$(comma)vm-proc$(comma)kvm-floor$(comma)go-floor$(comma)qemu$(comma))
TEST_ENV     += MICROVM_BENCH_REQUIRE=$(BENCH_REQUIRE_VM)container,runc,crun,podman

BENCH_FLAGS ?= --runs 10
BENCH_COUNT ?= 10

.PHONY: bench bench-go

bench: deps build
	$(BIN) bench --cache-dir $(CACHE) --dockerd private $(BENCH_FLAGS)

bench-go: deps build
	MICROVM_CACHE=$(CACHE) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -count $(BENCH_COUNT) ./bench/
