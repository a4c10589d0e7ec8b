# container.mk — the container path (container/, images/rootfs).
#
#   make rootfs       build the busybox rootfs in $(CACHE)/rootfs
#
# The tests run real runc, crun and podman on a busybox-static rootfs.
# (docker has no daemon on these hosts; its rows say "not available".)

APT_PACKAGES += runc crun podman busybox-static

ROOTFS := $(CACHE)/rootfs

.PHONY: rootfs

rootfs: $(ROOTFS)/bin/ready

$(ROOTFS)/bin/ready: images/rootfs/ready/ready | build
	$(BIN) container rootfs $(ROOTFS)
