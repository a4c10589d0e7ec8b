# container.mk — the container path (container/, images/rootfs).
#
#   make rootfs       build the busybox rootfs in $(CACHE)/rootfs
#
# The tests run real runc, crun, podman and docker on a busybox-static rootfs.
# docker.io brings dockerd: the tests start a private one (container/dockerd.go);
# scripts/apt-install.sh keeps the package from starting a system daemon.

APT_PACKAGES += runc crun podman busybox-static docker.io

ROOTFS := $(CACHE)/rootfs

.PHONY: rootfs

rootfs: $(ROOTFS)/bin/ready

# images/rootfs/ready/ready is committed (a test rebuilds it from ready.S and
# compares): make must not rebuild it with its built-in rules when a fresh
# clone happens to give ready.S the newer time stamp.
images/rootfs/ready/ready: ;

$(ROOTFS)/bin/ready: images/rootfs/ready/ready | build
	$(BIN) container rootfs $(ROOTFS)
