package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Workload is what a runtime runs: a command in a rootfs directory.
type Workload struct {
	// Rootfs is the root filesystem directory (bundles point at it; image
	// based engines import it once as an image).
	Rootfs string
	// Args is the command line.
	Args []string
	// Env is the environment (empty: rootfs.DefaultEnv()).
	Env []string
	// MemoryBytes limits memory (0: none).
	MemoryBytes int64
	// CPUs limits CPU time (0: none).
	CPUs float64
	// ReadyPipe passes a pipe's write end as fd 3 where the runtime can
	// (runc, crun and podman: --preserve-fds); Result.Ready tells whether
	// the workload wrote to it.
	ReadyPipe bool
	// NoNetwork shares the host's network namespace instead of a new one.
	NoNetwork bool
}

// Validate checks the workload without running anything.
func (w *Workload) Validate() error {
	s := Spec{Rootfs: w.Rootfs, Args: w.Args, MemoryBytes: w.MemoryBytes, CPUs: w.CPUs}
	return s.Validate()
}

// IO are the standard streams of one launch (nil: discarded / empty).
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Runtime is a way to run containers: the in-process launcher or a real OCI
// runtime or engine found on the host.
type Runtime interface {
	// Name is the runtime's short name (container, runc, crun, podman, docker).
	Name() string
	// Available returns nil when the runtime can run containers here, or an
	// error saying why not.
	Available(ctx context.Context) error
	// Prepare does the one-time work for w (bundle, image import) and returns
	// a Launcher that starts it repeatedly.
	Prepare(ctx context.Context, w Workload) (Launcher, error)
}

// Launcher starts one prepared workload, as many times as asked.
type Launcher interface {
	// Launch runs the workload once and waits for it. A failure of the
	// runtime itself is an error (a *StartError where the runtime says so);
	// the workload's own exit status is Result.Status. When ctx ends, the
	// container is killed and removed.
	Launch(ctx context.Context, stdio IO) (*Result, error)
	// Close removes everything Prepare and Launch left behind (containers,
	// bundles, images, state directories).
	Close() error
}

// Runtimes returns every runtime this package knows, in a fixed order:
// the in-process launcher, runc, crun, podman, docker. stateDir holds their
// state and bundles (a fresh temporary directory per Prepare when empty).
func Runtimes(stateDir string) []Runtime {
	return []Runtime{
		InProcess{},
		&OCIRuntime{Binary: "runc", StateDir: stateDir},
		&OCIRuntime{Binary: "crun", StateDir: stateDir},
		&Engine{Binary: "podman", StateDir: stateDir},
		&Engine{Binary: "docker", StateDir: stateDir},
	}
}

// RuntimeByName returns the runtime called name from Runtimes.
func RuntimeByName(name, stateDir string) (Runtime, error) {
	var names []string
	for _, r := range Runtimes(stateDir) {
		if r.Name() == name {
			return r, nil
		}
		names = append(names, r.Name())
	}
	sort.Strings(names)
	return nil, fmt.Errorf("unknown runtime %q (known: %v)", name, names)
}

// InProcess is the in-process launcher (Run) as a Runtime. Helper is the
// init helper binary (default /proc/self/exe).
type InProcess struct {
	Helper string
}

// Name returns "container".
func (InProcess) Name() string { return "container" }

// Available needs root (namespaces, pivot_root, cgroups).
func (InProcess) Available(context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (namespaces, pivot_root, cgroups)")
	}
	return nil
}

// Prepare validates w.
func (p InProcess) Prepare(_ context.Context, w Workload) (Launcher, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	return &inProcessLauncher{helper: p.Helper, w: w}, nil
}

type inProcessLauncher struct {
	helper string
	w      Workload
}

func (l *inProcessLauncher) Launch(ctx context.Context, stdio IO) (*Result, error) {
	return Run(ctx, Spec{
		Rootfs: l.w.Rootfs, Args: l.w.Args, Env: l.w.Env,
		MemoryBytes: l.w.MemoryBytes, CPUs: l.w.CPUs,
		Network: !l.w.NoNetwork, ReadOnly: true, ReadyPipe: l.w.ReadyPipe,
		Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr,
		Helper: l.helper,
	})
}

func (l *inProcessLauncher) Close() error { return nil }

// stateDir makes a private state directory under base (or the temp dir).
func makeStateDir(base, name string) (string, error) {
	if base != "" {
		if err := os.MkdirAll(base, 0o700); err != nil {
			return "", fmt.Errorf("%s: state dir: %w", name, err)
		}
	}
	d, err := os.MkdirTemp(base, "microvm-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("%s: state dir: %w", name, err)
	}
	return d, nil
}

// readyPipe makes the ready pipe of one launch; the returned function
// (call it after the runtime process started) closes the parent's copy of
// the write end and returns a channel yielding the time of the first byte
// (closed without a value if none came).
func readyPipe() (r, w *os.File, started func() <-chan time.Time, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ready pipe: %w", err)
	}
	started = func() <-chan time.Time {
		w.Close()
		ch := make(chan time.Time, 1)
		go func() {
			var b [1]byte
			if n, _ := r.Read(b[:]); n == 1 {
				ch <- time.Now()
			}
			close(ch)
			r.Close()
		}()
		return ch
	}
	return r, w, started, nil
}

// removeAll removes dir, tolerating an empty name.
func removeAll(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", filepath.Base(dir), err)
	}
	return nil
}

// liveSet remembers the containers a launcher started that may still
// exist, so that Close can remove what a failed or cancelled launch left.
type liveSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

// track records that container id may exist (live) or is gone.
func (s *liveSet) track(id string, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	if live {
		s.ids[id] = true
	} else {
		delete(s.ids, id)
	}
}

// snapshot returns the ids tracked now.
func (s *liveSet) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.ids))
	for id := range s.ids {
		ids = append(ids, id)
	}
	return ids
}

// waitOrKill waits for a started runtime process and returns Wait's error.
// When ctx ends first it kills the runtime, removes the container it may
// leave behind (which holds our pipes, so Wait would not return before), and
// returns, as stopped, ctx's error joined with the removal's.
func waitOrKill(ctx context.Context, cmd *exec.Cmd, remove func() error) (waitErr, stopped error) {
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case err := <-waitDone:
		return err, nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		rerr := remove()
		<-waitDone
		return nil, errors.Join(ctx.Err(), rerr)
	}
}
