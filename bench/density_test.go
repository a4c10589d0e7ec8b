package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseRollup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       string
		pss, rss uint64
		ok       bool
	}{
		{"kernel 6.1", "00400000-7ffd1 ---p 00000000 00:00 0 [rollup]\nRss:                7784 kB\nPss:                7781 kB\nPss_Anon:  4436 kB\n", 7781, 7784, true},
		{"no pss", "Rss: 12 kB\n", 0, 12, false},
		{"empty (kernel thread)", "", 0, 0, false},
		{"garbage", "Pss: x kB\nRss: 1 MB\n", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseRollup(strings.NewReader(tc.in))
			if (err == nil) != tc.ok || r.pss != tc.pss || r.rss != tc.rss {
				t.Errorf("parseRollup = %+v, %v; want pss %d rss %d ok=%v", r, err, tc.pss, tc.rss, tc.ok)
			}
		})
	}
}

// TestDensityRealProcesses holds real processes (a shell that writes its
// ready byte on fd 3, then execs sleep) and checks that the run finds
// every one, measures a plausible PSS, and stops them all.
func TestDensityRealProcesses(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("SKIP: no sh: %v", err)
	}
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skipf("SKIP: this kernel has no smaps_rollup: %v", err)
	}
	const n = 3
	p := procDensity("held", "sh holding", func() ([]string, error) {
		return []string{sh, "-c", "printf x >&3; exec sleep 1000"}, nil
	})
	p.Workload = "sleep"
	rep, err := Density(context.Background(), []DensityPath{p}, n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Paths[0]
	if r.Error != "" || r.Unavailable != "" {
		t.Fatalf("path failed: %+v", r)
	}
	if r.Instances != n || r.Processes["sleep"] != n {
		t.Errorf("instances %d, processes %v; want %d sleeps", r.Instances, r.Processes, n)
	}
	if r.PSSKiB < 50*n || r.PSSPerInstanceKiB <= 0 || r.RSSKiB < r.PSSKiB {
		t.Errorf("implausible memory: PSS %d KiB (%.0f per instance), RSS %d KiB", r.PSSKiB, r.PSSPerInstanceKiB, r.RSSKiB)
	}
	// Every instance was stopped.
	deadline := time.Now().Add(5 * time.Second)
	for len(sleepers()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := sleepers(); len(s) > 0 {
		t.Errorf("%d sleep processes left behind", len(s))
		for pid := range s {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var text bytes.Buffer
	if err := WriteDensityText(&text, rep); err != nil || !strings.Contains(text.String(), "3× sleep") {
		t.Errorf("text report %q, %v", text.String(), err)
	}
}

// TestDensityInstanceFails: an instance that exits before it is up fails
// the path with its stderr, and leaves nothing running.
func TestDensityInstanceFails(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("SKIP: no sh: %v", err)
	}
	p := procDensity("broken", "exits at once", func() ([]string, error) {
		return []string{sh, "-c", "echo no-kvm-here >&2; exit 3"}, nil
	})
	rep, err := Density(context.Background(), []DensityPath{p}, 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Paths[0]; !strings.Contains(r.Error, "no-kvm-here") || r.Instances != 0 {
		t.Errorf("result %+v; want an error naming the instance's stderr", r)
	}
	if _, err := Density(context.Background(), nil, 0, time.Second); err == nil {
		t.Error("Density with 0 instances: no error")
	}
}
