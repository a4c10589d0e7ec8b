package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Dockerd is a private Docker daemon started by StartDockerd: its own
// data-root, exec-root (with its own managed containerd) and socket under
// one directory, no iptables or bridge changes to the host.
type Dockerd struct {
	dir, sock, logPath string
	cmd                *exec.Cmd
	done               chan struct{}
	waitErr            error
}

// dockerdReadyTimeout bounds how long StartDockerd waits for /_ping.
const dockerdReadyTimeout = 60 * time.Second

// StartDockerd starts a private dockerd under dir and waits until it
// answers. The storage driver is overlay2, or vfs where overlay2 fails.
// Stop it with Stop.
func StartDockerd(ctx context.Context, dir string) (*Dockerd, error) {
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		return nil, errors.New("dockerd is not installed (Debian: apt-get install docker.io)")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("a private dockerd needs root")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("dockerd: %w", err)
	}
	var errs []error
	for _, driver := range []string{"overlay2", "vfs"} {
		d, err := startDockerd(ctx, bin, dir, driver)
		if err == nil {
			return d, nil
		}
		errs = append(errs, fmt.Errorf("storage driver %s: %w", driver, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start private dockerd in %s: %w", dir, errors.Join(errs...))
}

func startDockerd(ctx context.Context, bin, dir, driver string) (*Dockerd, error) {
	d := &Dockerd{dir: dir, sock: filepath.Join(dir, "d.sock"), logPath: filepath.Join(dir, "dockerd.log"), done: make(chan struct{})}
	if len(d.sock) > 100 { // sun_path is 108 bytes
		return nil, fmt.Errorf("socket path %q is too long for a unix socket (keep the directory short)", d.sock)
	}
	if err := os.MkdirAll(filepath.Join(dir, "x"), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(d.sock)
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(bin,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "x"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://"+d.sock,
		"--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
		"--userland-proxy=false",
		"--storage-driver", driver,
		"--exec-opt", "native.cgroupdriver=cgroupfs",
	)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(dockerdReadyTimeout)
	for {
		if err := d.ping(ctx); err == nil {
			return d, nil
		}
		var why string
		select {
		case <-d.done:
			why = fmt.Sprintf("dockerd exited (%v)", d.waitErr)
		case <-ctx.Done():
			why = ctx.Err().Error()
		case <-time.After(100 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			why = fmt.Sprintf("no answer on %s within %s", d.sock, dockerdReadyTimeout)
		}
		_ = d.Stop()
		return nil, fmt.Errorf("%s; log tail: %s", why, d.logTail())
	}
}

func (d *Dockerd) ping(ctx context.Context) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/_ping: %s", resp.Status)
	}
	return nil
}

func (d *Dockerd) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, " | ")
}

// Host is the daemon's address for DOCKER_HOST or docker -H.
func (d *Dockerd) Host() string { return "unix://" + d.sock }

// Dir is the directory the daemon keeps everything in.
func (d *Dockerd) Dir() string { return d.dir }

// Stop ends the daemon (SIGTERM, SIGKILL after 20 s), kills what is left of
// its containerd and shims, unmounts what is left under its directory and
// removes the socket.
func (d *Dockerd) Stop() error {
	var errs []error
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			errs = append(errs, errors.New("dockerd did not stop on SIGTERM within 20 s; killed"))
		}
	}
	// containerd and its shims: anything whose command line names our dir.
	for _, pid := range DockerdProcesses(d.dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(d.dir)
	_ = os.Remove(d.sock)
	return errors.Join(errs...)
}

// DockerdProcesses lists the processes whose command line mentions dir
// (a private dockerd, its containerd and shims).
func DockerdProcesses(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}
