package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needRuntime skips (loudly) when rt cannot run here; make test installs
// runc, crun and podman so that in CI only docker (no daemon) skips.
func needRuntime(t *testing.T, rt Runtime) {
	t.Helper()
	if err := rt.Available(context.Background()); err != nil {
		t.Skipf("SKIPPED LOUDLY: %s not available: %v", rt.Name(), err)
	}
}

func TestRuntimesRunWorkload(t *testing.T) {
	r := needRootfs(t)
	for _, rt := range Runtimes(t.TempDir()) {
		t.Run(rt.Name(), func(t *testing.T) {
			needRuntime(t, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			// The benchmark workload: ready writes fd 3 and exits 0.
			l, err := rt.Prepare(ctx, Workload{Rootfs: r, Args: []string{"/bin/ready"}, ReadyPipe: true})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			defer func() {
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			res, err := l.Launch(ctx, IO{})
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if res.Status != 0 {
				t.Errorf("status %d, want 0", res.Status)
			}
			wantReady := rt.Name() != "docker"
			if res.Ready != wantReady {
				t.Errorf("ready = %v, want %v", res.Ready, wantReady)
			}
			if res.Ready && (res.ReadyAfter <= 0 || res.ReadyAfter > res.ExitAfter) {
				t.Errorf("ReadyAfter %v not within (0, ExitAfter %v]", res.ReadyAfter, res.ExitAfter)
			}
		})
	}
}

func TestRuntimesExitStatusAndOutput(t *testing.T) {
	r := needRootfs(t)
	for _, rt := range Runtimes(t.TempDir()) {
		t.Run(rt.Name(), func(t *testing.T) {
			needRuntime(t, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := rt.Prepare(ctx, Workload{Rootfs: r, Args: []string{"sh", "-c", "hostname; echo $$; exit 42"}})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			defer l.Close()
			var out bytes.Buffer
			res, err := l.Launch(ctx, IO{Stdout: &out})
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if res.Status != 42 {
				t.Errorf("status %d, want 42", res.Status)
			}
			lines := strings.Fields(out.String())
			// The shell is PID 1 of its own PID namespace everywhere.
			if len(lines) != 2 || lines[1] != "1" {
				t.Errorf("output %q, want hostname and PID 1", out.String())
			}
		})
	}
}

func TestRuntimesCommandNotFound(t *testing.T) {
	r := needRootfs(t)
	for _, rt := range Runtimes(t.TempDir()) {
		t.Run(rt.Name(), func(t *testing.T) {
			needRuntime(t, rt)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := rt.Prepare(ctx, Workload{Rootfs: r, Args: []string{"/no/such/program"}})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			defer l.Close()
			_, err = l.Launch(ctx, IO{})
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a StartError", err)
			}
			if se.Code != ExitNotFound && se.Code != ExitLauncher {
				t.Errorf("code %d, want %d (or %d)", se.Code, ExitNotFound, ExitLauncher)
			}
		})
	}
}

// TestRuntimesCancelCleansUp starts a long-running container, cancels the
// context and checks that the runtime keeps no container behind.
func TestRuntimesCancelCleansUp(t *testing.T) {
	r := needRootfs(t)
	for _, rt := range Runtimes(t.TempDir()) {
		t.Run(rt.Name(), func(t *testing.T) {
			needRuntime(t, rt)
			l, err := rt.Prepare(context.Background(), Workload{Rootfs: r, Args: []string{"sleep", "600"}})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err = l.Launch(ctx, IO{})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want deadline exceeded", err)
			}
			if time.Since(start) > time.Minute {
				t.Errorf("cancel took %v", time.Since(start))
			}
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			// No sleep 600 may survive.
			out, _ := exec.Command("pgrep", "-f", "^sleep 600$").Output()
			if len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("container process left running: pids %s", out)
			}
		})
	}
}

func TestRuntimeByName(t *testing.T) {
	for _, n := range []string{"container", "runc", "crun", "podman", "docker"} {
		rt, err := RuntimeByName(n, "")
		if err != nil || rt.Name() != n {
			t.Errorf("RuntimeByName(%q) = %v, %v", n, rt, err)
		}
	}
	if _, err := RuntimeByName("lxc", ""); err == nil {
		t.Error("RuntimeByName(lxc) did not fail")
	}
	_ = os.Getpid
}
