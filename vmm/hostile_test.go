package vmm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostileCase is one way the hostile guest misbehaves and the ending the
// README's tiny-guest ABI promises for it.
type hostileCase struct {
	mode    string
	cpus    int
	timeout time.Duration
	reason  Reason
	status  uint64
	// detail, lastLine and log must appear in Result.Detail, the last
	// console line and the VMM log.
	detail, lastLine, log string
	check                 func(t *testing.T, r *Result, console *countingWriter)
}

// hostileCases are the hostile guest's modes. On kvm_pvm each console byte
// is a ~10-25 µs VM exit, so the flood is 1 MiB with a generous timeout.
var hostileCases = []hostileCase{
	{mode: "triple", reason: ReasonTripleFault, detail: "triple-faulted", lastLine: "hostile triple: ud2 with no IDT",
		check: func(t *testing.T, r *Result, _ *countingWriter) {
			if r.RIPLost {
				return // AMD SVM reset the vCPU at the shutdown: nothing to check
			}
			if r.RIP == 0 || !bytes.HasPrefix(r.Instruction, []byte{0x0f, 0x0b}) {
				t.Errorf("crash at RIP %#x on % x, want the ud2 (0f 0b)", r.RIP, r.Instruction)
			}
		}},
	{mode: "ports", reason: ReasonExit, status: 0, lastLine: "hostile ports: 0 reads did not return all ones",
		check: func(t *testing.T, r *Result, _ *countingWriter) {
			// Every unclaimed port is written and read once, plus four MMIO
			// addresses each way.
			const min = 0x10000 - 16
			if r.UnknownReads < min || r.UnknownWrites < min {
				t.Errorf("unknown accesses counted: %d reads, %d writes; want at least %d each", r.UnknownReads, r.UnknownWrites, min)
			}
		}},
	{mode: "hltif", reason: ReasonHalt, log: "halted with interrupts enabled", lastLine: "hostile hltif: sti; hlt"},
	{mode: "flood flood=1", timeout: 3 * time.Minute, reason: ReasonExit, status: 0,
		check: func(t *testing.T, r *Result, c *countingWriter) {
			if c.n != 1<<20 {
				t.Errorf("console got %d bytes, want 1 MiB", c.n)
			}
			if len(r.LastConsoleLine) > maxTrackedLine {
				t.Errorf("last console line is %d bytes: the tracker should bound it to %d", len(r.LastConsoleLine), maxTrackedLine)
			}
		}},
	{mode: "range", reason: ReasonExit, status: 1000},
	{mode: "pagetables", reason: ReasonTripleFault, detail: "triple-faulted", lastLine: "clearing the PML4"},
	{mode: "spin2", cpus: 2, reason: ReasonExit, status: 7, lastLine: "vcpu 0 exits while vcpu 1 spins"},
}

// countingWriter counts console bytes and keeps the first few KiB.
type countingWriter struct {
	mu   sync.Mutex
	n    int
	head bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	if room := 4096 - w.head.Len(); room > 0 {
		w.head.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// TestHostileGuests runs every hostile mode in process: each ends the way
// the ABI says, before its timeout, with no descriptor or goroutine left.
func TestHostileGuests(t *testing.T) {
	sys := openKVM(t)
	img := guest(t, "hostile")
	for _, tc := range hostileCases {
		t.Run(strings.Fields(tc.mode)[0], func(t *testing.T) {
			if testing.Short() && strings.HasPrefix(tc.mode, "flood") {
				t.Skip("SKIP: the console flood takes ~25 s on kvm_pvm (-short)")
			}
			fds0, gor0 := countFDs(t), runtime.NumGoroutine()
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 30 * time.Second
			}
			var logBuf syncBuffer
			console := &countingWriter{}
			m, err := New(Config{
				Image: img, Cmdline: "mode=" + tc.mode, CPUs: tc.cpus, MemoryBytes: 16 << 20,
				System: sys, Console: console,
				Logger: slog.New(slog.NewTextHandler(&logBuf, nil)),
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			res, err := m.Run(ctx)
			took := time.Since(start)
			cancel()
			if cerr := m.Close(); cerr != nil {
				t.Errorf("Close: %v", cerr)
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			t.Logf("mode=%s: %s in %v (%d console bytes)", tc.mode, res.Summary(), took.Round(time.Millisecond), console.n)
			if res.Reason != tc.reason || res.Status != tc.status {
				t.Fatalf("ended %v status %d (%s), want %v status %d; console:\n%s", res.Reason, res.Status, res.Summary(), tc.reason, tc.status, console.head.String())
			}
			if tc.detail != "" && !strings.Contains(res.Detail, tc.detail) {
				t.Errorf("detail %q lacks %q", res.Detail, tc.detail)
			}
			if tc.lastLine != "" && !strings.Contains(res.LastConsoleLine, tc.lastLine) {
				t.Errorf("last console line %q lacks %q", res.LastConsoleLine, tc.lastLine)
			}
			if tc.log != "" && !strings.Contains(logBuf.String(), tc.log) {
				t.Errorf("VMM log lacks %q:\n%s", tc.log, logBuf.String())
			}
			if !res.Reason.Clean() && res.Summary() == "" {
				t.Error("a crash without a summary")
			}
			if tc.check != nil {
				tc.check(t, res, console)
			}
			if fds := countFDs(t); fds != fds0 {
				t.Errorf("open descriptors %d before, %d after: a leak", fds0, fds)
			}
			waitGoroutines(t, gor0)
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the vCPU goroutines' log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// countFDs counts this process's open descriptors.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents) - 1 // the directory being read
}

// waitGoroutines waits briefly for goroutines to settle back to want (a
// machine's watcher goroutine may still be returning), then fails.
func waitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Errorf("goroutines: %d before, %d after: a leak\n%s", want, runtime.NumGoroutine(), buf[:n])
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
