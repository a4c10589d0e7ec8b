package vmm

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/microvm/microvm/images/guests"
)

// benchReads is how many 4 KiB reads the guest does per run.
const benchReads = 2000

// BenchmarkVirtioBlkRandomRead measures 4 KiB random reads from the tiny
// guest (virtio guest, bench=N) against the same reads done by this
// process with pread in the same run, with queue notifications through
// ioeventfd and through MMIO exits. Reported per run:
//
//	guest-reads/s  N / (exit - ready) of the guest
//	host-reads/s   the same N offsets read with pread here
//	mmio-exits/req (MMIO exits of a run with N reads - one with 0) / N
//
// go test -run '^$' -bench VirtioBlk -benchtime 3x ./vmm
func BenchmarkVirtioBlkRandomRead(b *testing.B) {
	path, _ := randomDisk(b, 64<<20/512) // 64 MiB
	for _, mode := range []struct {
		name      string
		noEventFD bool
	}{{"ioeventfd", false}, {"mmio-exit", true}} {
		b.Run(mode.name, func(b *testing.B) {
			sys := openKVM(b)
			img, err := guests.Get("virtio")
			if err != nil {
				b.Fatal(err)
			}
			run := func(n int) *Result {
				m, err := New(Config{Image: img, Cmdline: fmt.Sprintf("bench=%d", n), Disks: []DiskConfig{{Path: path, ReadOnly: true}},
					System: sys, VirtioNoIOEventFD: mode.noEventFD})
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				res, err := m.Run(context.Background())
				if err != nil || res.Reason != ReasonExit || res.Status != 0 {
					b.Fatalf("bench=%d: %v %s", n, err, res.Summary())
				}
				return res
			}
			base := run(0) // device setup alone
			var guestDur, hostDur time.Duration
			var exits uint64
			for b.Loop() {
				res := run(benchReads)
				guestDur += res.ExitAfter - res.ReadyAfter
				exits += res.Exits["mmio"] - base.Exits["mmio"]
				hostDur += hostReads(b, path, benchReads)
			}
			runs := float64(b.N)
			b.ReportMetric(benchReads*runs/guestDur.Seconds(), "guest-reads/s")
			b.ReportMetric(benchReads*runs/hostDur.Seconds(), "host-reads/s")
			b.ReportMetric(float64(exits)/(benchReads*runs), "mmio-exits/req")
		})
	}
}

// hostReads does the guest's n reads (same xorshift64 offsets) with pread.
func hostReads(b *testing.B, path string, n int) time.Duration {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	blocks := uint64(st.Size()) / 4096
	buf := make([]byte, 4096)
	x := uint64(0x9e3779b97f4a7c15)
	start := time.Now()
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if _, err := f.ReadAt(buf, int64(x%blocks*4096)); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
