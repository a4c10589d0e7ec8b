package rootfs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewConfigDefaults(t *testing.T) {
	c, err := NewConfig("/r", BundleOptions{Args: []string{"/bin/true"}, MemoryBytes: 64 << 20, CPUs: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if c.Process.Terminal {
		t.Error("terminal is true")
	}
	var ns []string
	for _, n := range c.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	if got := strings.Join(ns, ","); got != "pid,network,ipc,uts,mount" {
		t.Errorf("namespaces %s", got)
	}
	var dst []string
	for _, m := range c.Mounts {
		dst = append(dst, m.Destination)
	}
	if got := strings.Join(dst, ","); got != "/proc,/dev,/dev/pts,/dev/shm,/dev/mqueue,/sys,/sys/fs/cgroup" {
		t.Errorf("mounts %s", got)
	}
	if *c.Linux.Resources.Memory.Limit != 64<<20 || *c.Linux.Resources.CPU.Quota != 50000 || *c.Linux.Resources.CPU.Period != 100000 {
		t.Errorf("resources %+v %+v", *c.Linux.Resources.Memory, *c.Linux.Resources.CPU)
	}
	if len(c.Process.Rlimits) != 0 {
		t.Error("rlimits set")
	}
	c2, _ := NewConfig("/r", BundleOptions{Args: []string{"x"}, NoNetwork: true, NoCgroupMount: true})
	for _, n := range c2.Linux.Namespaces {
		if n.Type == "network" {
			t.Error("NoNetwork kept the network namespace")
		}
	}
	for _, m := range c2.Mounts {
		if m.Destination == "/sys/fs/cgroup" {
			t.Error("NoCgroupMount kept the cgroup mount")
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rootfs string
		o      BundleOptions
	}{
		{"no args", "/r", BundleOptions{}},
		{"no rootfs", "", BundleOptions{Args: []string{"x"}}},
		{"negative memory", "/r", BundleOptions{Args: []string{"x"}, MemoryBytes: -1}},
	} {
		if _, err := NewConfig(tc.rootfs, tc.o); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c, err := NewConfig("rootfs", BundleOptions{Args: []string{"sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(dir, c); err != nil {
		t.Fatal(err)
	}
	got, err := ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Errorf("round trip differs:\n%s\n%s", a, b)
	}
	if _, err := ReadConfig(filepath.Join(dir, "nope")); err == nil {
		t.Error("ReadConfig of a missing bundle did not fail")
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"not json", "{", "oci config"},
		{"version 2", `{"ociVersion":"2.0.0","root":{"path":"r"},"process":{"args":["x"],"cwd":"/"}}`, "unsupported ociVersion"},
		{"no root", `{"ociVersion":"1.0.2","process":{"args":["x"],"cwd":"/"}}`, "root.path"},
		{"no process", `{"ociVersion":"1.0.2","root":{"path":"r"}}`, "process missing"},
		{"empty args", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":[],"cwd":"/"}}`, "args is empty"},
		{"relative cwd", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":["x"],"cwd":"tmp"}}`, "not absolute"},
		{"relative mount", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":["x"],"cwd":"/"},"mounts":[{"destination":"proc"}]}`, "not absolute"},
		{"bad namespace", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":["x"],"cwd":"/"},"linux":{"namespaces":[{"type":"bogus"}]}}`, "unknown namespace"},
		{"dup namespace", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":["x"],"cwd":"/"},"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}`, "twice"},
		{"trailing", `{"ociVersion":"1.0.2","root":{"path":"r"},"process":{"args":["x"],"cwd":"/"}} {}`, "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseConfig = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestParseRuncSpec reads the config `runc spec` writes, when runc is here.
func TestParseRuncSpec(t *testing.T) {
	b, err := os.ReadFile("testdata/runc-spec.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("ParseConfig(runc spec): %v", err)
	}
	if c.Process.Args[0] != "sh" || !c.Process.Terminal || c.Root.Path != "rootfs" {
		t.Errorf("parsed %+v", c.Process)
	}
}

func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile("testdata/runc-spec.json"); err == nil {
		f.Add(b)
	}
	c, _ := NewConfig("/r", BundleOptions{Args: []string{"x"}, MemoryBytes: 1 << 20})
	b, _ := json.Marshal(c)
	f.Add(b)
	f.Add([]byte(`{"ociVersion":"1.0.0"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		// A config that parses must validate, marshal and parse again.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := ParseConfig(out); err != nil {
			t.Fatalf("re-parse of a valid config failed: %v", err)
		}
	})
}
