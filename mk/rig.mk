# KVM test rig (internal/rig, docs/rig.md): an L1 Linux with a real,
# SVM-backed /dev/kvm, booted under QEMU TCG with emulated AMD-V, in which
# tests run microvm, kvm_floor and QEMU -M microvm -accel kvm.
#
#   make test-kvm   run every TestRig* test (all packages), verbose
#   make rig-shell  RIG_CMD="microvm check" runs a command inside L1 (no single quotes)
#
# L1 kernel and modules: `make debian-kernel` (mk/kernel.mk); guest kernel
# and initramfs: `make kernel initramfs`. The L1 base initramfs is cached in
# $(CACHE)/rig/; logs of failed rig tests are kept in $(CACHE)/rig/logs/.

# qemu-system-x86: L1 itself (and QEMU -M microvm inside it);
# busybox-static: L1's user space; libc6-dev: static libc for kvm_floor.
# The kernels and the guest initramfs, their TEST_PREREQS and the TEST_ENV
# paths the rig reads (MICROVM_DEBIAN_KERNEL, ...) come from mk/kernel.mk.
APT_PACKAGES += qemu-system-x86 busybox-static libc6-dev

RIG_TEST_FLAGS ?= -count=1 -timeout 20m -v
RIG_CMD        ?= uname -a; cat /sys/module/kvm_amd/parameters/npt; ls -l /dev/kvm

.PHONY: rig-prereqs test-kvm rig-shell

# rig-prereqs: everything the rig tests boot (cached by their own targets).
rig-prereqs: debian-kernel kernel initramfs

test-kvm: deps build rig-prereqs
	$(TEST_ENV) MICROVM_BIN=$(CURDIR)/$(BIN) $(GO) test $(RIG_TEST_FLAGS) -run 'TestRig' ./...

rig-shell: deps build debian-kernel
	$(TEST_ENV) $(GO) run ./internal/rig/rigrun -file /bin/microvm=$(CURDIR)/$(BIN) '$(RIG_CMD)'
