package libvirttest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHD is a running private OpenSSH server on 127.0.0.1 that lets root in
// with one generated key and forwards connections to unix sockets
// (AllowStreamLocalForwarding), which is how a qemu+ssh:// client reaches
// libvirtd's socket on the far side.
type SSHD struct {
	// Dir holds the server's config, keys, pid file and log.
	Dir string
	// Addr is host:port of the listener, Port the port alone.
	Addr, Port string
	// User is the account the client key logs in as ("root").
	User string
	// ClientKey is the private key (OpenSSH format) that authorized_keys
	// accepts; ClientKeyPub its public half.
	ClientKey    string
	ClientKeyPub ssh.PublicKey
	// KnownHosts is a known_hosts file holding the server's Ed25519 host
	// key for Addr ("[127.0.0.1]:port ssh-ed25519 ..."), and only that one,
	// as an OpenSSH client records it.
	KnownHosts string
	// HostKey is the server's public Ed25519 host key. The server also has
	// an ECDSA host key (HostKeyECDSA), which Go's SSH client prefers unless
	// told which algorithms known_hosts can vouch for.
	HostKey, HostKeyECDSA ssh.PublicKey
	// Log is the server's stderr (sshd -e, LogLevel VERBOSE).
	Log string

	cmd  *exec.Cmd
	done chan struct{}
}

// SSHDBinary returns the sshd to use, or why there is none.
func SSHDBinary() (string, error) {
	for _, p := range []string{"sshd", "/usr/sbin/sshd"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("sshd not found (Debian: apt-get install openssh-server; `make deps` does it)")
}

// StartSSHD starts a private sshd and registers its shutdown with
// t.Cleanup (on failure too). It skips the test, loudly, when sshd or
// unshare is missing or the test does not run as root.
//
// The server runs in a mount namespace of its own (util-linux unshare)
// where /run is a directory of the server's, so that the privilege
// separation directory /run/sshd exists without touching the host, and
// where /etc/shadow is a copy in which root's password field is "*" (a
// locked root account, "!..." in the host's shadow, would make sshd refuse
// even key logins without PAM). It reads no host configuration: its own
// sshd_config, a fresh Ed25519 host key, an authorized_keys with the one
// client key, PermitRootLogin prohibit-password, no passwords, no PAM.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	bin, unshare := requirePrivate(t, "sshd", SSHDBinary, "a private sshd that logs root in needs root")
	dir, err := os.MkdirTemp("/tmp", "sshd-")
	if err != nil {
		t.Fatalf("private sshd: %v", err)
	}
	s := &SSHD{Dir: dir, User: "root", Log: filepath.Join(dir, "sshd.log"), done: make(chan struct{})}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("private sshd log (%s), last lines:\n%s", s.Log, tailFile(s.Log, 30))
		}
		os.RemoveAll(dir)
	})
	if err := s.writeFiles(); err != nil {
		t.Fatalf("private sshd: %v", err)
	}
	script := strings.Join([]string{
		"set -e",
		"mount --bind " + q(filepath.Join(dir, "run")) + " /run",
		"mount --bind " + q(filepath.Join(dir, "shadow")) + " /etc/shadow",
		// sshd re-executes itself and so wants an absolute path.
		"exec " + q(bin) + " -D -e -f " + q(filepath.Join(dir, "sshd_config")),
	}, "\n")
	cmd, err := startPrivate(unshare, dir, script, s.Log, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}, s.done)
	if err != nil {
		t.Fatalf("private sshd: %v", err)
	}
	s.cmd = cmd
	if err := s.waitReady(15 * time.Second); err != nil {
		t.Fatalf("private sshd did not come up: %v\nlog:\n%s", err, tailFile(s.Log, 30))
	}
	return s
}

func (s *SSHD) writeFiles() error {
	dir := s.Dir
	for _, sub := range []string{"run/sshd"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	// sshd's privilege separation checks its chroot directory's modes.
	if err := os.Chmod(filepath.Join(dir, "run"), 0o755); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Port = strconv.Itoa(port)
	s.Addr = net.JoinHostPort("127.0.0.1", s.Port)

	hostPub, hostPEM, err := newEd25519("microvm test sshd host key")
	if err != nil {
		return err
	}
	ecPub, ecPEM, err := newECDSA("microvm test sshd host key")
	if err != nil {
		return err
	}
	s.HostKeyECDSA = ecPub
	clientPub, clientPEM, err := newEd25519("microvm test client")
	if err != nil {
		return err
	}
	s.HostKey, s.ClientKeyPub = hostPub, clientPub
	s.ClientKey = filepath.Join(dir, "client_ed25519")
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	shadow, err := unlockedShadow()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`# private sshd for microvm tests
ListenAddress %s
HostKey %s
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AllowTcpForwarding local
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
PrintMotd no
UseDNS no
LogLevel VERBOSE
`, s.Addr, filepath.Join(dir, "host_ecdsa"), filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "sshd.pid"), filepath.Join(dir, "authorized_keys"))
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"sshd_config", []byte(conf)},
		{"host_ed25519", hostPEM},
		{"host_ecdsa", ecPEM},
		{"client_ed25519", clientPEM},
		{"authorized_keys", ssh.MarshalAuthorizedKey(clientPub)},
		{"known_hosts", []byte(knownhosts.Line([]string{s.Addr}, hostPub) + "\n")},
		{"shadow", shadow},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// newEd25519 returns a fresh key's public half and its private half in
// OpenSSH's PEM format (what sshd's HostKey and ssh -i read).
func newEd25519(comment string) (ssh.PublicKey, []byte, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return sp, pem.EncodeToMemory(block), nil
}

func newECDSA(comment string) (ssh.PublicKey, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return sp, pem.EncodeToMemory(block), nil
}

// NewSSHKey writes a fresh Ed25519 private key (OpenSSH format) to path,
// e.g. one that a server does not authorize.
func NewSSHKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, pemBytes, err := newEd25519("microvm test key")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub
}

// unlockedShadow is /etc/shadow with root's password field "*" when it
// was locked ("!..."): no password works either way, but sshd without PAM
// refuses every login to a locked account.
func unlockedShadow() ([]byte, error) {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[0] == "root" && strings.HasPrefix(f[1], "!") {
			line = "root:*:" + f[2]
		}
		out.WriteString(line + "\n")
	}
	return []byte(out.String()), sc.Err()
}

// waitReady polls until the server sends its SSH banner.
func (s *SSHD) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("sshd exited early: %v", s.cmd.ProcessState)
		default:
		}
		last = banner(s.Addr)
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no SSH banner within %s: %v", limit, last)
}

func banner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("not an SSH banner: %q", line)
	}
	return nil
}

// Sessions returns the pids of the server's per-connection processes (its
// children): one lives for as long as a client stays connected.
func (s *SSHD) Sessions() []int {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	parent := s.cmd.Process.Pid
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut after ')'.
		st := string(b)
		i := strings.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(st[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(parent) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Stop ends the server's sessions (SIGKILL, reaped by the server), then
// stops the server (SIGTERM, then SIGKILL after 5 s). It is idempotent;
// StartSSHD registers it with t.Cleanup.
func (s *SSHD) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	// Connections outlive the listener: end them while it can still reap
	// them, so that none is left to init as a zombie.
	for _, pid := range s.Sessions() {
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(cmdline), "sshd") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for deadline := time.Now().Add(2 * time.Second); len(s.Sessions()) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
