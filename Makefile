# microvm — build, run, test.
#
#   make run      boot the embedded hello guest through /dev/kvm
#   make test     install what the tests need, then run them all
#
# Area makefiles in mk/ add to APT_PACKAGES (Debian packages the tests need),
# TEST_PREREQS (targets that must be built before `go test`) and TEST_ENV
# (VAR=value pairs handed to `go test`).

SHELL        := /bin/bash
GO           ?= go
BIN          := bin/microvm
CACHE        ?= $(CURDIR)/.cache
VERSION      ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -s -w -X main.version=$(VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 25m
FUZZTIME     ?= 10s

APT_PACKAGES :=
TEST_PREREQS :=
TEST_ENV     := MICROVM_CACHE=$(CACHE)

export CACHE

.PHONY: all build run test test-go deps images lint bench fuzz clean

all: build

build: $(BIN) bin/microvm-vmm

$(BIN): FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/microvm

# The lean VMM binary (cmd/microvm-vmm, docs/lean.md): one tiny guest per
# process, none of the CLI's other packages linked in.
bin/microvm-vmm: FORCE
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -tags microvm_lean -trimpath -ldflags '-s -w' -o $@ ./cmd/microvm-vmm

FORCE:

# run boots the hello guest through this host's /dev/kvm; on a host without
# one (a kvm_pvm guest itself), inside the nested-KVM rig (docs/rig.md).
run: build
	@if [ -e /dev/kvm ]; then $(BIN) boot; else \
		echo "make run: this host has no /dev/kvm; booting the embedded guest inside the nested-KVM rig (QEMU TCG, emulated AMD-V; docs/rig.md)" >&2; \
		$(MAKE) --no-print-directory rig-shell RIG_CMD="microvm boot"; fi

# images rebuilds the embedded tiny guests from images/guests/src (commit
# the result: `go build` embeds images/guests/bin).
images:
	images/guests/build.sh images/guests/bin

include $(wildcard mk/*.mk)

# deps installs the Debian packages the tests need (skipped when present).
deps:
	@scripts/apt-install.sh $(sort $(APT_PACKAGES))

test: deps build $(TEST_PREREQS)
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test $(GO_TEST_FLAGS) ./...
	$(MAKE) --no-print-directory fuzz

# test-go runs the Go tests without installing anything first.
test-go: build
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test $(GO_TEST_FLAGS) ./...

# fuzz runs every fuzz target for FUZZTIME each.
fuzz:
	@scripts/fuzz-all.sh $(FUZZTIME)

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
