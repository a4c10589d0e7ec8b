package vmm

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/microvm/microvm/images"
)

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestPool hands out more machines than the pool holds, runs each to its
// exit, and checks that Close leaves no VM behind (file descriptors back
// where they were).
func TestPool(t *testing.T) {
	sys := openKVM(t)
	cfg := Config{Image: prog(movAL(9), exitWithAL), Format: images.FormatFlat, MemoryBytes: 4 << 20, System: sys}
	// One machine run and closed first: what the Go runtime opens once
	// (its netpoller's descriptors) is open before the count.
	if res, _ := boot(t, cfg, 0); res.Status != 9 {
		t.Fatalf("%s", res.Summary())
	}
	before := openFDs(t)
	p := NewPool(2, func() (*Machine, error) { return New(cfg) })
	for i := 0; i < 5; i++ {
		m, err := p.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := m.Run(ctx)
		cancel()
		if err != nil || res.Reason != ReasonExit || res.Status != 9 {
			t.Fatalf("machine %d: %v %v", i, res, err)
		}
		p.Release(m)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Get after Close: %v, want ErrPoolClosed", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d file descriptors open after Close, %d before: a pooled VM leaked", after, before)
	}
}

// TestPoolBuildError: a build failure reaches Get; no KVM needed.
func TestPoolBuildError(t *testing.T) {
	boom := errors.New("boom")
	p := NewPool(1, func() (*Machine, error) { return nil, boom })
	defer p.Close()
	if _, err := p.Get(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Get: %v, want the build error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	release := make(chan struct{})
	p2 := NewPool(1, func() (*Machine, error) { <-release; return nil, boom })
	defer p2.Close()
	defer close(release)
	if _, err := p2.Get(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v", err)
	}
}
