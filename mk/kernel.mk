# mk/kernel.mk — Linux guest images (docs/linux.md):
#
#   make debian-kernel  Debian's cloud kernel (bzImage + modules), fetched with apt-get download
#   make kernel         the lean kernel (vmlinux + bzImage) from linux-source-6.1 + images/kernel/lean.config
#   make initramfs      the guest initramfs: busybox-static + /init (images/initramfs),
#                       gzip'd and plain (the plain one for instruction-emulating hosts,
#                       where the kernel's in-guest gunzip alone takes minutes)
#   make testkernel     rebuild the synthetic test kernel blobs in images/linux/testdata
#
# Everything lands under $(CACHE) and is rebuilt only when its inputs change.

# Kernel build: linux-source-6.1 and its build dependencies. Payload codecs
# (CLI tools) for the decompression tests, busybox-static and cpio for the
# initramfs, e2fsprogs for ext4 root images, QEMU (TCG) to boot the
# initramfs in tests, ACPICA's iasl to check the ACPI tables.
APT_PACKAGES += linux-source-6.1 flex bison bc libelf-dev libssl-dev make gcc binutils \
	busybox-static cpio gzip bzip2 xz-utils lz4 zstd qemu-system-x86 e2fsprogs acpica-tools

TEST_PREREQS += debian-kernel kernel initramfs

TEST_ENV += MICROVM_DEBIAN_KERNEL=$(CACHE)/debian-kernel/vmlinuz \
	MICROVM_DEBIAN_MODULES=$(CACHE)/debian-kernel/modules \
	MICROVM_KERNEL_VMLINUX=$(CACHE)/kernel/vmlinux \
	MICROVM_KERNEL_BZIMAGE=$(CACHE)/kernel/bzImage \
	MICROVM_INITRAMFS=$(CACHE)/initramfs.cpio.gz \
	MICROVM_INITRAMFS_PLAIN=$(CACHE)/initramfs.cpio

.PHONY: debian-kernel kernel initramfs testkernel

# The exact linux-image-6.1.0-*-cloud-amd64 that linux-image-cloud-amd64
# depends on; cached in $(CACHE)/debian-kernel (vmlinuz, modules/, release).
debian-kernel: deps
	@scripts/kernel-debian.sh $(CACHE)/debian-kernel

# tinyconfig + images/kernel/lean.config, verified, built with -j$(nproc);
# cached by sha256(fragment) + source package version ($(CACHE)/kernel/key).
kernel: deps
	@scripts/kernel-build.sh $(CACHE)/kernel images/kernel/lean.config

INITRAMFS_SRC := $(filter-out %_test.go,$(wildcard images/initramfs/*.go images/initramfs/mkinitramfs/*.go)) \
	images/initramfs/init.sh

initramfs: deps
	@$(MAKE) --no-print-directory $(CACHE)/initramfs.cpio.gz $(CACHE)/initramfs.cpio

# gzip'd when the name ends in .gz
$(CACHE)/initramfs.cpio.gz $(CACHE)/initramfs.cpio: $(INITRAMFS_SRC) $(wildcard /bin/busybox)
	@mkdir -p $(@D)
	$(GO) run ./images/initramfs/mkinitramfs -o $@

# The committed blobs; TestTestKernelRebuild checks they match this build.
testkernel:
	$(MAKE) -C images/linux/testkernel OUT=$(CURDIR)/images/linux/testdata BUILD=$(CACHE)/testkernel
