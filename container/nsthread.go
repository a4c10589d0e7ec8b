package container

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// cgroup2Thread is an OS thread in a private mount namespace where
// /sys/fs/cgroup is a pure cgroup2 mount. Processes started from it (via do)
// inherit that namespace. crun refuses the hybrid v1/v2 layout ("cgroups in
// hybrid mode not supported") when the unified hierarchy holds any
// controller; in this namespace it sees a pure v2 host instead, at no cost
// per launch.
//
// The Go runtime never starts new threads from a locked thread (it uses its
// template thread), and the goroutine never unlocks, so the namespace never
// leaks to other goroutines: the thread exits when close is called.
type cgroup2Thread struct {
	reqs chan func()
}

func newCgroup2Thread() (*cgroup2Thread, error) {
	t := &cgroup2Thread{reqs: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread's namespace differs from the
		// process's, so it must die with this goroutine.
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make / private: %w", err)
			return
		}
		if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			errc <- fmt.Errorf("mount cgroup2 on /sys/fs/cgroup: %w", err)
			return
		}
		errc <- nil
		for f := range t.reqs {
			f()
		}
	}()
	if err := <-errc; err != nil {
		return nil, errors.Join(errors.New("pure cgroup2 view for crun"), err)
	}
	return t, nil
}

// do runs f on the thread and waits for it.
func (t *cgroup2Thread) do(f func()) {
	done := make(chan struct{})
	t.reqs <- func() { f(); close(done) }
	<-done
}

// close ends the thread (and with it the namespace).
func (t *cgroup2Thread) close() {
	if t != nil {
		close(t.reqs)
	}
}
