package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBenchBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"runs 0", []string{"bench", "--runs", "0"}, "--runs must be at least 1"},
		{"negative warmup", []string{"bench", "--warmup", "-1"}, "--warmup"},
		{"unknown path", []string{"bench", "--paths", "vm,teleport"}, `unknown path "teleport"`},
		{"unwritable json", []string{"bench", "--paths", "vm", "--export-json", "/nonexistent/dir/out.json"}, "--export-json: cannot write /nonexistent/dir/out.json"},
		{"unwritable markdown", []string{"bench", "--paths", "vm", "--export-markdown", "/proc/nope.md"}, "--export-markdown: cannot write"},
		{"json to a file, old spelling", []string{"bench", "--json", "out.json"}, "--export-json out.json"},
		{"export flag swallows a flag", []string{"bench", "--export-json", "--runs", "5"}, `--export-json "--runs" looks like a flag`},
		{"json and export-json", []string{"bench", "--json", "--export-json", filepath.Join(dir, "x.json")}, "give one"},
		{"json and markdown on stdout", []string{"bench", "--json", "--export-markdown", "-"}, "cannot both go to stdout"},
		{"bad plot format", []string{"bench", "--paths", "vm", "--plot", filepath.Join(dir, "x.gif")}, "unknown format"},
		{"pdf plot", []string{"bench", "--paths", "vm", "--plot", filepath.Join(dir, "x.pdf")}, `unknown format ".pdf" (use .svg or .png)`},
		{"both on stdout", []string{"bench", "--export-json", "-", "--export-markdown", "-"}, "cannot both go to stdout"},
		{"tiny memory", []string{"bench", "--memory", "1M"}, "below 32M"},
		{"arguments", []string{"bench", "extra"}, "takes no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("status %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
		})
	}
}

func TestBenchList(t *testing.T) {
	code, out, _ := run(t, "bench", "--list")
	if code != 0 {
		t.Fatalf("status %d", code)
	}
	for _, p := range []string{"vm ", "vm-proc", "vm-lean", "kvm-floor", "go-floor", "container", "runc", "crun", "podman", "docker", "qemu", "qemu-multiboot", "vm-multiboot", "vm-pool", "vm-restore", "vm-oci", "linux", "libvirt"} {
		if !strings.Contains(out, p) {
			t.Errorf("--list lacks %s", p)
		}
	}
}

// TestBenchEndToEnd runs a short real benchmark through the binary and
// checks every export.
func TestBenchEndToEnd(t *testing.T) {
	bin := microvmBin(t)
	dir := t.TempDir()
	j, md, svg := filepath.Join(dir, "b.json"), filepath.Join(dir, "b.md"), filepath.Join(dir, "b.svg")
	// The first path must run: the VM one where there is a /dev/kvm (the
	// rig runs the vm path's tests on hosts without one), else the
	// in-process container launcher.
	first := "vm"
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Logf("no usable /dev/kvm (%v): the container path stands first", err)
		first = "crun"
	} else {
		f.Close()
	}
	code, out, errs := runBin(t, bin, "bench", "--runs", "2", "--warmup", "0", "--paths", first+",container,runc,docker", "--dockerd", "private",
		"--cache-dir", cacheDir(t), "--export-json", j, "--export-markdown", md, "--plot", svg)
	if code != 0 {
		t.Fatalf("status %d\nstdout %s\nstderr %s", code, out, errs)
	}
	for _, want := range []string{"Time (mean ± σ)", "Range (min … max)", "Summary (launch→exit)", "times faster than"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var rep struct {
		Paths []struct {
			Name      string            `json:"name"`
			Available bool              `json:"available"`
			Failed    int               `json:"failed"`
			Samples   []json.RawMessage `json:"samples"`
		} `json:"paths"`
	}
	b, _ := os.ReadFile(j)
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Paths) != 4 || len(rep.Paths[0].Samples) != 2 {
		t.Errorf("json export: %v %+v", err, rep)
	}
	// docker runs against the private dockerd bench started (and stopped).
	if len(rep.Paths) == 4 && (!rep.Paths[3].Available || len(rep.Paths[3].Samples) != 2 || rep.Paths[3].Failed != 0) {
		t.Errorf("docker path through the private dockerd: %+v\n%s", rep.Paths[3], errs)
	}
	if b, _ := os.ReadFile(md); !strings.Contains(string(b), "| `runc` |") {
		t.Errorf("markdown export lacks runc:\n%s", b)
	}
	b, _ = os.ReadFile(svg)
	var doc struct {
		XMLName xml.Name
		Texts   []string `xml:"text"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil || doc.XMLName.Local != "svg" {
		t.Fatalf("plot is not an SVG: %v\n%s", err, b)
	}
	for _, p := range rep.Paths {
		if p.Available && len(p.Samples) > p.Failed && !slices.Contains(doc.Texts, p.Name) {
			t.Errorf("plot lacks the path %q: %q", p.Name, doc.Texts)
		}
	}
	if !slices.Contains(doc.Texts, first) {
		t.Errorf("plot lacks the %s path: %q", first, doc.Texts)
	}
}

// TestBenchInterruptCleansUp sends SIGINT to a running benchmark and checks
// that it exits 130 and leaves no container, state directory or cgroup.
func TestBenchInterruptCleansUp(t *testing.T) {
	bin := microvmBin(t)
	tmp := t.TempDir()
	cmd := exec.Command(bin, "bench", "--runs", "10000", "--warmup", "0", "--paths", "container,runc,crun,podman", "--cache-dir", cacheDir(t))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("bench did not stop within 2 minutes of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Errorf("status %d, want %d\nstderr %s", code, exitInterrupted, errb.String())
	}
	if !strings.Contains(out.String(), "interrupted") {
		t.Errorf("report does not say it was interrupted:\n%s", out.String())
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("left behind in TMPDIR: %s", e.Name())
	}
	if out, _ := exec.Command("pgrep", "-f", "^/bin/ready$").Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("workload processes left: %s", out)
	}
}

func cacheDir(t *testing.T) string {
	if d := os.Getenv("MICROVM_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "microvm-test-cache")
}
