package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microvm/microvm/internal/registry"
)

// holderEnv makes the test binary a stand-in VM process: it registers
// itself in DIR under NAME (like microvm boot does) and waits to be
// signalled. With ",ignore-term" it ignores SIGTERM.
const holderEnv = "MICROVM_TEST_HOLDER"

// runHolder is the stand-in VM process's whole life when holderEnv is set;
// it returns at once otherwise.
func runHolder() {
	if v := os.Getenv(holderEnv); v != "" {
		parts := strings.Split(v, ",")
		d, err := registry.Open(parts[0])
		if err != nil {
			os.Exit(2)
		}
		if _, err := d.Register(registry.Entry{Name: parts[1], PID: os.Getpid(), Image: "holder", CPUs: 1, MemoryBytes: 2 << 20, Created: time.Now()}); err != nil {
			os.Exit(3)
		}
		if len(parts) > 2 && parts[2] == "ignore-term" {
			signal.Ignore(syscall.SIGTERM)
		}
		os.Stdout.WriteString("registered\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
}

// startHolder starts a stand-in VM process and waits for its registration.
func startHolder(t *testing.T, dir, name string, ignoreTerm bool) *exec.Cmd {
	t.Helper()
	v := dir + "," + name
	if ignoreTerm {
		v += ",ignore-term"
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+v)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "registered\n" {
		t.Fatalf("holder said %q, %v", line, err)
	}
	return cmd
}

// waitStatus waits for a holder and returns how it ended.
func waitStatus(t *testing.T, cmd *exec.Cmd) syscall.WaitStatus {
	t.Helper()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		t.Fatalf("the holder (pid %d, %s) did not end within 10 s; /proc status:\n%s", cmd.Process.Pid, cmd.Env[len(cmd.Env)-1], status)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}

func TestPsStopKill(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vms")
	sd := "--state-dir=" + dir

	// Nothing registered yet: an empty table, an empty JSON list.
	if code, out, errs := run(t, "ps", sd); code != 0 || strings.TrimSpace(out) != "NAME   PID   IMAGE   CPUS   MEMORY   STATUS" {
		t.Fatalf("ps on nothing: %d %q %q", code, out, errs)
	}
	if code, out, _ := run(t, "ps", sd, "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("ps --json on nothing: %d %q", code, out)
	}

	web := startHolder(t, dir, "web", false)
	stubborn := startHolder(t, dir, "stubborn", true)
	db := startHolder(t, dir, "db", false)

	code, out, _ := run(t, "ps", sd, "--json")
	var rows []psRow
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("ps --json: %d %v\n%s", code, err, out)
	}
	if len(rows) != 3 || rows[0].Name != "db" || rows[1].Name != "stubborn" || rows[2].Name != "web" {
		t.Fatalf("ps --json rows %+v", rows)
	}
	if rows[2].PID != web.Process.Pid || rows[2].Image != "holder" || rows[2].MemoryBytes != 2<<20 || rows[2].UptimeSeconds < 0 {
		t.Errorf("web's row %+v", rows[2])
	}
	if code, out, _ := run(t, "ps", sd, "-q"); code != 0 || out != "db\nstubborn\nweb\n" {
		t.Errorf("ps -q: %d %q", code, out)
	}
	if code, out, _ := run(t, "ps", sd); code != 0 || !strings.Contains(out, "web") || !strings.Contains(out, "2M ") || !strings.Contains(out, "Up ") {
		t.Errorf("ps table: %d\n%s", code, out)
	}

	// stop: SIGTERM, and the process is gone when stop returns.
	if code, out, errs := run(t, "stop", sd, "web"); code != 0 || out != "web\n" {
		t.Fatalf("stop web: %d %q %q", code, out, errs)
	}
	if ws := waitStatus(t, web); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("web ended with %v, want SIGTERM", ws)
	}
	// A process that ignores SIGTERM gets SIGKILL after --time.
	start := time.Now()
	if code, _, errs := run(t, "stop", sd, "-t", "300ms", "stubborn"); code != 0 {
		t.Fatalf("stop stubborn: %d %q", code, errs)
	}
	if ws := waitStatus(t, stubborn); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("stubborn ended with %v, want SIGKILL", ws)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("stop -t 300ms escalated after %v", d)
	}
	// kill with a signal of choice.
	if code, _, errs := run(t, "kill", sd, "--signal", "hup", "db"); code != 0 {
		t.Fatalf("kill -s hup db: %d %q", code, errs)
	}
	if ws := waitStatus(t, db); !ws.Signaled() || ws.Signal() != syscall.SIGHUP {
		t.Errorf("db ended with %v, want SIGHUP", ws)
	}
	// Every holder is gone: ps prunes their entries.
	if code, out, _ := run(t, "ps", sd, "-q"); code != 0 || out != "" {
		t.Errorf("ps -q after all ended: %d %q", code, out)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(left) != 0 {
		t.Errorf("entries left behind: %v", left)
	}
}

func TestVMCommandErrors(t *testing.T) {
	sd := "--state-dir=" + t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"stop nothing", []string{"stop", sd}, exitUsage, "needs at least 1 argument"},
		{"stop unknown", []string{"stop", sd, "ghost"}, exitUsage, "no such VM: ghost"},
		{"kill unknown", []string{"kill", sd, "ghost"}, exitUsage, "no such VM: ghost"},
		{"kill bad name", []string{"kill", sd, "../etc"}, exitUsage, "bad VM name"},
		{"kill bad signal", []string{"kill", sd, "-s", "NOPE", "x"}, exitUsage, `unknown signal "NOPE"`},
		{"kill signal 0", []string{"kill", sd, "-s", "0", "x"}, exitUsage, "out of range"},
		{"stop negative time", []string{"stop", sd, "-t", "-1s", "x"}, exitUsage, "must not be negative"},
		{"ps json and quiet", []string{"ps", sd, "--json", "-q"}, exitUsage, "do not go together"},
		{"ps args", []string{"ps", sd, "x"}, exitUsage, "takes no arguments"},
		{"state dir swallows a flag", []string{"ps", "--state-dir", "--json"}, exitUsage, `--state-dir "--json" looks like a flag`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("status %d, stderr %q; want %d and %q", code, errs, tc.code, tc.want)
			}
		})
	}
}

func TestBootNameInUse(t *testing.T) {
	dir := t.TempDir()
	startHolder(t, dir, "taken", false)
	code, _, errs := run(t, "boot", "--state-dir", dir, "--name", "taken", "--guest", "ready")
	if code != exitUsage || !strings.Contains(errs, `a VM named "taken" is running`) {
		t.Errorf("boot --name taken: %d %q", code, errs)
	}
	code, _, errs = run(t, "boot", "--state-dir", dir, "--name", "bad/name", "--guest", "ready")
	if code != exitUsage || !strings.Contains(errs, "bad VM name") {
		t.Errorf("boot --name bad/name: %d %q", code, errs)
	}
}

func TestTimeoutFlag(t *testing.T) {
	for _, tc := range []struct {
		set                   string
		embedded, interactive bool
		want                  time.Duration
		err                   string
	}{
		{"auto", true, false, autoTimeout, ""},
		{"auto", true, true, 0, ""},
		{"auto", false, false, 0, ""}, // a Linux kernel or the user's own image
		{"auto", false, true, 0, ""},
		{"0", true, false, 0, ""},
		{"5s", false, true, 5 * time.Second, ""},
		{"1h30m", true, false, 90 * time.Minute, ""},
		{"-1s", true, false, 0, "must not be negative"},
		{"30", true, false, 0, "has no unit"},
		{"soon", true, false, 0, "want a duration"},
	} {
		f := timeoutFlag{auto: true}
		err := f.Set(tc.set)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Set(%q) = %v, want %q", tc.set, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%q): %v", tc.set, err)
			continue
		}
		if got := f.resolve(tc.embedded, tc.interactive); got != tc.want {
			t.Errorf("%q embedded=%v interactive=%v: %v, want %v", tc.set, tc.embedded, tc.interactive, got, tc.want)
		}
	}
	if got := (&timeoutFlag{auto: true}).String(); got != "auto" {
		t.Errorf("default shows as %q", got)
	}
}
