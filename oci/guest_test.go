package oci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm/microvm/images/rootfs"
)

// TestAgentScriptEnter: the workload runs through enter with the
// container's root, cwd, user and groups, after the environment; with a
// terminal in a session of its own on ttyS0, else with /dev/null as stdin.
func TestAgentScriptEnter(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    AgentConfig
		want []string
	}{
		{"root", AgentConfig{Args: []string{"sh"}}, []string{"$B env -i " + GuestEnter + " $R '/' 0 0 - 'sh' </dev/null"}},
		{"uid and gid", AgentConfig{Args: []string{"sh"}, UID: 1000, GID: 1001, Cwd: "/home/u"}, []string{GuestEnter + " $R '/home/u' 1000 1001 - 'sh'"}},
		{"groups", AgentConfig{Args: []string{"sh", "-c", "it's"}, Groups: []uint32{5, 6}}, []string{GuestEnter + ` $R '/' 0 0 5,6 'sh' '-c' 'it'\''s'`}},
		{"env", AgentConfig{Args: []string{"true"}, Env: []string{"A=b c"}}, []string{"$B env -i 'A=b c' " + GuestEnter}},
		{"terminal", AgentConfig{Args: []string{"sh"}, Terminal: true}, []string{"$B setsid -c $B env -i", "'sh' </dev/ttyS0 >/dev/ttyS0 2>&1"}},
		{"readonly", AgentConfig{Args: []string{"sh"}, Readonly: true}, []string{"mount -o remount,ro $R"}},
		{"readonly and masked paths", AgentConfig{Args: []string{"sh"}, ReadonlyPaths: []string{"/proc/sys"}, MaskedPaths: []string{"/proc/kcore", "/sys/firmware"}},
			[]string{"$B mount -o bind '/.microvm/root/proc/sys' '/.microvm/root/proc/sys' && $B mount -o remount,bind,ro '/.microvm/root/proc/sys'",
				"if [ -d '/.microvm/root/proc/kcore' ]; then $B mount -t tmpfs -o ro,size=0 tmpfs '/.microvm/root/proc/kcore'; elif [ -e '/.microvm/root/proc/kcore' ]; then $B mount -o bind /dev/null '/.microvm/root/proc/kcore'; fi"}},
		{"mounts inside the root", AgentConfig{Args: []string{"sh"}, Mounts: []AgentMount{{Target: "/proc", Type: "proc"}, {Target: "../../etc", Type: "tmpfs"}}},
			[]string{"mount -t 'proc' 'proc' '/.microvm/root/proc'", "'/.microvm/root/etc'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, err := AgentScript(&tc.a)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("script lacks %q:\n%s", w, s)
				}
			}
			if !tc.a.Terminal && strings.Contains(s, "setsid") {
				t.Errorf("no terminal, yet setsid:\n%s", s)
			}
			if !tc.a.Readonly && strings.Contains(s, "remount,ro") {
				t.Errorf("a writable root made read-only:\n%s", s)
			}
		})
	}
}

// TestGuestImage: the initramfs carries busybox, the agent and enter,
// executable, and none of the bundle (its rootfs is the disk image).
func TestGuestImage(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteGuestImage(&buf, []byte("busybox"), []byte("#!init"), map[string][]byte{guestFileDir + "/0": []byte("hosts-data")}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{GuestBusybox, GuestInit, GuestEnter, "/dev/console", guestFileDir + "/0"} {
		if !bytes.Contains(buf.Bytes(), []byte(name[1:]+"\x00")) {
			t.Errorf("the guest image has no %s", name)
		}
	}
	if !bytes.Contains(buf.Bytes(), enterBinary) {
		t.Error("the guest image lacks the enter binary")
	}
}

// TestEnter runs the embedded enter on this host (x86-64 Linux, as the
// guest). As root: into a busybox root as 65534:65534 with group 5 in its
// cwd, the program found through PATH; otherwise chroot is refused (126).
// Bad arguments give 126, a program that is not there 127, a cwd that is
// not there 126.
func TestEnter(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "enter")
	if err := os.WriteFile(bin, enterBinary, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	bb, err := rootfs.FindBusybox("")
	if err != nil {
		t.Skipf("SKIP: %v", err)
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	for _, d := range []string{"bin", "work"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755)
	for _, a := range []string{"sh", "id", "pwd"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	env := []string{"PATH=/nonexistent:/bin"}
	out, code := run(env, root, "/work", "65534", "65534", "5", "sh", "-c", "echo $(pwd) $(id -u) $(id -g) $(id -G) $PATH")
	if os.Geteuid() == 0 {
		if want := "/work 65534 65534 65534 5 /nonexistent:/bin"; code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("as root: %q status %d, want %q", out, code, want)
		}
	} else if code != 126 || !strings.Contains(out, "cannot chroot") {
		t.Errorf("as uid %d: %q status %d, want chroot refused (126)", os.Geteuid(), out, code)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("SKIP: no sh")
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-", "/", "1", "1"}, 126, "usage"},
		{[]string{"-", "/", "x", "1", "-", sh}, 126, "bad uid"},
		{[]string{"-", "/", "1", "1", "5,,6", sh}, 126, "bad groups"},
		{[]string{"-", "/", "1", "99999999999", "-", sh}, 126, "bad gid"},
		{[]string{filepath.Join(root, "nope"), "/", "0", "0", "-", sh}, 126, "cannot chdir to the root"},
	} {
		if out, code := run(env, tc.args...); code != tc.code || !strings.Contains(out, tc.msg) {
			t.Errorf("enter %q: %q status %d, want %d with %q", tc.args, out, code, tc.code, tc.msg)
		}
	}
	if os.Geteuid() == 0 {
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{root, "/", "0", "0", "-", "/nonexistent/prog"}, 127, "no such program"},
			{[]string{root, "/", "0", "0", "-", "nosuchprog"}, 127, "no such program"},
			{[]string{root, "/nope", "0", "0", "-", "sh"}, 126, "cannot chdir to process.cwd"},
		} {
			if out, code := run(env, tc.args...); code != tc.code || !strings.Contains(out, tc.msg) {
				t.Errorf("enter %q: %q status %d, want %d with %q", tc.args, out, code, tc.code, tc.msg)
			}
		}
	}
}

// TestAgentScriptTooManyGroups: more groups than the switch takes is an
// error at create, not a failure inside the VM.
func TestAgentScriptTooManyGroups(t *testing.T) {
	a := AgentConfig{Args: []string{"sh"}, Groups: make([]uint32, maxGroups+1)}
	if _, _, err := AgentScript(&a); err == nil || !strings.Contains(err.Error(), "additionalGids") {
		t.Errorf("%d groups: %v, want a refusal", maxGroups+1, err)
	}
}
