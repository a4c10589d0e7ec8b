package main

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"golang.org/x/sys/unix"
)

// busyboxBundle writes a busybox bundle whose process runs sh -c script.
func busyboxBundle(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	rfs := filepath.Join(dir, "rootfs")
	if err := rootfs.Build(rfs, rootfs.Options{}); err != nil {
		t.Skipf("SKIP: no busybox rootfs (make deps installs busybox-static): %v", err)
	}
	c, err := rootfs.NewConfig(rfs, rootfs.BundleOptions{Args: []string{"/bin/sh", "-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rootfs.WriteBundle(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

// editConfig rewrites the bundle's config.json through edit.
func editConfig(t *testing.T, bundle string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	if b, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ociState returns `microvm oci state ID`'s status and pid.
func ociState(t *testing.T, bin, root, id string) (string, int) {
	t.Helper()
	code, out, errs := runBin(t, bin, "oci", "--root", root, "state", id)
	if code != 0 {
		t.Fatalf("state %s: %d %s", id, code, errs)
	}
	var st struct {
		Status string `json:"status"`
		Pid    int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("state %s: %v\n%s", id, err, out)
	}
	return st.Status, st.Pid
}

// TestOCILifecycleVM drives the OCI lifecycle through the binary with a
// real VM: create (VM built, paused) → state created → start → the
// workload's output → state stopped → delete; then run with the
// workload's status passed through, and the documented errors of start
// twice, kill of a stopped container and delete of a running one.
func TestOCILifecycleVM(t *testing.T) {
	bin := needOCIVM(t)
	root := filepath.Join(t.TempDir(), "state")
	bundle := busyboxBundle(t, "echo hello-from-$(hostname); sleep 1; exit 3")
	out, err := os.Create(filepath.Join(t.TempDir(), "console"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")
	create := exec.Command(bin, "oci", "--root", root, "create", "--bundle", bundle, "--pid-file", pidFile, "c1")
	create.Stdout, create.Stderr = out, out // the VMM inherits them, as conmon's pipes
	t0 := time.Now()
	if err := create.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("create: %v\n%s", err, b)
	}
	t.Logf("create (VM built, paused) took %v", time.Since(t0))
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "c1") })
	status, pid := ociState(t, bin, root, "c1")
	pf, _ := os.ReadFile(pidFile)
	if status != "created" || strconv.Itoa(pid) != strings.TrimSpace(string(pf)) {
		t.Fatalf("after create: status %q pid %d, pid file %q", status, pid, pf)
	}
	if b, _ := os.ReadFile(out.Name()); strings.Contains(string(b), "hello-from") {
		t.Fatal("the workload ran before start")
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code == 0 {
		t.Errorf("delete of a created container without --force succeeded: %s", errs)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "c1"); code != 0 {
		t.Fatalf("start: %d %s", code, errs)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "start", "c1"); code != exitOCIError {
		t.Errorf("second start: status %d, want %d", code, exitOCIError)
	}
	if s, _ := ociState(t, bin, root, "c1"); s != "running" {
		t.Errorf("after start: %q, want running", s)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code == 0 {
		t.Errorf("delete of a running container without --force succeeded")
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if s, _ := ociState(t, bin, root, "c1"); s == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("c1 never stopped; console:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(b), "hello-from-microvm") {
		t.Errorf("console lacks the workload's output (hostname from config.json):\n%s", b)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "kill", "c1", "TERM"); code == 0 {
		t.Errorf("kill of a stopped container succeeded")
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code != 0 {
		t.Errorf("delete: %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(root, "c1")); !os.IsNotExist(err) {
		t.Errorf("state directory left after delete: %v", err)
	}

	// run: create + start + wait, the workload's status passed through.
	t0 = time.Now()
	code, stdout, errs := runBin(t, bin, "oci", "--root", root, "run", "--bundle", bundle, "c2")
	if code != 3 || !strings.Contains(stdout, "hello-from-microvm") {
		t.Errorf("run: status %d, want 3; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
	t.Logf("run: launch to exit %v", time.Since(t0))
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("state left after run: %v", ents)
	}

	// process.user and a Go workload: the workload runs as 1000:1001 with
	// supplementary group 5 (oci/enter), and a static Go program — the
	// microvm binary itself, whose os.Open needs epoll from the guest
	// kernel — runs to its end.
	user := busyboxBundle(t, "echo ids-$(id -u)-$(id -g)-$(id -G | tr ' ' ,); /microvm ps --state-dir /tmp >/dev/null && echo go-ok")
	self, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "rootfs", "microvm"), self, 0o755); err != nil {
		t.Fatal(err)
	}
	editConfig(t, user, func(c map[string]any) {
		c["process"].(map[string]any)["user"] = map[string]any{"uid": 1000, "gid": 1001, "additionalGids": []int{5}}
	})
	code, stdout, errs = runBin(t, bin, "oci", "--root", root, "run", "--bundle", user, "c4")
	if code != 0 || !strings.Contains(stdout, "ids-1000-1001-1001,5") || !strings.Contains(stdout, "go-ok") {
		t.Errorf("run as 1000:1001 with a Go workload: status %d, want 0 with ids-1000-1001-1001,5 and go-ok; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}

	// kill of a running container ends it: 128+SIGTERM.
	sleeper := busyboxBundle(t, "echo up; sleep 600")
	create = exec.Command(bin, "oci", "--root", root, "create", "--bundle", sleeper, "c3")
	create.Stdout, create.Stderr = out, out
	if err := create.Run(); err != nil {
		t.Fatalf("create c3: %v", err)
	}
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "c3") })
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "c3"); code != 0 {
		t.Fatalf("start c3: %d %s", code, errs)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "kill", "c3", "TERM"); code != 0 {
		t.Fatalf("kill c3: %d %s", code, errs)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		if s, _ := ociState(t, bin, root, "c3"); s == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c3 still runs 30 s after kill TERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c3"); code != 0 {
		t.Errorf("delete c3: %d %s", code, errs)
	}
}

// needOCIVM skips unless this host can run container-VMs through the
// binary (a usable /dev/kvm, MICROVM_BIN, MICROVM_KERNEL_VMLINUX).
func needOCIVM(t *testing.T) string {
	t.Helper()
	needKVM(t)
	bin := os.Getenv("MICROVM_BIN")
	if bin == "" {
		t.Skip("SKIP: MICROVM_BIN is not set (make test builds bin/microvm and sets it)")
	}
	if os.Getenv("MICROVM_KERNEL_VMLINUX") == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX is not set (make test builds the lean kernel)")
	}
	return bin
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestOCISignalsVM: kill's signal reaches the workload inside the VM (a
// trap runs and sets the status), a signal the workload ignores leaves
// the container running, and KILL ends it (the VMM with the VM).
func TestOCISignalsVM(t *testing.T) {
	bin := needOCIVM(t)
	root := filepath.Join(t.TempDir(), "state")
	console := filepath.Join(t.TempDir(), "console")

	// USR1 to a trap: `run` exits with the trap's status.
	trap := busyboxBundle(t, "trap 'echo got-usr1; exit 7' USR1; echo armed; while :; do sleep 1; done")
	out, err := os.Create(console)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	run := exec.Command(bin, "oci", "--root", root, "run", "--bundle", trap, "s1")
	run.Stdout, run.Stderr = out, out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "s1") })
	exited := false
	if !waitFor(3*time.Minute, func() bool {
		select {
		case err := <-done:
			done <- err
			exited = true
		default:
		}
		b, _ := os.ReadFile(console)
		return exited || strings.Contains(string(b), "armed")
	}) || exited {
		b, _ := os.ReadFile(console)
		t.Fatalf("the workload never armed its trap:\n%s", b)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "kill", "s1", "USR1"); code != 0 {
		t.Fatalf("kill s1 USR1: %d %s", code, errs)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		b, _ := os.ReadFile(console)
		if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(string(b), "got-usr1") {
			t.Errorf("after kill USR1: %v, want status 7 with got-usr1; console:\n%s", err, b)
		}
	case <-time.After(time.Minute):
		t.Fatal("run still waits a minute after kill USR1")
	}

	// TERM ignored by the workload: still running; KILL: stopped.
	ignore := busyboxBundle(t, "trap '' TERM; echo ignoring; sleep 600")
	create := exec.Command(bin, "oci", "--root", root, "create", "--bundle", ignore, "s2")
	create.Stdout, create.Stderr = out, out
	if err := create.Run(); err != nil {
		t.Fatalf("create s2: %v", err)
	}
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "s2") })
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "s2"); code != 0 {
		t.Fatalf("start s2: %d %s", code, errs)
	}
	if !waitFor(3*time.Minute, func() bool { b, _ := os.ReadFile(console); return strings.Contains(string(b), "ignoring") }) {
		t.Fatal("s2's workload never started")
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "kill", "s2", "TERM"); code != 0 {
		t.Fatalf("kill s2 TERM: %d %s", code, errs)
	}
	time.Sleep(2 * time.Second)
	if s, _ := ociState(t, bin, root, "s2"); s != "running" {
		t.Errorf("2 s after a TERM the workload ignores: %q, want running", s)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "kill", "s2", "KILL"); code != 0 {
		t.Fatalf("kill s2 KILL: %d %s", code, errs)
	}
	if !waitFor(10*time.Second, func() bool { s, _ := ociState(t, bin, root, "s2"); return s == "stopped" }) {
		t.Error("s2 still runs 10 s after KILL")
	}
}

// receiveConsole listens on a unix socket as conmon does for
// --console-socket and returns the path and the master it will receive.
func receiveConsole(t *testing.T) (string, <-chan *os.File) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan *os.File, 1)
	go func() {
		defer close(ch)
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 256), oob)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return
		}
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
			ch <- os.NewFile(uintptr(fds[0]), "console-master")
		}
	}()
	return sock, ch
}

// TestOCITerminalVM: process.terminal with --console-socket, as podman -t
// drives it: the master reaches the socket, the workload has the VM's
// console as its controlling terminal, reads what is typed on the master
// (the guest's tty turns the \r into a line) and its output comes back.
// The root is the bundle's ext4 image under an overlay: writable in the
// VM, read-only when root.readonly says so.
func TestOCITerminalVM(t *testing.T) {
	bin := needOCIVM(t)
	root := filepath.Join(t.TempDir(), "state")
	bundle := busyboxBundle(t, "echo tty-$(tty); echo x >/etc/probe && echo root-writable; read line; echo got-$line; exit 5")
	editConfig(t, bundle, func(c map[string]any) {
		c["process"].(map[string]any)["terminal"] = true
		c["root"].(map[string]any)["readonly"] = false
	})
	sock, masters := receiveConsole(t)
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "create", "--bundle", bundle, "c1"); code == 0 {
		t.Errorf("create of a terminal container without --console-socket succeeded")
	} else if !strings.Contains(errs, "console-socket") {
		t.Errorf("create without --console-socket: %q, want it named", errs)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "create", "--bundle", bundle, "--console-socket", sock, "t1"); code != 0 {
		t.Fatalf("create t1: %d %s", code, errs)
	}
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "t1") })
	var master *os.File
	select {
	case master = <-masters:
	case <-time.After(10 * time.Second):
	}
	if master == nil {
		t.Fatal("no terminal master reached the console socket")
	}
	defer master.Close()
	var mu sync.Mutex
	var got strings.Builder
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			got.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return got.String() }
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "t1"); code != 0 {
		t.Fatalf("start t1: %d %s", code, errs)
	}
	if !waitFor(3*time.Minute, func() bool { return strings.Contains(output(), "root-writable") }) {
		t.Fatalf("no output through the terminal:\n%q", output())
	}
	if o := output(); !strings.Contains(o, "tty-/dev/ttyS0") {
		t.Errorf("the workload's terminal: %q, want tty-/dev/ttyS0", o)
	}
	if _, err := master.WriteString("typed\r"); err != nil {
		t.Fatal(err)
	}
	if !waitFor(time.Minute, func() bool { return strings.Contains(output(), "got-typed") }) {
		t.Errorf("the typed line never reached the workload:\n%q", output())
	}
	if !waitFor(time.Minute, func() bool { s, _ := ociState(t, bin, root, "t1"); return s == "stopped" }) {
		t.Error("t1 still runs a minute after its last line")
	}

	// root.readonly: the overlay is remounted read-only.
	ro := busyboxBundle(t, "if echo x >/probe 2>/dev/null; then echo root-rw; else echo root-ro; fi")
	editConfig(t, ro, func(c map[string]any) { c["root"].(map[string]any)["readonly"] = true })
	code, stdout, errs := runBin(t, bin, "oci", "--root", root, "run", "--bundle", ro, "r1")
	if code != 0 || !strings.Contains(stdout, "root-ro") {
		t.Errorf("run with root.readonly: status %d, want 0 with root-ro; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
}

// TestOCIBindMountsVM: a bind-mounted host directory is live in the VM
// over virtio-9p (the workload reads the host's file and its write lands on
// the host), a read-only one refuses writes, and a bind-mounted host file
// is there (copied at create).
func TestOCIBindMountsVM(t *testing.T) {
	bin := needOCIVM(t)
	root := filepath.Join(t.TempDir(), "state")
	host := t.TempDir()
	for _, d := range []string{"rw", "ro"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(host, "rw", "in"), []byte("from-the-host\n"), 0o644)
	os.WriteFile(filepath.Join(host, "ro", "keep"), []byte("kept\n"), 0o644)
	os.WriteFile(filepath.Join(host, "hosts"), []byte("10.0.0.1 bound-file\n"), 0o644)
	bundle := busyboxBundle(t, "cat /data/in; echo from-the-guest >/data/out && mkdir /data/sub && echo sub-ok >/data/sub/f; "+
		"if echo x >/rodata/keep 2>/dev/null; then echo ro-writable; else echo ro-refused; fi; cat /rodata/keep; cat /etc/bound")
	editConfig(t, bundle, func(c map[string]any) {
		ms, _ := c["mounts"].([]any)
		c["mounts"] = append(ms,
			map[string]any{"destination": "/data", "type": "bind", "source": filepath.Join(host, "rw"), "options": []string{"rbind", "rw"}},
			map[string]any{"destination": "/rodata", "type": "bind", "source": filepath.Join(host, "ro"), "options": []string{"rbind", "ro"}},
			map[string]any{"destination": "/etc/bound", "type": "bind", "source": filepath.Join(host, "hosts"), "options": []string{"bind", "ro"}})
	})
	code, stdout, errs := runBin(t, bin, "oci", "--root", root, "run", "--bundle", bundle, "b1")
	for _, w := range []string{"from-the-host", "ro-refused", "kept", "bound-file"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if code != 0 || t.Failed() {
		t.Fatalf("run with bind mounts: status %d; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
	for f, want := range map[string]string{"rw/out": "from-the-guest\n", "rw/sub/f": "sub-ok\n", "ro/keep": "kept\n"} {
		if b, err := os.ReadFile(filepath.Join(host, f)); err != nil || string(b) != want {
			t.Errorf("host %s: %q, %v; want %q", f, b, err, want)
		}
	}
}

// TestOCISharedRootVM: with annotation org.microvm.rootfs=9p the rootfs
// directory itself is the container's root over virtio-9p, as runc has
// it: the workload runs from it and its write to / lands in the bundle.
// linux.readonlyPaths and maskedPaths apply inside it: /etc read-only,
// /etc/secret reads empty.
func TestOCISharedRootVM(t *testing.T) {
	bin := needOCIVM(t)
	root := filepath.Join(t.TempDir(), "state")
	bundle := busyboxBundle(t, "echo shared >/written-by-guest && cat /etc/probe-in && echo $(hostname)-ok; "+
		"echo secret-[$(cat /etc/secret)]; if echo x >/etc/new 2>/dev/null; then echo etc-rw; else echo etc-ro; fi")
	for name, data := range map[string]string{"probe-in": "host-file\n", "secret": "hidden\n"} {
		if err := os.WriteFile(filepath.Join(bundle, "rootfs", "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	editConfig(t, bundle, func(c map[string]any) {
		c["annotations"] = map[string]any{"org.microvm.rootfs": "9p"}
		c["root"].(map[string]any)["readonly"] = false
		l, _ := c["linux"].(map[string]any)
		if l == nil {
			l = map[string]any{}
			c["linux"] = l
		}
		l["readonlyPaths"] = []string{"/etc"}
		l["maskedPaths"] = []string{"/etc/secret", "/not/there"}
	})
	code, stdout, errs := runBin(t, bin, "oci", "--root", root, "run", "--bundle", bundle, "r1")
	if code != 0 || !strings.Contains(stdout, "host-file") || !strings.Contains(stdout, "microvm-ok") ||
		!strings.Contains(stdout, "secret-[]") || !strings.Contains(stdout, "etc-ro") {
		t.Fatalf("run with a shared root: status %d; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs", "written-by-guest")); err != nil || string(b) != "shared\n" {
		t.Errorf("the guest's write to / on the host: %q, %v", b, err)
	}
}
