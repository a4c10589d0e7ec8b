package registry

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"vm-1234", true},
		{"A.b_c-9", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-x", false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{"../x", false},
		{"naïve", false},
	} {
		err := ValidName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, not ErrBadName", tc.name, err)
		}
	}
}

func TestRegisterListGet(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "vms"))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := d.List(); err != nil || len(l) != 0 {
		t.Fatalf("empty List = %v, %v", l, err)
	}
	created := time.Now().UTC().Truncate(time.Second)
	a, err := d.Register(Entry{Name: "b-vm", PID: 42, Image: "guest:hello", CPUs: 2, MemoryBytes: 128 << 20, Created: created})
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Register(Entry{Name: "a-vm", PID: 43})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Register(Entry{Name: "a-vm", PID: 44}); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second a-vm: %v, want ErrNameInUse", err)
	}
	l, err := d.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Name != "a-vm" || l[1].Name != "b-vm" {
		t.Fatalf("List = %+v, want a-vm then b-vm", l)
	}
	if l[1].PID != 42 || l[1].CPUs != 2 || l[1].MemoryBytes != 128<<20 || l[1].Image != "guest:hello" || !l[1].Created.Equal(created) {
		t.Errorf("b-vm read back as %+v", l[1])
	}
	if e, err := d.Get("a-vm"); err != nil || e.PID != 43 {
		t.Errorf("Get(a-vm) = %+v, %v", e, err)
	}
	if _, err := d.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}
	if _, err := d.Get("../etc"); !errors.Is(err, ErrBadName) {
		t.Errorf("Get(../etc) = %v, want ErrBadName", err)
	}

	// Close removes; Release leaves a stale file that the next reader prunes.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.file("b-vm")); !os.IsNotExist(err) {
		t.Errorf("b-vm's file after Close: %v", err)
	}
	b.Release()
	if _, err := os.Stat(d.file("a-vm")); err != nil {
		t.Fatalf("a-vm's file should stay after Release: %v", err)
	}
	if alive, err := d.Alive("a-vm"); err != nil || alive {
		t.Errorf("Alive(a-vm) after Release = %v, %v", alive, err)
	}
	if _, err := os.Stat(d.file("a-vm")); !os.IsNotExist(err) {
		t.Errorf("stale a-vm was not pruned: %v", err)
	}
	// The name is free again.
	c, err := d.Register(Entry{Name: "a-vm", PID: 45})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestCorruptEntry(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.Register(Entry{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.WriteFile(d.file("x"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.List(); err == nil || !strings.Contains(err.Error(), "x.json") {
		t.Errorf("List with a corrupt live entry: %v, want an error naming the file", err)
	}
}

// TestCrashedHolder registers from a child process that is then killed
// with SIGKILL: its entry must read as gone, and be pruned.
func TestCrashedHolder(t *testing.T) {
	if dir := os.Getenv("REGISTRY_TEST_CHILD"); dir != "" {
		d, err := Open(dir)
		if err != nil {
			os.Exit(2)
		}
		if _, err := d.Register(Entry{Name: "child", PID: os.Getpid()}); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("registered\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashedHolder$")
	cmd.Env = append(os.Environ(), "REGISTRY_TEST_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := out.Read(buf); err != nil || string(buf) != "registered\n" {
		cmd.Process.Kill()
		t.Fatalf("child said %q, %v", buf, err)
	}
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := d.Get("child"); err != nil || e.PID != cmd.Process.Pid {
		t.Fatalf("Get(child) while it runs = %+v, %v", e, err)
	}
	if _, err := d.Register(Entry{Name: "child"}); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("Register over a live child: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	l, err := d.List()
	if err != nil || len(l) != 0 {
		t.Fatalf("List after the child died = %+v, %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "child.json")); !os.IsNotExist(err) {
		t.Errorf("the dead child's entry was not pruned: %v", err)
	}
}
