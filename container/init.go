package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Init must be the first thing main (and TestMain) calls in any binary that
// serves as a container helper. In an ordinary process it returns at once.
// In a process that Run started as a container's init it sets the container
// up, execs the workload and never returns; if setup fails it reports the
// reason to the launcher and exits with ExitLauncher, ExitCannotInvoke or
// ExitNotFound.
func Init() {
	v, ok := os.LookupEnv(initEnv)
	if !ok {
		return
	}
	fds := strings.Split(v, ",")
	if len(fds) != 2 {
		fmt.Fprintf(os.Stderr, "microvm container init: bad %s=%q\n", initEnv, v)
		os.Exit(ExitLauncher)
	}
	cfgFD, err1 := strconv.Atoi(fds[0])
	errFD, err2 := strconv.Atoi(fds[1])
	if err1 != nil || err2 != nil || cfgFD < 3 || errFD < 3 {
		fmt.Fprintf(os.Stderr, "microvm container init: bad %s=%q\n", initEnv, v)
		os.Exit(ExitLauncher)
	}
	code, err := initMain(cfgFD, errFD)
	// Only failures get here: a successful exec never returns.
	msg, _ := json.Marshal(childError{Code: code, Msg: err.Error()})
	_, _ = unix.Write(errFD, msg)
	os.Exit(code)
}

// initMain sets the container up and execs the workload.
func initMain(cfgFD, errFD int) (int, error) {
	if _, err := unix.FcntlInt(uintptr(errFD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return ExitLauncher, fmt.Errorf("container init: %w", err)
	}
	data, err := readAllFD(cfgFD)
	unix.Close(cfgFD)
	if err != nil {
		return ExitLauncher, fmt.Errorf("container init: read config: %w", err)
	}
	var c childConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return ExitLauncher, fmt.Errorf("container init: config: %w", err)
	}
	if len(c.Args) == 0 {
		return ExitLauncher, errors.New("container init: no command")
	}
	if err := setupRoot(&c); err != nil {
		return ExitLauncher, fmt.Errorf("container init: %w", err)
	}
	if c.Network {
		if err := loopbackUp(); err != nil {
			return ExitLauncher, fmt.Errorf("container init: %w", err)
		}
	}
	if err := unix.Chdir(c.Dir); err != nil {
		return ExitLauncher, fmt.Errorf("container init: working directory %q: %w", c.Dir, err)
	}
	path, err := lookPath(c.Args[0], c.Env)
	if err != nil {
		return ExitNotFound, err
	}
	if !c.Privileged {
		if err := dropPrivileges(); err != nil {
			return ExitLauncher, fmt.Errorf("container init: %w", err)
		}
	}
	err = unix.Exec(path, c.Args, c.Env)
	if errors.Is(err, unix.ENOENT) {
		return ExitNotFound, fmt.Errorf("exec %q: %w (a missing interpreter or loader?)", c.Args[0], err)
	}
	return ExitCannotInvoke, fmt.Errorf("exec %q: %w", c.Args[0], err)
}

func readAllFD(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		if len(out) > 1<<20 {
			return nil, errors.New("config too large")
		}
	}
}

// devices are the nodes created in the container's /dev.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// setupRoot makes the mount namespace private, mounts /proc, /dev and /sys
// in the rootfs, pivots into it and detaches the old root.
func setupRoot(c *childConfig) error {
	if err := unix.Sethostname([]byte(c.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	r := c.Rootfs
	if err := unix.Mount(r, r, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", r, err)
	}
	mnt := func(src, dst, fstype string, flags uintptr, data string) error {
		p := filepath.Join(r, dst)
		if err := os.MkdirAll(p, 0o755); err != nil && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("mount %s: %w", dst, err)
		}
		if err := unix.Mount(src, p, fstype, flags, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", fstype, dst, err)
		}
		return nil
	}
	const nsx = unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV
	if err := mnt("proc", "/proc", "proc", nsx, ""); err != nil {
		return err
	}
	if err := mnt("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, d := range devices {
		p := filepath.Join(r, "dev", d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
		// mknod honours the umask; the nodes must be world read/writable.
		if err := unix.Chmod(p, 0o666); err != nil {
			return fmt.Errorf("chmod /dev/%s: %w", d.name, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlink(target, filepath.Join(r, "dev", name)); err != nil {
			return fmt.Errorf("symlink /dev/%s: %w", name, err)
		}
	}
	if err := mnt("sysfs", "/sys", "sysfs", nsx|unix.MS_RDONLY, ""); err != nil {
		return err
	}
	if err := unix.Chdir(r); err != nil {
		return fmt.Errorf("chdir rootfs: %w", err)
	}
	// pivot_root(".", ".") stacks the old root under the new one; detaching
	// "." then removes it (runc's trick: no directory needed in the rootfs).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", r, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if c.ReadOnly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount rootfs read-only: %w", err)
		}
	}
	return nil
}

// loopbackUp brings up lo in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: set up: %w", err)
	}
	return nil
}

// keptCaps is runc's default capability set.
var keptCaps = map[int]bool{unix.CAP_AUDIT_WRITE: true, unix.CAP_KILL: true, unix.CAP_NET_BIND_SERVICE: true}

// dropPrivileges cuts the bounding set to keptCaps and sets no_new_privs.
// The workload runs as root, so after exec its permitted and effective sets
// are the bounding set.
func dropPrivileges() error {
	for c := 0; c <= 63; c++ {
		if keptCaps[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if err == unix.EINVAL {
				break // past the kernel's last capability
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// lookPath finds name like execvp would, in the PATH of env, inside the new
// root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		if err := checkExec(name); err != nil {
			return "", fmt.Errorf("%q: %w", name, err)
		}
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if checkExec(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH", name)
}

func checkExec(p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return errors.New("is a directory")
	}
	return nil
}
