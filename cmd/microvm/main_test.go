package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/microvm/microvm/kvm"
	"github.com/spf13/cobra"
)

// run executes microvm in process with the given arguments.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	code = a.run(args)
	return code, out.String(), errb.String()
}

func needKVM(t *testing.T) {
	t.Helper()
	s, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		t.Skipf("SKIP: needs a usable %s: %v", kvm.DevicePath, err)
	}
	s.Close()
}

func TestBootExitCodes(t *testing.T) {
	needKVM(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty", nil)
	random := write("random", bytes.Repeat([]byte{0x13, 0x37, 0xc0, 0xde}, 300))
	hello, _ := os.ReadFile("../../images/guests/bin/hello.elf")
	truncated := write("truncated.elf", hello[:100])
	spin := write("spin.bin", []byte{0xeb, 0xfe})
	ud2 := write("ud2.bin", []byte{0x0f, 0x0b})

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"default hello", []string{"boot"}, 0, ""},
		{"guest status passes through", []string{"boot", "--guest", "exit", "--cmdline", "42"}, 42, ""},
		{"status out of range", []string{"boot", "--guest", "exit", "--cmdline", "200"}, exitGuestRange, "out of range"},
		{"nonexistent path", []string{"boot", "/nonexistent/image"}, exitBadImage, "no such file"},
		{"directory", []string{"boot", dir}, exitBadImage, "is a directory"},
		{"empty file", []string{"boot", empty}, exitBadImage, "empty"},
		{"random bytes", []string{"boot", random}, exitBadImage, "unrecognised image format"},
		{"truncated ELF", []string{"boot", truncated}, exitBadImage, "truncated"},
		{"memory 0", []string{"boot", "--memory", "0"}, exitUsage, "too small"},
		{"memory 1K", []string{"boot", "--memory", "1K"}, exitUsage, "too small"},
		{"memory 1T", []string{"boot", "--memory", "1T"}, exitUsage, "exceeds this host's RAM"},
		{"memory garbage", []string{"boot", "--memory", "lots"}, exitUsage, "bad size"},
		{"cpus 0", []string{"boot", "--cpus", "0"}, exitUsage, "at least 1"},
		{"cpus 1000", []string{"boot", "--cpus", "1000"}, exitUsage, "at most"},
		{"cmdline too long", []string{"boot", "--cmdline", strings.Repeat("a", 5000)}, exitUsage, "at most 4095"},
		{"unknown flag", []string{"boot", "--bogus"}, exitUsage, "unknown flag"},
		{"image and guest", []string{"boot", random, "--guest", "ready"}, exitUsage, "not both"},
		{"unknown guest", []string{"boot", "--guest", "nope"}, exitUsage, "no embedded guest"},
		{"bad format", []string{"boot", "--format", "pe"}, exitUsage, "unknown image format"},
		{"timeout", []string{"boot", spin, "--format", "flat", "--timeout", "200ms"}, exitTimeout, "did not finish within 200ms"},
		{"triple fault", []string{"boot", ud2, "--format", "flat"}, exitGuestCrash, `triple-faulted (at RIP 0x100000|\(RIP unknown\): .*KVM reset the vCPU)`},
		{"two images", []string{"boot", "a", "b"}, exitUsage, "at most 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if tc.stderr != "" && !containsOrMatches(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
				t.Errorf("error is not one or two lines:\n%s", stderr)
			}
		})
	}
}

// containsOrMatches says whether s contains want, or matches it as a
// regular expression.
func containsOrMatches(s, want string) bool {
	if strings.Contains(s, want) {
		return true
	}
	re, err := regexp.Compile(want)
	return err == nil && re.MatchString(s)
}

func TestBootJSON(t *testing.T) {
	needKVM(t)
	code, stdout, stderr := run(t, "boot", "--guest", "ready", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Reason   string         `json:"reason"`
		Ready    bool           `json:"ready"`
		ReadyMS  float64        `json:"ready_ms"`
		ExitMS   float64        `json:"exit_ms"`
		ExitCode int            `json:"exit_code"`
		Exits    map[string]int `json:"exits"`
		HostKind string         `json:"host_kind"`
		GuestKiB uint64         `json:"guest_resident_kib"`
		VMMKiB   uint64         `json:"vmm_private_kib"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, stdout)
	}
	if rep.Reason != "exit" || !rep.Ready || rep.ReadyMS <= 0 || rep.ExitMS < rep.ReadyMS || rep.Exits["io"] != 2 || rep.HostKind == "" ||
		rep.GuestKiB == 0 || rep.VMMKiB == 0 {
		t.Errorf("report %+v", rep)
	}
	// The guest's console goes to stderr with --json, keeping stdout JSON.
	code, stdout, stderr = run(t, "boot", "--json")
	if code != 0 || !strings.Contains(stderr, "Hello from") || strings.Contains(stdout, "Hello from") {
		t.Errorf("hello --json: code %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestBootQuiet(t *testing.T) {
	needKVM(t)
	code, stdout, stderr := run(t, "boot", "--quiet")
	if code != 0 || stdout != "" || stderr != "" {
		t.Errorf("quiet boot: code %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestCheck(t *testing.T) {
	needKVM(t)
	code, stdout, _ := run(t, "check", "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if code != 0 || !rep.CanBoot || rep.APIVersion != 12 || rep.HostKind == "" || rep.TestBoot != "ok" {
		t.Errorf("check: code %d report %+v", code, rep)
	}
	code, stdout, _ = run(t, "check", "--device", "/nonexistent/kvm")
	if code != exitHost || !strings.Contains(stdout, "CANNOT") {
		t.Errorf("check on a missing device: code %d\n%s", code, stdout)
	}
}

// TestHelp checks that every command has a description and examples.
func TestHelp(t *testing.T) {
	a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if c.Runnable() && c.Example == "" {
			t.Errorf("%q has no examples in --help", c.CommandPath())
		}
		if c.Short == "" {
			t.Errorf("%q has no description", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(a.newRootCmd(nil))
	code, stdout, _ := run(t, "boot", "--help")
	if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "Ctrl-A x") {
		t.Errorf("boot --help: %d\n%s", code, stdout)
	}
}

func TestEscapeReader(t *testing.T) {
	stopped := 0
	for _, tc := range []struct {
		in, out string
		stop    bool
	}{
		{"hello", "hello", false},
		{"a\x01\x01b", "a\x01b", false},
		{"ab\x01xcd", "ab", true},
		{"a\x01qb", "ab", false},
	} {
		e := &escapeReader{r: strings.NewReader(tc.in), stop: func() { stopped++ }}
		before := stopped
		buf := make([]byte, 64)
		n, _ := e.Read(buf)
		if string(buf[:n]) != tc.out || (stopped > before) != tc.stop {
			t.Errorf("%q -> %q stop=%v, want %q stop=%v", tc.in, buf[:n], stopped > before, tc.out, tc.stop)
		}
	}
	// An escape split across reads still works.
	e := &escapeReader{r: strings.NewReader("a\x01"), stop: func() { stopped++ }}
	buf := make([]byte, 64)
	e.Read(buf)
	e.r = strings.NewReader("x")
	before := stopped
	if n, _ := e.Read(buf); n != 0 || stopped != before+1 {
		t.Errorf("split escape: n=%d stopped=%d", n, stopped-before)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(stdout, "microvm ") {
		t.Errorf("version: %d %q", code, stdout)
	}
}

func TestReserveProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tc := range []struct{ procs, vcpus, want int }{
		{1, 1, 2}, // a one-CPU host: one P for the vCPU, one for the rest
		{1, 0, 2}, // 0 vCPUs means the default, 1
		{2, 1, 2}, // already one to spare
		{2, 4, 5}, // more vCPUs than CPUs
		{8, 2, 8}, // never lowered
	} {
		runtime.GOMAXPROCS(tc.procs)
		reserveProcs(tc.vcpus)
		if got := runtime.GOMAXPROCS(0); got != tc.want {
			t.Errorf("GOMAXPROCS %d, reserveProcs(%d): GOMAXPROCS %d, want %d", tc.procs, tc.vcpus, got, tc.want)
		}
	}
}
