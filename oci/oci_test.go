package oci

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/vmm"
	"golang.org/x/sys/unix"
)

func TestStatusCheck(t *testing.T) {
	all := []Status{StatusCreating, StatusCreated, StatusRunning, StatusStopped}
	allowed := map[Op][]Status{
		OpStart:       {StatusCreated},
		OpKill:        {StatusCreated, StatusRunning},
		OpDelete:      {StatusStopped},
		OpForceDelete: all,
	}
	for op, ok := range allowed {
		for _, s := range all {
			want := false
			for _, o := range ok {
				want = want || o == s
			}
			err := s.Check(op)
			if (err == nil) != want {
				t.Errorf("%s in %s: err = %v, want allowed=%v", op, s, err, want)
			}
			if err != nil && !errors.Is(err, ErrState) {
				t.Errorf("%s in %s: %v does not wrap ErrState", op, s, err)
			}
		}
	}
	if err := Status("bogus").Check(OpForceDelete); err == nil {
		t.Error("force delete of an unknown status allowed")
	}
	if err := StatusCreated.Check(Op("pause")); err == nil {
		t.Error("unknown op allowed")
	}
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"c1", true}, {"a_b-c.d+e", true}, {"", false}, {".", false}, {"..", false},
		{"a/b", false}, {"../x", false}, {"a b", false}, {strings.Repeat("x", 1025), false},
	} {
		if err := ValidateID(tc.id); (err == nil) != tc.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"ociVersion":"1.0.2","id":"c","status":"created","pid":5,"bundle":"/b"}`, true},
		{`{"id":"c","status":"paused"}`, false},
		{`{"id":"../c","status":"created"}`, false},
		{`{"id":"c","status":"created","pid":-1}`, false},
		{`{"id":"c","status":"created"} {}`, false},
		{`not json`, false},
	} {
		if _, err := ParseState([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("ParseState(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2","id":"c","status":"created","pid":5,"bundle":"/b"}`))
	f.Add([]byte(`{"id":"c","status":"stopped","annotations":{"a":"b"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseState(data)
		if err != nil {
			return
		}
		if ValidateID(st.ID) != nil || !st.Status.valid() || st.Pid < 0 {
			t.Fatalf("accepted a bad state: %+v", st)
		}
	})
}

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }

func baseConfig() *rootfs.Config {
	return &rootfs.Config{
		OCIVersion: "1.0.2",
		Root:       &rootfs.Root{Path: "rootfs"},
		Hostname:   "box",
		Process: &rootfs.Process{
			Args: []string{"/bin/sh", "-c", "echo hi"}, Cwd: "/",
			Env:  []string{"HOME=/root"},
			User: rootfs.User{UID: 1000, GID: 100},
		},
	}
}

func TestTranslate(t *testing.T) {
	c := baseConfig()
	c.Mounts = []rootfs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev/", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid"}},
		{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue"},
	}
	c.Process.Rlimits = []rootfs.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 4096}}
	c.Process.User.AdditionalGids = []uint32{5, 27}
	c.Linux = &rootfs.Linux{
		Resources:   &rootfs.Resources{Memory: &rootfs.Memory{Limit: i64(300 << 20)}, CPU: &rootfs.CPU{Quota: i64(150000), Period: u64(100000)}},
		Namespaces:  []rootfs.Namespace{{Type: "network", Path: "/run/netns/x"}},
		MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
	}
	b, err := Translate("/bundles/b", c, map[string]string{KernelAnnotation: "/k/vmlinux"})
	if err != nil {
		t.Fatal(err)
	}
	a := b.Agent
	if b.Rootfs != "/bundles/b/rootfs" {
		t.Errorf("rootfs = %q", b.Rootfs)
	}
	if a.UID != 1000 || a.GID != 100 || len(a.Groups) != 2 || a.Groups[1] != 27 || a.Hostname != "box" || a.Cwd != "/" || len(a.Args) != 3 {
		t.Errorf("agent = %+v", a)
	}
	if lookupEnv(a.Env, "PATH") == "" || lookupEnv(a.Env, "HOME") != "/root" {
		t.Errorf("env = %q: want HOME kept and a default PATH", a.Env)
	}
	if len(a.Mounts) != 3 || a.Mounts[0].Type != "proc" || a.Mounts[1].Target != "/dev" || a.Mounts[2].Type != "bind" {
		t.Errorf("mounts = %+v: want proc, /dev tmpfs and the bind (resolved by LoadBundle)", a.Mounts)
	}
	if len(a.MaskedPaths) != 1 || a.MaskedPaths[0] != "/proc/kcore" || len(a.ReadonlyPaths) != 1 || a.ReadonlyPaths[0] != "/proc/sys" {
		t.Errorf("masked %q, read-only %q", a.MaskedPaths, a.ReadonlyPaths)
	}
	if len(a.Rlimits) != 1 || a.Rlimits[0].Resource != 7 || a.Rlimits[0].Soft != 1024 {
		t.Errorf("rlimits = %+v", a.Rlimits)
	}
	want := VMPlan{Kernel: "/k/vmlinux", MemoryMB: 300, CPUs: 2, Network: "none"}
	if b.Plan != want {
		t.Errorf("plan = %+v, want %+v", b.Plan, want)
	}
	if len(b.Notes) != 2 { // mqueue, netns
		t.Errorf("notes = %q, want 2", b.Notes)
	}

	small := baseConfig()
	small.Linux = &rootfs.Linux{Resources: &rootfs.Resources{Memory: &rootfs.Memory{Limit: i64(1 << 20)}}}
	if b, err := Translate("/b", small, nil); err != nil || b.Plan.MemoryMB != minMemoryMB {
		t.Errorf("1 MiB limit: plan %+v, err %v; want raised to %d", b.Plan, err, minMemoryMB)
	}
}

// TestLoadBundleBinds: a bind of a host directory becomes a 9p share, of
// a small file a copy; a missing source, a large file and a device are
// skipped with a note. Relative sources are the bundle's.
func TestLoadBundleBinds(t *testing.T) {
	host := t.TempDir()
	os.MkdirAll(filepath.Join(host, "data"), 0o755)
	os.WriteFile(filepath.Join(host, "hosts"), []byte("127.0.0.1 box\n"), 0o644)
	os.WriteFile(filepath.Join(host, "big"), make([]byte, maxFileBind+1), 0o644)
	c := baseConfig()
	c.Mounts = []rootfs.Mount{
		{Destination: "/data", Type: "bind", Source: filepath.Join(host, "data"), Options: []string{"rbind", "ro", "nosuid"}},
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(host, "hosts"), Options: []string{"bind"}},
		{Destination: "/gone", Type: "bind", Source: filepath.Join(host, "nope"), Options: []string{"bind"}},
		{Destination: "/big", Type: "bind", Source: filepath.Join(host, "big"), Options: []string{"bind"}},
		{Destination: "/null", Type: "bind", Source: "/dev/null", Options: []string{"bind"}},
		{Destination: "/rel", Source: "rootfs/bin", Options: []string{"rbind"}},
	}
	b, err := LoadBundle(writeBundle(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Shares) != 2 || b.Shares[0].Path != filepath.Join(host, "data") || !b.Shares[0].ReadOnly ||
		b.Shares[1].Path != filepath.Join(b.Dir, "rootfs", "bin") || b.Shares[1].ReadOnly {
		t.Errorf("shares = %+v: want data (ro) and the bundle's rootfs/bin", b.Shares)
	}
	if len(b.Files) != 1 || b.Files[0].Host != filepath.Join(host, "hosts") {
		t.Errorf("files = %+v: want hosts", b.Files)
	}
	var got []string
	for _, m := range b.Agent.Mounts {
		got = append(got, m.Type+":"+m.Target+":"+m.Source+":"+strings.Join(m.Flags, ","))
	}
	want := []string{
		"9p:/data:mvbind0:" + p9Options + ",ro,nosuid",
		"file:/etc/hosts:" + guestFileDir + "/0:",
		"9p:/rel:mvbind1:" + p9Options,
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("agent mounts:\n %q\nwant\n %q", got, want)
	}
	if len(b.Notes) != 3 {
		t.Errorf("notes = %q: want the missing source, the big file and /dev/null", b.Notes)
	}
	s, _, err := AgentScript(b.Agent)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"$B mount -t '9p' -o '" + p9Options + ",ro,nosuid' 'mvbind0' '/.microvm/root/data'",
		"$B mount -o bind '" + guestFileDir + "/0' '/.microvm/root/etc/hosts'",
	} {
		if !strings.Contains(string(s), w) {
			t.Errorf("agent lacks %q:\n%s", w, s)
		}
	}
	img, _, err := GuestImage(b, writeBusybox(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(img, []byte("127.0.0.1 box")) {
		t.Error("the guest image lacks the copied file")
	}
}

// TestRootfsMode: the annotation (or $MICROVM_OCI_ROOTFS) chooses the
// image or the shared directory; a share puts the rootfs first among the
// shares and the agent mounts it as the root.
func TestRootfsMode(t *testing.T) {
	if _, err := Translate("/b", baseConfig(), map[string]string{RootfsAnnotation: "nfs"}); err == nil || !strings.Contains(err.Error(), RootfsAnnotation) {
		t.Errorf("a bad %s: %v", RootfsAnnotation, err)
	}
	bundle := writeBundle(t, baseConfig())
	b, err := LoadBundle(bundle)
	if err != nil || b.Plan.Rootfs != RootfsImage || len(b.Shares) != 0 || b.Agent.RootShare {
		t.Fatalf("default: %+v, %v; want the image", b, err)
	}
	t.Setenv("MICROVM_OCI_ROOTFS", RootfsShare)
	b, err = LoadBundle(bundle)
	if err != nil || b.Plan.Rootfs != RootfsShare || len(b.Shares) != 1 || b.Shares[0].Path != b.Rootfs || !b.Agent.RootShare {
		t.Fatalf("MICROVM_OCI_ROOTFS=9p: %+v, %v; want the rootfs shared", b, err)
	}
	s, _, _ := AgentScript(b.Agent)
	if !strings.Contains(string(s), "mount -t 9p -o "+p9Options+" "+rootTag+" $R") || strings.Contains(string(s), "/dev/vda") {
		t.Errorf("agent of a shared root:\n%s", s)
	}
	t.Setenv("MICROVM_OCI_ROOTFS", "tape")
	if _, err := LoadBundle(bundle); err == nil {
		t.Error("MICROVM_OCI_ROOTFS=tape accepted")
	}
}

// writeBusybox writes a stand-in busybox file (GuestImage only reads it).
func writeBusybox(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(p, []byte("\x7fELF"), 0o755)
	return p
}

func TestTranslateErrors(t *testing.T) {
	for name, mut := range map[string]func(*rootfs.Config){
		"version":      func(c *rootfs.Config) { c.OCIVersion = "2.0.0" },
		"no process":   func(c *rootfs.Config) { c.Process = nil },
		"no args":      func(c *rootfs.Config) { c.Process.Args = nil },
		"rlimit type":  func(c *rootfs.Config) { c.Process.Rlimits = []rootfs.Rlimit{{Type: "RLIMIT_BOGUS"}} },
		"rlimit order": func(c *rootfs.Config) { c.Process.Rlimits = []rootfs.Rlimit{{Type: "RLIMIT_CORE", Soft: 2, Hard: 1}} },
		"huge memory": func(c *rootfs.Config) {
			c.Linux = &rootfs.Linux{Resources: &rootfs.Resources{Memory: &rootfs.Memory{Limit: i64(1 << 50)}}}
		},
	} {
		c := baseConfig()
		mut(c)
		if _, err := Translate("/b", c, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// writeBundle makes a bundle with a busybox-like root: /bin/sh a symlink to
// an executable /bin/busybox.
func writeBundle(t *testing.T, c *rootfs.Config) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/busybox", filepath.Join(bin, "sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if c != nil {
		if err := rootfs.WriteBundle(dir, c); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadBundle(t *testing.T) {
	good := writeBundle(t, baseConfig())
	if _, err := LoadBundle(good); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	viaPath := baseConfig()
	viaPath.Process.Args = []string{"sh"}
	if _, err := LoadBundle(writeBundle(t, viaPath)); err != nil {
		t.Errorf("args[0] through PATH: %v", err)
	}

	noConfig := writeBundle(t, nil)
	notJSON := writeBundle(t, nil)
	os.WriteFile(filepath.Join(notJSON, "config.json"), []byte("{not json"), 0o644)
	badVersion := writeBundle(t, nil)
	os.WriteFile(filepath.Join(badVersion, "config.json"), []byte(`{"ociVersion":"0.9","root":{"path":"rootfs"},"process":{"args":["/bin/sh"],"cwd":"/"}}`), 0o644)
	noRoot := writeBundle(t, baseConfig())
	os.RemoveAll(filepath.Join(noRoot, "rootfs"))
	missing := baseConfig()
	missing.Process.Args = []string{"/bin/nosuch"}
	notExec := baseConfig()
	notExec.Process.Args = []string{"/bin/data"}
	notInPath := baseConfig()
	notInPath.Process.Args = []string{"nosuch"}
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"no config.json", noConfig, "config.json"},
		{"not JSON", notJSON, "oci config"},
		{"spec version", badVersion, "unsupported ociVersion"},
		{"missing rootfs", noRoot, "root file system"},
		{"missing args[0]", writeBundle(t, missing), "no such file"},
		{"not executable", writeBundle(t, notExec), "not executable"},
		{"not in PATH", writeBundle(t, notInPath), "not found"},
		{"no bundle", filepath.Join(t.TempDir(), "nope"), "no such file"},
	} {
		_, err := LoadBundle(tc.dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckHost(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := CheckHost(dev, vmm.HostSVM); !errors.Is(err, ErrHost) {
		t.Errorf("missing device: %v, want ErrHost", err)
	}
	os.WriteFile(dev, nil, 0o600) // a file stands in for an openable device
	if err := CheckHost(dev, vmm.HostPVM); !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), "kvm_pvm") {
		t.Errorf("kvm_pvm: %v, want ErrHost naming kvm_pvm", err)
	}
	if err := CheckHost(dev, vmm.HostSVM); err != nil {
		t.Errorf("amd-v: %v", err)
	}
}

// shLauncher stands in for the VMM process with a real one that does what
// the VMM's contract says: wait on the fifo for start, make the ready mark,
// then run (sleep).
// It tests the state machine; the VM itself is tested in the rig.
func shLauncher(t *testing.T) Launcher {
	return func(st *State, b *Bundle, fifo string, _ CreateOptions) (*os.Process, error) {
		cmd := exec.Command("/bin/sh", "-c", `read x < "$1"; : >"$2"; exec sleep 30`, "sh", fifo, filepath.Join(filepath.Dir(fifo), "ready"))
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // reap, so the exit shows as a gone pid
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		return cmd.Process, nil
	}
}

func testRuntime(t *testing.T, l Launcher) (*Runtime, string) {
	dev := filepath.Join(t.TempDir(), "kvm")
	os.WriteFile(dev, nil, 0o600)
	return &Runtime{
		Store:    Store{Root: filepath.Join(t.TempDir(), "state")},
		DevKVM:   dev,
		HostKind: func() vmm.HostKind { return vmm.HostSVM },
		Launch:   l,
	}, writeBundle(t, baseConfig())
}

func TestLifecycle(t *testing.T) {
	r, bundle := testRuntime(t, shLauncher(t))
	pidFile := filepath.Join(t.TempDir(), "pid")
	st, err := r.Create("c1", bundle, CreateOptions{PidFile: pidFile})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(pidFile); string(b) == "" || st.Status != StatusCreated {
		t.Fatalf("after create: pid file %q, status %s", b, st.Status)
	}
	if _, err := r.Create("c1", bundle, CreateOptions{}); !errors.Is(err, ErrExist) {
		t.Errorf("duplicate create: %v, want ErrExist", err)
	}
	if err := r.Delete("c1", false); !errors.Is(err, ErrState) {
		t.Errorf("delete of created without force: %v", err)
	}
	if err := r.Start("c1"); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := r.Start("c1"); !errors.Is(err, ErrState) {
		t.Errorf("start twice: %v, want ErrState", err)
	}
	if st, _ := r.State("c1"); st == nil || st.Status != StatusRunning {
		t.Fatalf("after start: %+v", st)
	}
	if err := r.Delete("c1", false); !errors.Is(err, ErrState) {
		t.Errorf("delete of running without force: %v", err)
	}
	if err := r.Kill("c1", unix.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := r.State("c1")
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == StatusStopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s 5 s after SIGKILL", st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Kill("c1", unix.SIGTERM); !errors.Is(err, ErrState) {
		t.Errorf("kill of stopped: %v, want ErrState", err)
	}
	if l, err := r.List(); err != nil || len(l) != 1 || l[0].ID != "c1" {
		t.Errorf("list = %v, %v", l, err)
	}
	if err := r.Delete("c1", false); err != nil {
		t.Fatalf("delete stopped: %v", err)
	}
	if _, err := r.State("c1"); !errors.Is(err, ErrNotExist) {
		t.Errorf("state after delete: %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Join(r.Store.Root, "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left behind: %v", err)
	}
}

func TestForceDelete(t *testing.T) {
	r, bundle := testRuntime(t, shLauncher(t))
	st, err := r.Create("c2", bundle, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Delete("c2", true); err != nil {
		t.Fatalf("force delete of created: %v", err)
	}
	if alive(st) {
		t.Errorf("pid %d still alive after force delete", st.Pid)
	}
	if ids, _ := r.Store.IDs(); len(ids) != 0 {
		t.Errorf("left behind: %v", ids)
	}
}

// TestCreateLeavesNothing: every refusal of create leaves no state dir and
// starts no process.
func TestCreateLeavesNothing(t *testing.T) {
	launched := 0
	count := func(st *State, b *Bundle, fifo string, _ CreateOptions) (*os.Process, error) {
		launched++
		return nil, errors.New("launch refused by test")
	}
	r, bundle := testRuntime(t, count)
	pvm := *r
	pvm.HostKind = func() vmm.HostKind { return vmm.HostPVM }
	nokvm := *r
	nokvm.DevKVM = filepath.Join(t.TempDir(), "none")
	tty := baseConfig()
	tty.Process.Terminal = true
	ttyBundle := writeBundle(t, tty)
	for _, tc := range []struct {
		name   string
		r      *Runtime
		id     string
		bundle string
		opts   CreateOptions
		want   error
		msg    string
	}{
		{"kvm_pvm", &pvm, "a", bundle, CreateOptions{}, ErrHost, "kvm_pvm"},
		{"no /dev/kvm", &nokvm, "a", bundle, CreateOptions{}, ErrHost, ""},
		{"bad id", r, "../x", bundle, CreateOptions{}, nil, "invalid container id"},
		{"no bundle", r, "a", t.TempDir(), CreateOptions{}, nil, "config.json"},
		{"console socket without a terminal", r, "a", bundle, CreateOptions{ConsoleSocket: "/tmp/s"}, nil, "process.terminal is false"},
		{"terminal without a console socket", r, "a", ttyBundle, CreateOptions{}, nil, "needs --console-socket"},
		{"launch fails", r, "a", bundle, CreateOptions{}, nil, "launch refused"},
	} {
		start := time.Now()
		_, err := tc.r.Create(tc.id, tc.bundle, tc.opts)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %v with %q", tc.name, err, tc.want, tc.msg)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", tc.name, d)
		}
		if ids, _ := r.Store.IDs(); len(ids) != 0 {
			t.Errorf("%s: left state dirs %v", tc.name, ids)
		}
	}
	if launched != 1 {
		t.Errorf("launcher called %d times, want once (only when all checks pass)", launched)
	}
}

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want unix.Signal
		ok   bool
	}{
		{"", unix.SIGTERM, true}, {"KILL", unix.SIGKILL, true}, {"sigterm", unix.SIGTERM, true},
		{"9", unix.SIGKILL, true}, {"0", 0, false}, {"65", 0, false}, {"NOPE", 0, false},
	} {
		got, err := ParseSignal(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSignal(%q) = %v, %v", tc.in, got, err)
		}
	}
}
