package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/container"
)

func TestMain(m *testing.M) {
	container.Init() // this test binary is the in-process container's init helper
	os.Exit(m.Run())
}

// testConfig points the runners at what `make test` built: MICROVM_BIN
// (the microvm binary) and MICROVM_CACHE (rootfs, kvm_floor).
func testConfig(t testing.TB) Config {
	cache := os.Getenv("MICROVM_CACHE")
	if cache == "" {
		cache = filepath.Join(os.TempDir(), "microvm-bench-test-cache")
	}
	return Config{MicrovmBin: os.Getenv("MICROVM_BIN"), CacheDir: cache, StateDir: t.TempDir()}
}

// TestAllPathsForReal runs a short interleaved benchmark over every default
// path on this host. Every path is either available and then must not fail
// a single launch, or not available and then must say why. The paths named
// in MICROVM_BENCH_REQUIRE (set by `make test`) must be available.
func TestAllPathsForReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: the benchmark paths need root (/dev/kvm, namespaces, runtimes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := Run(ctx, DefaultRunners(testConfig(t)), Options{Runs: 2, Warmup: 1, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]bool{}
	for _, n := range strings.Split(os.Getenv("MICROVM_BENCH_REQUIRE"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			required[n] = true
		}
	}
	var text strings.Builder
	_ = WriteText(&text, rep)
	t.Logf("report:\n%s", text.String())
	for _, p := range rep.Paths {
		switch {
		case !p.Available && p.Why == "":
			t.Errorf("%s: not available without a reason", p.Name)
		case !p.Available && required[p.Name]:
			t.Errorf("%s: required but not available: %s", p.Name, p.Why)
		case !p.Available:
			t.Logf("NOT AVAILABLE (not required here): %s: %s", p.Name, p.Why)
		case p.Failed > 0:
			t.Errorf("%s: %d of %d launches failed: %s", p.Name, p.Failed, len(p.Samples), p.FirstError())
		case p.Exit == nil || p.Exit.N != 2:
			t.Errorf("%s: %v exit samples, want 2", p.Name, p.Exit)
		}
		// Every path that can see ready must have seen it in every launch.
		if p.Usable() && p.Ready != nil && p.Ready.N != p.Exit.N {
			t.Errorf("%s: ready seen in %d of %d launches", p.Name, p.Ready.N, p.Exit.N)
		}
		if p.Usable() && p.Ready != nil && p.Ready.Max > p.Exit.Max {
			t.Errorf("%s: ready after exit", p.Name)
		}
	}
	for _, n := range []string{"container", "runc", "crun", "podman", "qemu", "qemu-multiboot", "vm-multiboot", "kvm-floor", "go-floor", "vm", "vm-pool", "vm-restore"} {
		if p := rep.Path(n); p != nil && p.Usable() && p.Ready == nil {
			t.Errorf("%s: launch→ready never observed", n)
		}
	}
}

// benchPath runs one path's launches as a Go benchmark, reporting
// launch→ready too (compare runs with benchstat).
func benchPath(b *testing.B, name string) {
	rs, err := SelectRunners(DefaultRunners(testConfig(b)), name)
	if err != nil {
		b.Fatal(err)
	}
	r := rs[0]
	ctx := context.Background()
	if err := r.Setup(ctx); err != nil {
		b.Skipf("SKIPPED LOUDLY: %s not available: %v", name, err)
	}
	defer r.Close()
	var ready time.Duration
	nReady := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := r.Launch(ctx)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		if s.HasReady {
			ready += s.Ready
			nReady++
		}
	}
	b.StopTimer()
	if nReady > 0 {
		b.ReportMetric(float64(ready.Nanoseconds())/float64(nReady), "ready-ns/op")
	}
}

// The in-process paths, and the whole-process ones for comparison:
//
//	go test -bench . -count 10 ./bench/ | tee new.txt; benchstat old.txt new.txt
func BenchmarkVM(b *testing.B)        { benchPath(b, "vm") }
func BenchmarkContainer(b *testing.B) { benchPath(b, "container") }
func BenchmarkKVMFloor(b *testing.B)  { benchPath(b, "kvm-floor") }
func BenchmarkGoFloor(b *testing.B)   { benchPath(b, "go-floor") }
func BenchmarkRunc(b *testing.B)      { benchPath(b, "runc") }
func BenchmarkCrun(b *testing.B)      { benchPath(b, "crun") }
func BenchmarkQEMU(b *testing.B)      { benchPath(b, "qemu") }
