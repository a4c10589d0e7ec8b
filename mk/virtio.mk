# virtio.mk — virtio-mmio devices (devices/virtio, vmm/virtio.go).
#
#   make bench-virtio     4 KiB random reads: tiny guest vs host pread,
#                         ioeventfd vs MMIO-exit notifications
#   make fuzz-virtio      the virtqueue/transport/device fuzz targets, longer
#
# The tests need nothing from apt: taps and network namespaces are made with
# syscalls (/dev/net/tun, unshare) and packet sockets, no iproute2. They need
# root for the network parts (they skip loudly otherwise).

VIRTIO_BENCH_COUNT ?= 3
VIRTIO_FUZZTIME    ?= 60s

.PHONY: bench-virtio fuzz-virtio

bench-virtio:
	$(GO) test -run '^$$' -bench VirtioBlk -benchtime 5x -count $(VIRTIO_BENCH_COUNT) ./vmm/

fuzz-virtio:
	@for f in FuzzQueue FuzzMMIO FuzzBlkRequest FuzzNetTx FuzzRNG; do \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(VIRTIO_FUZZTIME) ./devices/virtio/ || exit 1; \
	done
