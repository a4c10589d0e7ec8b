package vmm

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/kvm"
)

// BenchmarkBootReady measures one tiny VM's whole life in process: create
// (memory, vCPU, load), run the ready guest to its exit, destroy. Compare
// with `kvm_floor 200` (../shared/bench/kvm_floor.c) run beside it.
func BenchmarkBootReady(b *testing.B) {
	for _, mem := range []uint64{2 << 20, DefaultMemory} {
		b.Run(FormatBytes(mem), func(b *testing.B) {
			sys := openKVM(b)
			img, err := guests.Get("ready")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var lives []time.Duration
			for b.Loop() {
				start := time.Now()
				m, err := New(Config{Image: img, MemoryBytes: mem, System: sys})
				if err != nil {
					b.Fatal(err)
				}
				res, err := m.Run(context.Background())
				if err != nil || res.Reason != ReasonExit {
					b.Fatalf("run: %v %+v", err, res)
				}
				m.Close()
				lives = append(lives, time.Since(start))
			}
			// kvm_floor reports the median: report it too, to compare like with like.
			slices.Sort(lives)
			b.ReportMetric(float64(lives[len(lives)/2].Microseconds()), "median-µs/vm")
		})
	}
}

func openKVM(tb testing.TB) *kvm.System {
	tb.Helper()
	s, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		tb.Skipf("SKIP: needs a usable %s: %v", kvm.DevicePath, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}
