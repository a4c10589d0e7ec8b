# mk/libvirt.mk — full VMs through libvirtd (libvirt/, `microvm libvirt`,
# docs/libvirt.md).
#
#   make libvirt-test          the libvirt package and CLI tests only, verbose
#   make libvirt-bench         Go benchmarks: list latency (1 and 2 hosts), boot under TCG
#   make libvirt-sandbox       start a private libvirtd in $(CACHE)/libvirt-sandbox
#                              (prints its URIs; LIBVIRT_SANDBOX_TCP=16600 adds a TCP listener)
#   make libvirt-sandbox-stop  stop it (destroys its domains)
#
# The tests start their own private libvirtd's (libvirt/libvirttest): the
# real daemon from these packages, as root, in a mount namespace with its own
# config, sockets and state under a temp dir; never the system daemon, and
# stopped afterwards. virsh (libvirt-clients) cross-checks `list`; QEMU boots
# Debian's cloud kernel (MICROVM_DEBIAN_KERNEL, `make debian-kernel` in
# mk/kernel.mk) under TCG with a busybox-static initrd built by the tests.
# The TLS test gives a private daemon a TLS listener with certificates it
# generates; the SSH test starts a private OpenSSH sshd (openssh-server) on a
# loopback port in front of a private daemon's socket. virt-xml-validate
# (libvirt-clients, with xmllint from libxml2-utils) checks the generated
# domain XML against libvirt's own schema.

APT_PACKAGES += libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
	qemu-system-x86 busybox-static util-linux openssh-server libxml2-utils

LIBVIRT_BENCH_FLAGS ?= -benchtime 5x
LIBVIRT_SANDBOX     ?= $(CACHE)/libvirt-sandbox
LIBVIRT_SANDBOX_TCP ?=

.PHONY: libvirt-test libvirt-bench libvirt-sandbox libvirt-sandbox-stop

libvirt-test: deps build debian-kernel
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v ./libvirt/...
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -run 'Libvirt' ./cmd/microvm/

libvirt-bench: deps build debian-kernel
	$(TEST_ENV) $(GO) test -run '^$$' -bench . $(LIBVIRT_BENCH_FLAGS) ./libvirt/

libvirt-sandbox: deps
	@scripts/libvirt-sandbox.sh start $(LIBVIRT_SANDBOX) $(LIBVIRT_SANDBOX_TCP)

libvirt-sandbox-stop:
	@scripts/libvirt-sandbox.sh stop $(LIBVIRT_SANDBOX)
