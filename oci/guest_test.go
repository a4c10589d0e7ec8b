package oci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentScriptUser: a process.user other than 0:0 runs the workload
// through the uid/gid switch, with the supplementary groups; 0:0 does not.
func TestAgentScriptUser(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    AgentConfig
		want string // "" = no asuser
	}{
		{"root", AgentConfig{Args: []string{"sh"}}, ""},
		{"uid and gid", AgentConfig{Args: []string{"sh"}, UID: 1000, GID: 1001}, GuestAsUser + " 1000 1001 - $B env -i 'sh'"},
		{"groups", AgentConfig{Args: []string{"sh"}, Groups: []uint32{5, 6}}, GuestAsUser + " 0 0 5,6 $B env -i 'sh'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, err := AgentScript(&tc.a)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			if tc.want == "" {
				if strings.Contains(s, GuestAsUser) {
					t.Errorf("0:0 goes through %s:\n%s", GuestAsUser, s)
				}
				return
			}
			if !strings.Contains(s, tc.want) {
				t.Errorf("script lacks %q:\n%s", tc.want, s)
			}
		})
	}
}

// TestGuestImageHoldsAsUser: the guest image carries the switch, executable.
func TestGuestImageHoldsAsUser(t *testing.T) {
	rfs := t.TempDir()
	if err := os.WriteFile(filepath.Join(rfs, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteGuestImage(&buf, rfs, []byte("busybox"), []byte("#!init")); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(GuestAsUser[1:]+"\x00")) || !bytes.Contains(buf.Bytes(), asUser) {
		t.Errorf("the guest image has no %s", GuestAsUser)
	}
}

// TestAsUser runs the embedded switch on this host (x86-64 Linux, as the
// guest): as root it must end up as 65534:65534 with group 5; otherwise
// setgroups is refused and it must say so with status 126. Bad arguments
// give 126, a program that is not there 127.
func TestAsUser(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "asuser")
	if err := os.WriteFile(bin, asUser, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("SKIP: no sh")
	}
	out, code := run("65534", "65534", "5", sh, "-c", "echo $(id -u) $(id -g) $(id -G)")
	if os.Geteuid() == 0 {
		if code != 0 || strings.TrimSpace(out) != "65534 65534 65534 5" {
			t.Errorf("as root: %q status %d, want \"65534 65534 65534 5\"", out, code)
		}
	} else if code != 126 || !strings.Contains(out, "setgroups failed") {
		t.Errorf("as uid %d: %q status %d, want setgroups refused (126)", os.Geteuid(), out, code)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"1", "1"}, 126, "usage"},
		{[]string{"x", "1", "-", sh}, 126, "bad uid"},
		{[]string{"1", "1", "5,,6", sh}, 126, "bad groups"},
		{[]string{"1", "99999999999", "-", sh}, 126, "bad gid"},
	} {
		if out, code := run(tc.args...); code != tc.code || !strings.Contains(out, tc.msg) {
			t.Errorf("asuser %q: %q status %d, want %d with %q", tc.args, out, code, tc.code, tc.msg)
		}
	}
	if os.Geteuid() == 0 {
		if out, code := run("1", "1", "-", "/nonexistent/prog"); code != 127 || !strings.Contains(out, "cannot exec") {
			t.Errorf("missing program: %q status %d, want 127", out, code)
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
