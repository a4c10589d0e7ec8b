package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microvm/microvm/container"
)

// A density run starts N instances of a path at once, keeps them all up,
// and measures the memory they hold together: the proportional set size
// (PSS, /proc/PID/smaps_rollup) of every process the run started — the VMM
// processes with the guest pages they touched, or the runtime processes and
// the containers' workloads — summed and divided by N. Shared pages (one
// binary's text, a snapshot's clean pages) count once across all, split
// among those that map them, which is the figure density is about.

// DensityPath is one path of a density run.
type DensityPath struct {
	// Name and Desc as a Runner's.
	Name, Desc string
	// Setup does the one-time work; an error makes the path "not available".
	Setup func(ctx context.Context) error
	// Start starts instance i and returns once it is up (the VM wrote its
	// ready register; the container's workload runs). stop ends it and
	// waits until everything of it is gone.
	Start func(ctx context.Context, i int) (stop func() error, err error)
	// Close undoes Setup.
	Close func() error
	// Workload, when set, names the process (comm) of which every instance
	// runs one: the measurement waits until N of them are up.
	Workload string
}

// DensityResult is one path's figures.
type DensityResult struct {
	Path        string `json:"path"`
	Description string `json:"description"`
	// Unavailable is why the path could not run here (no figures then).
	Unavailable string `json:"unavailable,omitempty"`
	// Error is why the run of an available path failed.
	Error     string `json:"error,omitempty"`
	Instances int    `json:"instances"`
	// UpAfter is from the first start to the last instance up.
	UpAfter time.Duration `json:"up_after_ns"`
	// PSSKiB and RSSKiB sum every process the path started.
	PSSKiB uint64 `json:"pss_kib"`
	RSSKiB uint64 `json:"rss_kib"`
	// PSSPerInstanceKiB is PSSKiB / Instances.
	PSSPerInstanceKiB float64 `json:"pss_per_instance_kib"`
	// Processes counts those processes by name (comm).
	Processes map[string]int `json:"processes"`
}

// DensityReport is a density run.
type DensityReport struct {
	Instances int             `json:"instances"`
	Host      HostInfo        `json:"host"`
	Paths     []DensityResult `json:"paths"`
}

// Density runs each path in turn: Setup, N Starts at once, a measurement
// of every descendant process of this one, then every stop. Instances
// that do not come up within timeout fail the path. Nothing is left
// running on any path out of it.
func Density(ctx context.Context, paths []DensityPath, n int, timeout time.Duration) (*DensityReport, error) {
	if n < 1 {
		return nil, fmt.Errorf("density: %d instances, want at least 1", n)
	}
	rep := &DensityReport{Instances: n, Host: hostInfo()}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Paths = append(rep.Paths, densityPath(ctx, p, n, timeout))
	}
	return rep, ctx.Err()
}

func densityPath(ctx context.Context, p DensityPath, n int, timeout time.Duration) DensityResult {
	r := DensityResult{Path: p.Name, Description: p.Desc}
	if err := p.Setup(ctx); err != nil {
		r.Unavailable = err.Error()
		return r
	}
	defer p.Close()
	// Processes alive before the run are not the path's (a private dockerd,
	// say): only new descendants count.
	before := map[int]bool{}
	for _, pid := range descendants(os.Getpid()) {
		before[pid] = true
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	stops := make([]func() error, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stops[i], errs[i] = p.Start(sctx, i)
		}(i)
	}
	wg.Wait()
	r.UpAfter = time.Since(start)
	defer func() {
		for _, stop := range stops {
			if stop != nil {
				stop()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		r.Error = firstLine(err.Error())
		return r
	}
	for {
		r.PSSKiB, r.RSSKiB, r.Processes = 0, 0, map[string]int{}
		for _, pid := range descendants(os.Getpid()) {
			if before[pid] {
				continue
			}
			m, err := readRollup(pid)
			if err != nil {
				continue // it exited meanwhile
			}
			r.PSSKiB += m.pss
			r.RSSKiB += m.rss
			r.Processes[m.comm]++
		}
		if p.Workload == "" || r.Processes[p.Workload] >= n {
			break
		}
		select {
		case <-sctx.Done():
			r.Error = fmt.Sprintf("only %d of %d %s processes up: %v", r.Processes[p.Workload], n, p.Workload, sctx.Err())
			return r
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.UpAfter = time.Since(start)
	r.Instances = n
	r.PSSPerInstanceKiB = float64(r.PSSKiB) / float64(n)
	return r
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// descendants lists every process below pid (children, their children …),
// from the parent fields of /proc/*/stat.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		c := children[queue[0]]
		queue = append(queue[1:], c...)
		out = append(out, c...)
	}
	return out
}

// parentOf reads the parent pid from /proc/PID/stat (field 4, after the
// parenthesised command name, which may hold spaces and parentheses).
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

type rollup struct {
	comm     string
	pss, rss uint64 // KiB
}

// readRollup reads a process's name and its Pss and Rss in KiB.
func readRollup(pid int) (rollup, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(dir, "comm"))
	if err != nil {
		return rollup{}, err
	}
	f, err := os.Open(filepath.Join(dir, "smaps_rollup"))
	if err != nil {
		return rollup{}, err
	}
	defer f.Close()
	r, err := parseRollup(f)
	r.comm = strings.TrimSpace(string(comm))
	return r, err
}

// parseRollup reads the Pss: and Rss: lines of a smaps_rollup file.
func parseRollup(rd io.Reader) (rollup, error) {
	var r rollup
	found := 0
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Pss:":
			r.pss, found = v, found+1
		case "Rss:":
			r.rss, found = v, found+1
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	if found < 2 {
		return r, errors.New("smaps_rollup without Rss and Pss lines (a kernel thread, or a kernel without it)")
	}
	return r, nil
}

// --- paths ---

// DensityPaths returns the density-capable paths: VM processes that hold
// an idle guest (`vm-proc`, `vm-lean`: the exit guest with hold and the
// in-kernel irqchip; `linux` with cfg.Kernel: a Linux guest whose init runs
// sleep), restored clones of one snapshot (`vm-restore`, when the microvm
// binary offers --restore), and the container runtimes whose containers
// are this process's descendants (the in-process launcher, runc, crun)
// running busybox sleep. podman and docker are left out: their containers
// belong to conmon or dockerd, outside this process's tree.
func DensityPaths(cfg Config) []DensityPath {
	hold := []string{"--guest", "exit", "--cmdline", "hold", "--irqchip", "--quiet", "--timeout", "0"}
	paths := []DensityPath{
		procDensity("vm-proc", "`microvm boot --guest exit --cmdline hold --irqchip` held idle", func() ([]string, error) {
			if cfg.MicrovmBin == "" {
				return nil, errors.New("the microvm binary is not known (set MICROVM_BIN)")
			}
			return append([]string{cfg.MicrovmBin, "boot"}, hold...), needKVM()
		}),
		procDensity("vm-lean", "`microvm-vmm --guest exit --cmdline hold --irqchip` held idle", func() ([]string, error) {
			lean, err := leanBinary(cfg.MicrovmBin)
			if err != nil {
				return nil, err
			}
			return append([]string{lean}, hold...), needKVM()
		}),
		procDensity("linux", "`microvm boot KERNEL --initrd INITRD` whose init runs sleep", func() ([]string, error) {
			if cfg.Kernel == "" {
				return nil, errors.New("needs --kernel (a vmlinux; see `make kernel`)")
			}
			if cfg.MicrovmBin == "" {
				return nil, errors.New("the microvm binary is not known (set MICROVM_BIN)")
			}
			argv := []string{cfg.MicrovmBin, "boot", cfg.Kernel, "--quiet", "--timeout", "0", "--append", `microvm.cmd="sleep 100000"`}
			if cfg.Initrd != "" {
				argv = append(argv, "--initrd", cfg.Initrd)
			}
			return argv, needKVM()
		}),
		restoreDensity(cfg, hold),
		ociDensity(cfg),
	}
	rf := &rootfsOnce{cfg: &cfg}
	for _, rt := range container.Runtimes(cfg.StateDir) {
		switch rt.Name() {
		case "container", "runc", "crun":
		default:
			continue
		}
		if ip, ok := rt.(container.InProcess); ok {
			ip.Helper = cfg.Helper
			rt = ip
		}
		paths = append(paths, containerDensity(rt, rf))
	}
	return paths
}

// restoreDensity is path vm-restore: one snapshot of the held exit guest,
// taken at its ready write by `microvm boot … --snapshot-on-ready`, and N
// `microvm boot --restore` processes of it, which share its clean pages.
func restoreDensity(cfg Config, hold []string) DensityPath {
	var dir string
	return DensityPath{
		Name: "vm-restore", Desc: "`microvm boot --restore SNAP`: clones of one snapshot of the held exit guest",
		Setup: func(ctx context.Context) error {
			if cfg.MicrovmBin == "" {
				return errors.New("the microvm binary is not known (set MICROVM_BIN)")
			}
			if err := needKVM(); err != nil {
				return err
			}
			d, err := os.MkdirTemp("", "microvm-density-snap-")
			if err != nil {
				return err
			}
			snap := filepath.Join(d, "snap")
			argv := append(append([]string{"boot"}, hold...), "--snapshot-on-ready", snap)
			if out, err := exec.CommandContext(ctx, cfg.MicrovmBin, argv...).CombinedOutput(); err != nil {
				os.RemoveAll(d)
				return fmt.Errorf("take the snapshot: %v: %s", err, bytes.TrimSpace(out))
			}
			dir = d
			return nil
		},
		Start: func(ctx context.Context, _ int) (func() error, error) {
			return startHeld(ctx, []string{cfg.MicrovmBin, "boot", "--restore", filepath.Join(dir, "snap"), "--quiet", "--timeout", "0"})
		},
		Close: func() error {
			if dir == "" {
				return nil
			}
			err := os.RemoveAll(dir)
			dir = ""
			return err
		},
	}
}

// ociDensity is path vm-oci: `microvm oci run` of the busybox bundle
// with sleep as its process, each a container-VM up once its agent wrote
// the ready register (the runtime passes $MICROVM_READY_FD to the VMM).
func ociDensity(cfg Config) DensityPath {
	r := &ociRunner{cfg: &cfg, rootfs: &rootfsOnce{cfg: &cfg}, args: []string{"/bin/sleep", "100000"}}
	return DensityPath{
		Name: "vm-oci", Desc: "`microvm oci run` of busybox sleep: one container-VM each",
		Setup: r.Setup,
		Start: func(ctx context.Context, i int) (func() error, error) {
			argv := append(r.argv[:len(r.argv):len(r.argv)], fmt.Sprintf("density-%d", i))
			return startHeld(ctx, argv, r.env...)
		},
		Close: r.Close,
	}
}

// SelectDensityPaths picks paths by a comma-separated list of names ("":
// all), in the list's order, as SelectRunners does.
func SelectDensityPaths(all []DensityPath, list string) ([]DensityPath, error) {
	return selectByName(all, func(p DensityPath) string { return p.Name }, list)
}

// procDensity holds instances that are processes writing a byte on fd 3
// ($MICROVM_READY_FD) once up.
func procDensity(name, desc string, argv func() ([]string, error)) DensityPath {
	var args []string
	return DensityPath{
		Name: name, Desc: desc,
		Setup: func(context.Context) error {
			a, err := argv()
			if err != nil {
				return err
			}
			if _, err := os.Stat(a[0]); err != nil {
				return err
			}
			args = a
			return nil
		},
		Start: func(ctx context.Context, _ int) (func() error, error) { return startHeld(ctx, args) },
		Close: func() error { return nil },
	}
}

// startHeld starts argv, with env added to the environment, with a ready
// pipe on fd 3 and waits for its byte.
func startHeld(ctx context.Context, argv []string, env ...string) (func() error, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var stderr tailWriter
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.Env = append(append(os.Environ(), env...), "MICROVM_READY_FD=3")
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		wr.Close()
		return nil, err
	}
	wr.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		return nil
	}
	up := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := rd.Read(b[:])
		up <- err
	}()
	select {
	case err := <-up:
		if err != nil {
			stop()
			return nil, fmt.Errorf("%s ended before it was up: %s", filepath.Base(argv[0]), stderr.String())
		}
		return stop, nil
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("%s not up: %w", filepath.Base(argv[0]), ctx.Err())
	}
}

// containerDensity holds containers running busybox sleep; an instance is
// up once its sleep runs (a new descendant named sleep).
func containerDensity(rt container.Runtime, rf *rootfsOnce) DensityPath {
	var l container.Launcher
	var mu sync.Mutex
	return DensityPath{
		Name:     rt.Name(),
		Desc:     fmt.Sprintf("%s: busybox `sleep 100000`, held", rt.Name()),
		Workload: "sleep",
		Setup: func(ctx context.Context) error {
			if err := rt.Available(ctx); err != nil {
				return err
			}
			dir, err := rf.get()
			if err != nil {
				return err
			}
			l, err = rt.Prepare(ctx, container.Workload{Rootfs: dir, Args: []string{"/bin/sleep", "100000"}})
			return err
		},
		Start: func(ctx context.Context, i int) (func() error, error) {
			mu.Lock()
			before := sleepers()
			mu.Unlock()
			lctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := l.Launch(lctx, container.IO{})
				done <- err
			}()
			stop := func() error { cancel(); return <-done }
			for {
				mu.Lock()
				now := sleepers()
				mu.Unlock()
				if newSleeper(before, now) {
					return stop, nil
				}
				select {
				case err := <-done:
					cancel()
					if err == nil {
						err = errors.New("the workload ended")
					}
					return nil, fmt.Errorf("container %d ended before it was up: %w", i, err)
				case <-ctx.Done():
					stop()
					return nil, fmt.Errorf("container %d not up: %w", i, ctx.Err())
				case <-time.After(20 * time.Millisecond):
				}
			}
		},
		Close: func() error {
			if l != nil {
				return l.Close()
			}
			return nil
		},
	}
}

// sleepers lists the descendants of this process named sleep.
func sleepers() map[int]bool {
	out := map[int]bool{}
	for _, pid := range descendants(os.Getpid()) {
		if c, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm")); err == nil && strings.TrimSpace(string(c)) == "sleep" {
			out[pid] = true
		}
	}
	return out
}

// newSleeper says whether now holds a sleep that before did not. Two
// instances starting at once may both see the same new sleep; the
// measurement then waits for all N (DensityPath.Workload).
func newSleeper(before, now map[int]bool) bool {
	for pid := range now {
		if !before[pid] {
			return true
		}
	}
	return false
}

// --- reports ---

// WriteDensityText prints a density report as a table.
func WriteDensityText(w io.Writer, rep *DensityReport) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "microvm bench --density %d: each path's %d instances up at once; PSS of every process it started (/proc/PID/smaps_rollup); %d CPUs, kernel %s, KVM module %s\n\n",
		rep.Instances, rep.Instances, rep.Host.CPUs, rep.Host.Kernel, rep.Host.KVMModule)
	fmt.Fprintf(bw, "%-10s %14s %12s %12s %10s  %s\n", "path", "PSS/instance", "PSS total", "RSS total", "all up", "processes")
	var ok []DensityResult
	for _, r := range rep.Paths {
		switch {
		case r.Unavailable != "":
			fmt.Fprintf(bw, "%-10s not available: %s\n", r.Path, r.Unavailable)
		case r.Error != "":
			fmt.Fprintf(bw, "%-10s failed: %s\n", r.Path, r.Error)
		default:
			ok = append(ok, r)
			fmt.Fprintf(bw, "%-10s %14s %12s %12s %10s  %s\n", r.Path, kib(r.PSSPerInstanceKiB), kib(float64(r.PSSKiB)),
				kib(float64(r.RSSKiB)), r.UpAfter.Round(time.Millisecond), procList(r.Processes))
		}
	}
	if len(ok) > 1 {
		sort.SliceStable(ok, func(i, j int) bool { return ok[i].PSSPerInstanceKiB < ok[j].PSSPerInstanceKiB })
		fmt.Fprintf(bw, "\nSummary (PSS per instance)\n  %s took the least\n", ok[0].Path)
		for _, r := range ok[1:] {
			if ok[0].PSSPerInstanceKiB > 0 {
				fmt.Fprintf(bw, "      %.2f× as much: %s\n", r.PSSPerInstanceKiB/ok[0].PSSPerInstanceKiB, r.Path)
			}
		}
	}
	return bw.Flush()
}

// WriteDensityJSON writes a density report as indented JSON.
func WriteDensityJSON(w io.Writer, rep *DensityReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func kib(v float64) string {
	switch {
	case v >= 10*1024:
		return fmt.Sprintf("%.1f MiB", v/1024)
	default:
		return fmt.Sprintf("%.0f KiB", v)
	}
}

func procList(m map[string]int) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%d× %s", m[n], n))
	}
	return strings.Join(parts, ", ")
}
