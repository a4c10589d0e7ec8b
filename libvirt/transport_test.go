package libvirt_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/microvm/microvm/libvirt"
	"github.com/microvm/microvm/libvirt/libvirttest"
)

// dialFailure is a Dial that must fail: with an error check says is of
// the right kind (when set) and whose text contains text.
type dialFailure struct {
	name, uri string
	timeout   time.Duration
	check     func(error) bool
	text      string
}

// dialFailures runs each case as a subtest.
func dialFailures(t *testing.T, ctx context.Context, cases []dialFailure) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := libvirt.Dial(ctx, tc.uri, libvirt.Options{ConnectTimeout: tc.timeout})
			if err == nil {
				c.Close()
				t.Fatalf("Dial(%s) succeeded", tc.uri)
			}
			t.Logf("%v", err)
			if tc.check != nil && !tc.check(err) {
				t.Errorf("Dial(%s): %v: wrong kind of error", tc.uri, err)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Dial(%s): %v, want it to say %q", tc.uri, err, tc.text)
			}
		})
	}
}

// silentListener accepts connections, reads them and never answers: a port
// where something listens that is not (or no longer) the server.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// refusedAddr is a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// copyFiles makes a pkipath directory from files of other directories.
func copyFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// listOver dials uri, lists all domains and closes the connection.
func listOver(t *testing.T, uri string) []string {
	t.Helper()
	ctx := context.Background()
	c, err := libvirt.Dial(ctx, uri, libvirt.Options{ConnectTimeout: 10 * time.Second, CallTimeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("Dial(%s): %v", uri, err)
	}
	defer c.Close()
	ds, err := c.List(ctx, libvirt.ListOptions{All: true})
	if err != nil {
		t.Fatalf("List over %s: %v", uri, err)
	}
	return ourRows(ds)
}

// TestTLS dials a private libvirtd's TLS listener (auth "none", client
// certificates checked) with a throwaway CA, server and client certificate,
// and checks that every way of getting the certificates wrong is a clear
// error, not a hang.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pki := libvirttest.NewPKI(t, filepath.Join(dir, "pki"))
	other := libvirttest.NewPKI(t, filepath.Join(dir, "other"))
	d := libvirttest.Start(t, libvirttest.Options{TLS: pki})
	ctx := context.Background()

	// A domain defined through the unix socket shows over TLS: it is the
	// same daemon, not some other listener on the port.
	lc := dial(t, d.URI("test:///default"))
	if _, err := lc.Define(ctx, testDomainXML("over-tls"), libvirt.DefineOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := lc.List(ctx, libvirt.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	want := ourRows(ds)
	_, port, _ := net.SplitHostPort(d.TLSAddr)
	good := "?pkipath=" + pki.ClientDir

	// The right CA but a client certificate of another CA; our client
	// certificate but another CA; only the CA, no client certificate.
	foreignClient := copyFiles(t, filepath.Join(dir, "foreign-client"), map[string]string{
		"cacert.pem":     filepath.Join(pki.ClientDir, "cacert.pem"),
		"clientcert.pem": filepath.Join(other.ClientDir, "clientcert.pem"),
		"clientkey.pem":  filepath.Join(other.ClientDir, "clientkey.pem"),
	})
	wrongCA := copyFiles(t, filepath.Join(dir, "wrong-ca"), map[string]string{
		"cacert.pem":     filepath.Join(other.ClientDir, "cacert.pem"),
		"clientcert.pem": filepath.Join(pki.ClientDir, "clientcert.pem"),
		"clientkey.pem":  filepath.Join(pki.ClientDir, "clientkey.pem"),
	})
	caOnly := copyFiles(t, filepath.Join(dir, "ca-only"), map[string]string{
		"cacert.pem": filepath.Join(pki.ClientDir, "cacert.pem"),
	})

	t.Run("list", func(t *testing.T) {
		for _, tc := range []struct {
			name, uri string
			want      []string // nil: any list
		}{
			{"test driver", d.TLSURI("test", "/default") + good, want},
			{"by name localhost", "test+tls://localhost:" + port + "/default" + good, want},
			{"qemu driver", d.TLSURI("qemu", "/system") + good, nil},
			{"no_verify with another CA", d.TLSURI("test", "/default") + "?pkipath=" + wrongCA + "&no_verify=1", want},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := listOver(t, tc.uri)
				if tc.want != nil {
					sameRows(t, tc.uri, got, tc.want)
				}
			})
		}
	})

	t.Run("failures", func(t *testing.T) {
		silent := silentListener(t)
		dialFailures(t, ctx, []dialFailure{
			{"wrong CA", d.TLSURI("test", "/default") + "?pkipath=" + wrongCA, 0,
				func(err error) bool { var ua x509.UnknownAuthorityError; return errors.As(err, &ua) },
				"signed by unknown authority"},
			{"client certificate of another CA", d.TLSURI("test", "/default") + "?pkipath=" + foreignClient, 0,
				nil, "rejected our client certificate"},
			{"no client certificate", d.TLSURI("test", "/default") + "?pkipath=" + caOnly, 0,
				nil, "no client certificate"},
			{"no CA at all", d.TLSURI("test", "/default") + "?pkipath=" + filepath.Join(dir, "nonexistent"), 0,
				nil, "no CA certificate found"},
			{"nothing listening", "test+tls://" + refusedAddr(t) + "/default" + good, 0,
				nil, "connection refused"},
			{"silent server", "test+tls://" + silent + "/default" + good, 500 * time.Millisecond,
				func(err error) bool { return errors.Is(err, libvirt.ErrNoAnswer) }, ""},
		})
	})

	// After all that the daemon still serves.
	sameRows(t, "after the failures", listOver(t, d.TLSURI("test", "/default")+good), want)
}

// TestSSH dials a private libvirtd's unix socket through a private sshd
// (root with a generated key, known_hosts with the server's generated host
// key), and checks the ways SSH can go wrong.
func TestSSH(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "") // no agent of the user's
	d := libvirttest.Start(t, libvirttest.Options{})
	s := libvirttest.StartSSHD(t)
	ctx := context.Background()
	dir := t.TempDir()

	lc := dial(t, d.URI("test:///default"))
	if _, err := lc.Define(ctx, testDomainXML("over-ssh"), libvirt.DefineOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, err := lc.List(ctx, libvirt.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	want := ourRows(ds)

	// uri builds driver+transport://root@127.0.0.1:port/path with the
	// private daemon's socket, then the given parameters (the client key
	// and known_hosts unless overridden).
	uri := func(scheme, path string, params ...string) string {
		p := map[string]string{"socket": d.Socket, "keyfile": s.ClientKey, "known_hosts": s.KnownHosts}
		var order []string
		for _, kv := range params {
			k, v, _ := strings.Cut(kv, "=")
			if _, ok := p[k]; !ok {
				order = append(order, k)
			}
			p[k] = v
		}
		q := "socket=" + p["socket"] + "&keyfile=" + p["keyfile"] + "&known_hosts=" + p["known_hosts"]
		for _, k := range order {
			q += "&" + k + "=" + p[k]
		}
		return scheme + "://" + s.User + "@" + s.Addr + path + "?" + q
	}

	wrongKey := filepath.Join(dir, "wrong_ed25519")
	libvirttest.NewSSHKey(t, wrongKey)
	emptyKnown := filepath.Join(dir, "empty_known_hosts")
	if err := os.WriteFile(emptyKnown, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	changedKnown := filepath.Join(dir, "changed_known_hosts")
	otherHostKey := libvirttest.NewSSHKey(t, filepath.Join(dir, "other_host_key"))
	if err := os.WriteFile(changedKnown, []byte(knownhosts.Line([]string{s.Addr}, otherHostKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	autoKnown := filepath.Join(dir, "auto", "known_hosts")

	t.Run("list", func(t *testing.T) {
		for _, tc := range []struct {
			name, uri string
			want      []string // nil: any list
		}{
			{"test driver", uri("test+ssh", "/default"), want},
			{"qemu driver", uri("qemu+ssh", "/system"), nil},
			{"libssh", uri("test+libssh", "/default"), want},
			{"libssh2", uri("test+libssh2", "/default"), want},
			{"no_verify", uri("test+ssh", "/default", "known_hosts="+emptyKnown, "no_verify=1"), want},
			{"known_hosts_verify=ignore", uri("test+libssh", "/default", "known_hosts="+emptyKnown, "known_hosts_verify=ignore"), want},
			// auto adds the unknown host (creating the file), then normal
			// finds it there.
			{"known_hosts_verify=auto", uri("test+libssh", "/default", "known_hosts="+autoKnown, "known_hosts_verify=auto"), want},
			{"known_hosts added by auto", uri("test+libssh", "/default", "known_hosts="+autoKnown), want},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got := listOver(t, tc.uri)
				if tc.want != nil {
					sameRows(t, tc.uri, got, tc.want)
				}
			})
		}
	})

	t.Run("closing ends the ssh session", func(t *testing.T) {
		c := dial(t, uri("test+ssh", "/default"))
		if _, err := c.List(ctx, libvirt.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		if len(s.Sessions()) == 0 {
			t.Fatal("no sshd session process while connected")
		}
		c.Close()
		deadline := time.Now().Add(10 * time.Second)
		for len(s.Sessions()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := len(s.Sessions()); n > 0 {
			t.Errorf("%d sshd session(s) still open 10 s after Close: the SSH connection leaked", n)
		}
	})

	t.Run("failures", func(t *testing.T) {
		silent := silentListener(t)
		dialFailures(t, ctx, []dialFailure{
			{"key not authorized", uri("test+ssh", "/default", "keyfile="+wrongKey), 0,
				nil, "unable to authenticate"},
			{"missing key file", uri("test+ssh", "/default", "keyfile="+filepath.Join(dir, "nonexistent_key")), 0,
				nil, "nonexistent_key"},
			{"unknown host key", uri("test+ssh", "/default", "known_hosts="+emptyKnown), 0,
				nil, "unknown"},
			{"changed host key", uri("test+ssh", "/default", "known_hosts="+changedKnown), 0,
				nil, "changed"},
			{"no known_hosts file", uri("test+ssh", "/default", "known_hosts="+filepath.Join(dir, "nonexistent_known_hosts")), 0,
				nil, "nonexistent_known_hosts"},
			{"no daemon behind the socket", uri("test+ssh", "/default", "socket=/nonexistent/libvirt-sock"), 0,
				nil, "/nonexistent/libvirt-sock"},
			{"nothing listening", "test+ssh://root@" + refusedAddr(t) + "/default?no_verify=1&keyfile=" + s.ClientKey, 0,
				nil, "connection refused"},
			{"silent server", "test+ssh://root@" + silent + "/default?no_verify=1&keyfile=" + s.ClientKey, 500 * time.Millisecond,
				func(err error) bool { return errors.Is(err, libvirt.ErrNoAnswer) }, ""},
		})
		// Failed dials leave no session behind either.
		deadline := time.Now().Add(10 * time.Second)
		for len(s.Sessions()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := len(s.Sessions()); n > 0 {
			t.Errorf("%d sshd session(s) still open after the failed dials", n)
		}
	})
}

// TestTransportParameters: parameters of the tls and ssh transports that
// cannot be used are the caller's error, found before anything is dialled.
func TestTransportParameters(t *testing.T) {
	for _, uri := range []string{
		"qemu+tls://127.0.0.1:1/system?no_verify=yes",
		"qemu+ssh://root@127.0.0.1:1/system?no_verify=yes",
		"qemu+libssh://root@127.0.0.1:1/system?known_hosts_verify=maybe",
		"qemu+libssh2://root@127.0.0.1:1/system?sshauth=privkey,telepathy",
	} {
		_, err := libvirt.Dial(context.Background(), uri, libvirt.Options{})
		if !errors.Is(err, libvirt.ErrBadURI) {
			t.Errorf("Dial(%s): %v, want ErrBadURI", uri, err)
		}
	}
}
