package libvirt

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in        string
		driver    string
		transport string
		host      string
		port      string
		path      string
		remote    string
		local     bool
		errPart   string // non-empty: must fail with ErrBadURI and this text
	}{
		{in: "qemu:///system", driver: "qemu", transport: "unix", path: "/system", remote: "qemu:///system", local: true},
		{in: "qemu:///session", driver: "qemu", transport: "unix", path: "/session", remote: "qemu:///session", local: true},
		{in: "test:///default", driver: "test", transport: "unix", path: "/default", remote: "test:///default", local: true},
		{in: "test+unix:///default?socket=/tmp/s", driver: "test", transport: "unix", path: "/default", remote: "test:///default", local: true},
		{in: "qemu+tcp://host.example/system", driver: "qemu", transport: "tcp", host: "host.example", path: "/system", remote: "qemu:///system"},
		{in: "qemu+tcp://10.0.0.1:16600/system", driver: "qemu", transport: "tcp", host: "10.0.0.1", port: "16600", path: "/system", remote: "qemu:///system"},
		{in: "qemu+tcp://[::1]:16509/system", driver: "qemu", transport: "tcp", host: "::1", port: "16509", path: "/system", remote: "qemu:///system"},
		{in: "qemu+tls://h/system?pkipath=/pki", driver: "qemu", transport: "tls", host: "h", path: "/system", remote: "qemu:///system"},
		{in: "qemu://h/system", driver: "qemu", transport: "tls", host: "h", path: "/system", remote: "qemu:///system"},
		{in: "qemu+ssh://root@h/system", driver: "qemu", transport: "ssh", host: "h", path: "/system", remote: "qemu:///system"},
		{in: "qemu+libssh2://u@h:2222/system?known_hosts_verify=auto", driver: "qemu", transport: "libssh2", host: "h", port: "2222", path: "/system", remote: "qemu:///system"},
		{in: "QEMU+TCP://h/system", driver: "qemu", transport: "tcp", host: "h", path: "/system", remote: "qemu:///system"},
		{in: "qemu+tcp://h/system?name=qemu:///session", driver: "qemu", transport: "tcp", host: "h", path: "/system", remote: "qemu:///session"},
		{in: "test:///tmp/node.xml", driver: "test", transport: "unix", path: "/tmp/node.xml", remote: "test:///tmp/node.xml", local: true},

		{in: "", errPart: "empty URI"},
		{in: "   ", errPart: "empty URI"},
		{in: "foo:///system", errPart: `unknown driver "foo"`},
		{in: "esx://vcenter/", errPart: `unknown driver "esx"`},
		{in: "qemu+carrier-pigeon://h/system", errPart: `unknown transport "carrier-pigeon"`},
		{in: "qemu+ext:///system", errPart: `transport "ext" is not supported`},
		{in: "/var/run/libvirt/libvirt-sock", errPart: "no scheme"},
		{in: "qemu", errPart: "no scheme"},
		{in: "qemu:system", errPart: "expected driver[+transport]"},
		{in: "qemu+tcp:///system", errPart: "needs a host"},
		{in: "qemu+unix://h/system", errPart: "takes no host"},
		{in: "qemu+tcp://h:99999/system", errPart: "port"},
		{in: "qemu+tcp://h:0/system", errPart: "port"},
		{in: "qemu+tcp://h:http/system", errPart: "invalid port"},
		{in: "qemu:///system#frag", errPart: "fragments"},
		{in: "qemu:///system?socket=relative/sock", errPart: "absolute"},
		{in: "qemu:///system?mode=direct", errPart: "mode=direct"},
		{in: "qemu:///sys tem", errPart: "white space"},
		{in: "qemu://%zz/system", errPart: "invalid URL escape"},
		{in: "://nothing", errPart: "missing protocol scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseURI(tc.in)
			if tc.errPart != "" {
				if err == nil {
					t.Fatalf("ParseURI(%q) = %+v, want an error containing %q", tc.in, u, tc.errPart)
				}
				if !errors.Is(err, ErrBadURI) {
					t.Errorf("error %v does not wrap ErrBadURI", err)
				}
				if !strings.Contains(err.Error(), tc.errPart) {
					t.Errorf("error %q does not contain %q", err, tc.errPart)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tc.in, err)
			}
			got := []string{u.Driver, u.Transport, u.Host, u.Port, u.Path, u.RemoteName()}
			want := []string{tc.driver, tc.transport, tc.host, tc.port, tc.path, tc.remote}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("driver/transport/host/port/path/remote = %q, want %q", got, want)
					break
				}
			}
			if u.Local() != tc.local {
				t.Errorf("Local() = %v, want %v", u.Local(), tc.local)
			}
		})
	}
}

func TestURIRedactsPassword(t *testing.T) {
	u, err := ParseURI("qemu+ssh://bob:hunter2@h/system")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(u.String(), "hunter2") {
		t.Errorf("String() = %q shows the password", u.String())
	}
	_, err = ParseURI("nope+ssh://bob:hunter2@h/system")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %v shows the password", err)
	}
}

func TestResolveURI(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvDefaultURI {
				return v
			}
			return ""
		}
	}
	tests := []struct{ flag, env, want string }{
		{"", "", DefaultURI},
		{"", "test:///default", "test:///default"},
		{"", "  qemu+tcp://h/system  ", "qemu+tcp://h/system"},
		{"qemu:///session", "test:///default", "qemu:///session"},
	}
	for _, tc := range tests {
		if got := ResolveURI(tc.flag, env(tc.env)); got != tc.want {
			t.Errorf("ResolveURI(%q) with %s=%q = %q, want %q", tc.flag, EnvDefaultURI, tc.env, got, tc.want)
		}
	}
	t.Setenv(EnvDefaultURI, "test:///default")
	if got := ResolveURI("", nil); got != "test:///default" {
		t.Errorf("ResolveURI with nil getenv = %q, want the environment's", got)
	}
}

func TestSocketPath(t *testing.T) {
	rt := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", rt)
	tests := []struct{ uri, want string }{
		{"qemu:///system?socket=/x/y", "/x/y"},
		{"test+unix:///default?socket=/s", "/s"},
		{"qemu:///session", filepath.Join(rt, "libvirt", "libvirt-sock")},
	}
	for _, tc := range tests {
		u, err := ParseURI(tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.SocketPath(); got != tc.want {
			t.Errorf("SocketPath(%s) = %q, want %q", tc.uri, got, tc.want)
		}
	}
	// A modular daemon's socket wins over libvirtd's unless mode=legacy.
	if err := os.MkdirAll(filepath.Join(rt, "libvirt"), 0o755); err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(rt, "libvirt", "virtqemud-sock")
	if err := os.WriteFile(mod, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := ParseURI("qemu:///session")
	if got := u.SocketPath(); got != mod {
		t.Errorf("with virtqemud-sock present: %q, want %q", got, mod)
	}
	u, _ = ParseURI("qemu:///session?mode=legacy")
	if got := u.SocketPath(); got != filepath.Join(rt, "libvirt", "libvirt-sock") {
		t.Errorf("mode=legacy: %q, want libvirt-sock", got)
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"qemu:///system", "test:///default", "qemu+tcp://h:16509/system",
		"qemu+ssh://u:p@h/system?keyfile=/k", "qemu+tls://[::1]/system?no_verify=1",
		"qemu:///system?socket=/run/x", "%", "qemu+://", "a+b+c://d/e",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			if !errors.Is(err, ErrBadURI) {
				t.Fatalf("ParseURI(%q) error %v does not wrap ErrBadURI", s, err)
			}
			return
		}
		if !drivers[u.Driver] || !transports[u.Transport] {
			t.Fatalf("ParseURI(%q) accepted driver %q transport %q", s, u.Driver, u.Transport)
		}
		if u.Local() == (u.Host != "") {
			t.Fatalf("ParseURI(%q): local=%v with host %q", s, u.Local(), u.Host)
		}
		if !strings.HasPrefix(u.RemoteName(), u.Driver+"://") && u.Query.Get("name") == "" {
			t.Fatalf("ParseURI(%q): remote name %q", s, u.RemoteName())
		}
		_ = u.String()
		if u.Local() {
			_ = u.SocketPath()
		}
	})
}
