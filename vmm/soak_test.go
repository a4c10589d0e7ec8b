package vmm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm/microvm/images"
)

// Soak sizes. `make test` runs the defaults; `make soak` the full figures of
// the isolation issue (MICROVM_SOAK_VMS=10000 MICROVM_SOAK_PROCS=1000).
const (
	defaultSoakVMs   = 1000
	defaultSoakProcs = 100
	shortSoakVMs     = 100
	shortSoakProcs   = 10
)

// Noise allowed between the start and the end of a soak. Descriptors must
// come back exactly. The Go runtime keeps the OS threads it made (a vCPU
// goroutine's thread returns to its pool), so a few more threads than at
// the start is noise, a number growing with the VM count is a leak. The
// heap settles within a few MiB; a leaked 2 MiB guest RAM per VM would be
// gigabytes.
const (
	soakThreadNoise = 4
	soakRSSNoise    = 24 << 20
)

func soakCount(t *testing.T, env string, def, short int) int {
	t.Helper()
	if v := os.Getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", env, v)
		}
		return n
	}
	if testing.Short() {
		return short
	}
	return def
}

// procUsage is what a soak watches: open descriptors, OS threads and
// resident memory of this process.
type procUsage struct {
	fds, threads int
	rss          int64
}

func (u procUsage) String() string {
	return fmt.Sprintf("%d fds, %d threads, RSS %.1f MiB", u.fds, u.threads, float64(u.rss)/(1<<20))
}

func usage(t testing.TB) procUsage {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	u := procUsage{fds: countFDs(t)}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		switch k {
		case "Threads":
			u.threads = int(n)
		case "VmRSS":
			u.rss = n << 10
		}
	}
	return u
}

func checkGrowth(t *testing.T, what string, start, end procUsage) {
	t.Helper()
	t.Logf("%s: start %v; end %v", what, start, end)
	if end.fds != start.fds {
		t.Errorf("%s: open descriptors %d → %d", what, start.fds, end.fds)
	}
	if end.threads > start.threads+soakThreadNoise {
		t.Errorf("%s: threads %d → %d (noise allowed: %d)", what, start.threads, end.threads, soakThreadNoise)
	}
	if end.rss > start.rss+soakRSSNoise {
		t.Errorf("%s: RSS %.1f → %.1f MiB (noise allowed: %d MiB)", what, float64(start.rss)/(1<<20), float64(end.rss)/(1<<20), soakRSSNoise>>20)
	}
}

// soakKind is one of the VMs a soak cycles through: the common path and
// the ending paths (status, crash with a register read, halt, two vCPUs
// with a kick), each with its own /dev/kvm or a shared one.
type soakKind struct {
	guest, cmdline string
	cpus           int
	ownKVM         bool
	reason         Reason
}

var soakKinds = []soakKind{
	{guest: "ready", reason: ReasonExit},
	{guest: "exit", cmdline: "status=3", ownKVM: true, reason: ReasonExit},
	{guest: "hostile", cmdline: "mode=triple", reason: ReasonTripleFault},
	{guest: "hostile", cmdline: "mode=hltif", ownKVM: true, reason: ReasonHalt},
	{guest: "hostile", cmdline: "mode=spin2", cpus: 2, reason: ReasonExit},
	{guest: "ready", ownKVM: true, reason: ReasonExit},
}

// TestSoakInProcess creates, runs and destroys MICROVM_SOAK_VMS VMs (1,000
// by default) in this process and checks that descriptors, threads and
// resident memory do not grow.
func TestSoakInProcess(t *testing.T) {
	sys := openKVM(t)
	n := soakCount(t, "MICROVM_SOAK_VMS", defaultSoakVMs, shortSoakVMs)
	imgs := map[string][]byte{}
	for _, k := range soakKinds {
		imgs[k.guest] = guest(t, k.guest)
	}
	one := func(i int) {
		k := soakKinds[i%len(soakKinds)]
		cfg := Config{Image: imgs[k.guest], Cmdline: k.cmdline, CPUs: k.cpus, MemoryBytes: 4 << 20}
		if !k.ownKVM {
			cfg.System = sys
		}
		m, err := New(cfg)
		if err != nil {
			t.Fatalf("VM %d: New: %v", i, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := m.Run(ctx)
		cancel()
		if cerr := m.Close(); cerr != nil {
			t.Fatalf("VM %d: Close: %v", i, cerr)
		}
		if err != nil || res.Reason != k.reason {
			t.Fatalf("VM %d (%s %s): %v, %v; want %v", i, k.guest, k.cmdline, res, err, k.reason)
		}
	}
	// Warm up: the runtime's thread pool, heap and KVM's caches settle.
	for i := 0; i < 2*len(soakKinds); i++ {
		one(i)
	}
	gor := runtime.NumGoroutine()
	start := usage(t)
	began := time.Now()
	for i := 0; i < n; i++ {
		one(i)
	}
	took := time.Since(began)
	end := usage(t)
	t.Logf("%d VMs created, run and destroyed in %v (%.0f per second)", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
	checkGrowth(t, fmt.Sprintf("%d VMs in process", n), start, end)
	waitGoroutines(t, gor)
}

// spinImage is a flat guest that spins forever: jmp $.
var spinImage = []byte{0xeb, 0xfe}

// TestSoakConcurrent runs rounds of 2×cores spinning VMs at once, stopped
// by their context, and checks that nothing grows across rounds.
func TestSoakConcurrent(t *testing.T) {
	sys := openKVM(t)
	perRound := 2 * runtime.NumCPU()
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	round := func(r int) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		var started sync.WaitGroup
		results := make([]*Result, perRound)
		errs := make([]error, perRound)
		for i := 0; i < perRound; i++ {
			m, err := New(Config{Image: spinImage, Format: images.FormatFlat, MemoryBytes: 4 << 20, System: sys, CPUs: 1 + i%2})
			if err != nil {
				t.Fatalf("round %d VM %d: %v", r, i, err)
			}
			wg.Add(1)
			started.Add(1)
			go func(i int) {
				defer wg.Done()
				defer m.Close()
				started.Done()
				results[i], errs[i] = m.Run(ctx)
			}(i)
		}
		started.Wait()
		time.Sleep(100 * time.Millisecond) // all are spinning (emulated) by now
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: %d concurrent VMs did not stop within 30s of cancel", r, perRound)
		}
		for i, res := range results {
			if errs[i] != nil || res == nil || res.Reason != ReasonStopped {
				t.Fatalf("round %d VM %d: %v, %v; want stopped", r, i, res, errs[i])
			}
		}
	}
	round(0) // warm-up
	gor := runtime.NumGoroutine()
	start := usage(t)
	for r := 1; r <= rounds; r++ {
		round(r)
	}
	end := usage(t)
	checkGrowth(t, fmt.Sprintf("%d rounds of %d concurrent VMs", rounds, perRound), start, end)
	waitGoroutines(t, gor)
}

// TestSoakProcesses runs MICROVM_SOAK_PROCS `microvm boot` processes (100 by
// default) from MICROVM_BIN, two at a time, and checks that each exits with
// its guest's status and that no process or descriptor is left behind.
func TestSoakProcesses(t *testing.T) {
	openKVM(t)
	bin := os.Getenv("MICROVM_BIN")
	if bin == "" {
		t.Skip("SKIP: MICROVM_BIN is not set (make test sets it to bin/microvm)")
	}
	n := soakCount(t, "MICROVM_SOAK_PROCS", defaultSoakProcs, shortSoakProcs)
	startFDs := countFDs(t)
	began := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			status := i % 100
			cmd := exec.Command(bin, "boot", "-q", "--guest", "exit", "--cmdline", strconv.Itoa(status), "--memory", "4M")
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != status {
				errc <- fmt.Errorf("process %d: exit %v (%v), want %d; output %q", i, cmd.ProcessState, err, status, out)
			}
		}(i)
	}
	wg.Wait()
	took := time.Since(began)
	close(errc)
	failed := 0
	for err := range errc {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	t.Logf("%d microvm boot processes in %v (%.1f ms each, 2 at a time)", n, took.Round(time.Millisecond), float64(took.Milliseconds())/float64(n))
	if kids := childProcesses(t); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
	if fds := countFDs(t); fds != startFDs {
		t.Errorf("open descriptors %d → %d", startFDs, fds)
	}
}

// childProcesses lists this process's living children.
func childProcesses(t *testing.T) []string {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var kids []string
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}
