// Package libvirttest starts private libvirt daemons for tests (on a unix
// socket, loopback TCP or loopback TLS with a throwaway PKI from NewPKI), a
// private OpenSSH server in front of them (StartSSHD), and builds the small
// guest initrd the boot tests use.
//
// A private daemon is the real libvirtd from the host's packages, started as
// root in a mount namespace of its own (util-linux unshare) in which /run,
// /var and /etc/libvirt are bind mounts of directories under a temporary
// directory. It has its own libvirtd.conf and qemu.conf, its own state,
// cache, logs and pid files, and its sockets in the temporary directory,
// reachable from outside the namespace; the host's /etc/libvirt, /run/libvirt
// and /var/lib/libvirt are never read or written. qemu:///system on its
// socket is a full system-mode QEMU driver (QEMU runs as root, no security
// driver, no cgroups).
//
// libvirtd resolves its built-in default QEMU user (libvirt-qemu on Debian)
// before it reads qemu.conf, so the namespace also gets a copy of
// /etc/passwd and /etc/group with that user added.
package libvirttest

import (
	"bytes"
	"context"
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

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// Options tune a private daemon.
type Options struct {
	// TCP makes the daemon listen on 127.0.0.1 (a free port) with auth
	// "none", standing in for a remote host.
	TCP bool
	// TLS makes the daemon listen for TLS on 127.0.0.1 (a free port) with
	// auth "none" and these certificates (NewPKI); clients must present a
	// certificate of the same CA.
	TLS *PKI
	// CapsCache is a directory kept between runs for libvirtd's cache of
	// QEMU capabilities (probing QEMU takes seconds on a fresh daemon).
	// When empty, $MICROVM_CACHE/libvirt-qemu-capabilities is used if
	// MICROVM_CACHE is set; otherwise each daemon probes afresh.
	CapsCache string
}

// Daemon is a running private libvirtd.
type Daemon struct {
	// Dir holds everything of the daemon: config, sockets, state, logs.
	Dir string
	// Socket is the read-write unix socket.
	Socket string
	// TCPAddr is host:port of the TCP listener (Options.TCP), else empty.
	TCPAddr string
	// TLSAddr is host:port of the TLS listener (Options.TLS), else empty.
	TLSAddr string
	// Log is the daemon's stderr.
	Log string

	cmd  *exec.Cmd
	done chan struct{}
}

// URI returns uri (e.g. "qemu:///system" or "test:///default") pointed at
// the daemon's unix socket with ?socket=.
func (d *Daemon) URI(uri string) string {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + "socket=" + d.Socket
}

// VirshURI returns a URI virsh sends to this daemon. virsh runs the test
// driver in-process for test:///, so that one gets an explicit +unix.
func (d *Daemon) VirshURI(uri string) string {
	if strings.HasPrefix(uri, "test:") {
		uri = "test+unix:" + strings.TrimPrefix(uri, "test:")
	}
	return d.URI(uri)
}

// TCPURI returns driver+tcp://127.0.0.1:port/path for a TCP daemon, e.g.
// TCPURI("qemu", "/system").
func (d *Daemon) TCPURI(driver, path string) string {
	return driver + "+tcp://" + d.TCPAddr + path
}

// TLSURI returns driver+tls://127.0.0.1:port/path for a TLS daemon, e.g.
// TLSURI("qemu", "/system"); the client's certificates still have to be
// named (?pkipath=PKI.ClientDir).
func (d *Daemon) TLSURI(driver, path string) string {
	return driver + "+tls://" + d.TLSAddr + path
}

// Binary returns the libvirtd to use, or why there is none.
func Binary() (string, error) {
	for _, p := range []string{"libvirtd", "/usr/sbin/libvirtd"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("libvirtd not found (Debian: apt-get install libvirt-daemon libvirt-daemon-driver-qemu; `make deps` does it)")
}

// Start starts a private daemon and registers its shutdown with t.Cleanup:
// running domains are destroyed, the daemon is stopped, and QEMU processes
// it left are killed. It skips the test, loudly, when libvirtd or unshare
// is missing or the test does not run as root.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	bin, unshare := requirePrivate(t, "libvirtd", Binary, "a private system-mode libvirtd needs root for its mount namespace")
	// Unix socket paths are limited to 108 bytes: keep the directory short
	// and under /tmp (not /var or /run, which the namespace replaces).
	dir, err := os.MkdirTemp("/tmp", "lvd-")
	if err != nil {
		t.Fatalf("private libvirtd: %v", err)
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(dir, "sock", "libvirt-sock"), Log: filepath.Join(dir, "libvirtd.log"), done: make(chan struct{})}
	t.Cleanup(func() {
		d.Stop(t)
		if t.Failed() {
			t.Logf("private libvirtd log (%s), last lines:\n%s", d.Log, tailFile(d.Log, 40))
		}
		os.RemoveAll(dir)
	})
	if err := d.writeFiles(opts); err != nil {
		t.Fatalf("private libvirtd: %v", err)
	}
	args := []string{bin, "-f", "/etc/libvirt/libvirtd.conf", "-p", "/run/libvirtd.pid"}
	if opts.TCP || opts.TLS != nil {
		args = append(args, "--listen")
	}
	capsMount := ":"
	if cache := opts.CapsCache; cache != "" || os.Getenv("MICROVM_CACHE") != "" {
		if cache == "" {
			cache = filepath.Join(os.Getenv("MICROVM_CACHE"), "libvirt-qemu-capabilities")
		}
		if err := os.MkdirAll(cache, 0o755); err == nil {
			capsMount = "mount --bind " + q(cache) + " /var/cache/libvirt/qemu/capabilities"
		}
	}
	// unshare runs sh in the new mount namespace (no fork: same pid), sh
	// makes the private mounts and execs libvirtd (same pid again).
	script := strings.Join([]string{
		"set -e",
		"mount --bind " + q(filepath.Join(dir, "run")) + " /run",
		"mount --bind " + q(filepath.Join(dir, "var")) + " /var",
		"mount --bind " + q(filepath.Join(dir, "etc")) + " /etc/libvirt",
		"mount --bind " + q(filepath.Join(dir, "passwd")) + " /etc/passwd",
		capsMount,
		"mount --bind " + q(filepath.Join(dir, "group")) + " /etc/group",
		"exec " + strings.Join(args, " "),
	}, "\n")
	cmd, err := startPrivate(unshare, dir, script, d.Log, append(os.Environ(), "LC_ALL=C"), d.done)
	if err != nil {
		t.Fatalf("private libvirtd: %v", err)
	}
	d.cmd = cmd
	if err := d.waitReady(30 * time.Second); err != nil {
		t.Fatalf("private libvirtd did not come up: %v\nlog:\n%s", err, tailFile(d.Log, 40))
	}
	return d
}

// requirePrivate skips t, loudly, unless a private daemon called name can
// run here: its binary (found by find), util-linux unshare and root (why
// says what for). It returns the binary's and unshare's paths.
func requirePrivate(t testing.TB, name string, find func() (string, error), why string) (bin, unshare string) {
	t.Helper()
	bin, err := find()
	if err != nil {
		t.Skipf("SKIP (needs %s): %v", name, err)
	}
	unshare, err = exec.LookPath("unshare")
	if err != nil {
		t.Skipf("SKIP (needs util-linux unshare for a private %s): %v", name, err)
	}
	if os.Geteuid() != 0 {
		t.Skipf("SKIP (%s; uid %d)", why, os.Geteuid())
	}
	return bin, unshare
}

// startPrivate starts script — the daemon's private bind mounts, then exec
// of the daemon — under sh in a new private mount namespace (unshare), in
// dir with env, its output in logPath, in its own process group (so that a
// signal to the test's group does not reach it before the cleanup does).
// done is closed once it has exited.
func startPrivate(unshare, dir, script, logPath string, env []string, done chan struct{}) (*exec.Cmd, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return cmd, nil
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (d *Daemon) writeFiles(opts Options) error {
	dir := d.Dir
	for _, sub := range []string{"sock", "run/lock", "etc", "var/lib/libvirt", "var/cache/libvirt/qemu/capabilities", "var/log/libvirt", "var/tmp", "var/lib/dbus"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink("/run", filepath.Join(dir, "var", "run")); err != nil {
		return err
	}
	if err := os.Symlink("/run/lock", filepath.Join(dir, "var", "lock")); err != nil {
		return err
	}
	conf := fmt.Sprintf(`# private libvirtd for microvm tests
unix_sock_dir = %q
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 0
mdns_adv = 0
log_outputs = "3:stderr"
keepalive_interval = 5
keepalive_count = 5
`, filepath.Join(dir, "sock"))
	if opts.TCP {
		port, err := freePort()
		if err != nil {
			return err
		}
		d.TCPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf = strings.Replace(conf, "listen_tcp = 0", fmt.Sprintf("listen_tcp = 1\ntcp_port = \"%d\"\nauth_tcp = \"none\"", port), 1)
	}
	if p := opts.TLS; p != nil {
		port, err := freePort()
		if err != nil {
			return err
		}
		d.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf = strings.Replace(conf, "listen_tls = 0", fmt.Sprintf("listen_tls = 1\ntls_port = \"%d\"\nauth_tls = \"none\"\nca_file = %q\ncert_file = %q\nkey_file = %q",
			port, p.CACert, p.ServerCert, p.ServerKey), 1)
	}
	if opts.TCP || opts.TLS != nil {
		conf += "listen_addr = \"127.0.0.1\"\n"
	}
	qemu := `# QEMU driver of the private libvirtd: runs QEMU as root, confines nothing
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
`
	files := map[string]string{
		"etc/libvirtd.conf": conf,
		"etc/qemu.conf":     qemu,
		"etc/libvirt.conf":  "",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	// libvirtd looks up its compiled-in QEMU user before reading qemu.conf.
	for _, f := range []struct{ src, dst, add string }{
		{"/etc/passwd", "passwd", "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n"},
		{"/etc/group", "group", "libvirt-qemu:x:64055:\nkvm:x:64056:\nlibvirt:x:64057:\n"},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimSpace(f.add), "\n") {
			name := strings.SplitN(line, ":", 2)[0] + ":"
			if !bytes.Contains(append([]byte("\n"), b...), []byte("\n"+name)) {
				if len(b) > 0 && b[len(b)-1] != '\n' {
					b = append(b, '\n')
				}
				b = append(b, line+"\n"...)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f.dst), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls until the daemon answers on its socket (and TCP port).
func (d *Daemon) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return fmt.Errorf("libvirtd exited early: %v", d.cmd.ProcessState)
		default:
		}
		last = ping(dialers.NewLocal(dialers.WithSocket(d.Socket), dialers.WithLocalTimeout(time.Second)))
		if last == nil && d.TCPAddr != "" {
			host, port, _ := net.SplitHostPort(d.TCPAddr)
			last = ping(dialers.NewRemote(host, dialers.UsePort(port), dialers.WithRemoteTimeout(time.Second)))
		}
		if last == nil && d.TLSAddr != "" {
			// All listeners are bound before the daemon serves its unix
			// socket; a TCP connect shows the TLS port is open too.
			var c net.Conn
			if c, last = net.DialTimeout("tcp", d.TLSAddr, time.Second); last == nil {
				c.Close()
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no answer within %s: %v", limit, last)
}

// ping opens and closes a test:///default connection.
func ping(dialer interface {
	Dial() (net.Conn, error)
}) error {
	l := golibvirt.NewWithDialer(dialer)
	done := make(chan error, 1)
	go func() { done <- l.ConnectToURI(golibvirt.TestDefault) }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-time.After(3 * time.Second):
		return fmt.Errorf("handshake timed out")
	}
	return l.Disconnect()
}

// Stop destroys the daemon's running QEMU domains, stops the daemon
// (SIGTERM, then SIGKILL after 10 s) and kills any QEMU process it left
// behind. It is idempotent; Start registers it with t.Cleanup.
func (d *Daemon) Stop(t testing.TB) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.done:
	default:
		d.destroyAll(t)
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			t.Logf("private libvirtd (pid %d) ignored SIGTERM; killing it", d.cmd.Process.Pid)
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	d.killLeftovers(t)
}

// destroyAll destroys the active qemu:///system domains of the daemon.
func (d *Daemon) destroyAll(t testing.TB) {
	l := golibvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(d.Socket), dialers.WithLocalTimeout(2*time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := l.ConnectToURI(golibvirt.QEMUSystem); err != nil {
			return
		}
		doms, _, err := l.ConnectListAllDomains(1, golibvirt.ConnectListDomainsActive)
		if err == nil {
			for _, dom := range doms {
				if err := l.DomainDestroy(dom); err != nil {
					t.Logf("private libvirtd: destroy %s: %v", dom.Name, err)
				}
			}
		}
		_ = l.Disconnect()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Logf("private libvirtd: destroying domains timed out")
	}
}

// killLeftovers kills QEMU processes named in the daemon's private pid
// files (only processes whose command line is QEMU's).
func (d *Daemon) killLeftovers(t testing.TB) {
	pids, _ := filepath.Glob(filepath.Join(d.Dir, "run", "libvirt", "qemu", "*.pid"))
	for _, pf := range pids {
		b, err := os.ReadFile(pf)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte("qemu")) {
			continue
		}
		t.Logf("private libvirtd: killing leftover QEMU pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Kill stops the daemon abruptly (SIGKILL), as a crash would; Stop still
// cleans up afterwards.
func (d *Daemon) Kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
