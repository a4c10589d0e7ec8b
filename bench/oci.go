package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/microvm/microvm/images/rootfs"
)

// ociRunner is path vm-oci: the busybox bundle of the container paths, its
// process /bin/true, through `microvm oci run` — an OCI runtime at runc's
// level that runs the bundle in a micro-VM under the lean kernel
// (docs/oci.md), whole process. Ready is the guest agent's ready write,
// just before it executes the workload; exit is run's end (the VM gone,
// its state deleted).
type ociRunner struct {
	cfg    *Config
	rootfs *rootfsOnce
	args   []string // the bundle's process (default /bin/true)
	dir    string
	argv   []string
	env    []string
	n      atomic.Int64
}

func (r *ociRunner) Name() string { return "vm-oci" }
func (r *ociRunner) Describe() string {
	return "`microvm oci run --bundle B ID` of busybox /bin/true: the bundle in a micro-VM (lean kernel, agent), whole process"
}

func (r *ociRunner) Setup(ctx context.Context) error {
	if r.cfg.MicrovmBin == "" {
		return errors.New("the microvm binary is not known (set MICROVM_BIN)")
	}
	kernel := r.cfg.Kernel
	if kernel == "" {
		kernel = os.Getenv("MICROVM_KERNEL_VMLINUX")
	}
	if kernel == "" {
		return errors.New("needs --kernel (the lean vmlinux: make kernel)")
	}
	if err := needKVM(); err != nil {
		return err
	}
	rfs, err := r.rootfs.get()
	if err != nil {
		return err
	}
	if rfs, err = filepath.Abs(rfs); err != nil {
		return err
	}
	if r.dir, err = os.MkdirTemp("", "microvm-bench-oci-"); err != nil {
		return err
	}
	bundle := filepath.Join(r.dir, "bundle")
	args := r.args
	if len(args) == 0 {
		args = []string{"/bin/true"}
	}
	c, err := rootfs.NewConfig(rfs, rootfs.BundleOptions{Args: args})
	if err != nil {
		return err
	}
	if err := rootfs.WriteBundle(bundle, c); err != nil {
		return err
	}
	r.argv = []string{r.cfg.MicrovmBin, "oci", "--root", filepath.Join(r.dir, "state"), "run", "--bundle", bundle}
	r.env = []string{"MICROVM_KERNEL_VMLINUX=" + kernel}
	return nil
}

func (r *ociRunner) Launch(ctx context.Context) (Sample, error) {
	id := fmt.Sprintf("bench-%d", r.n.Add(1))
	return launchProcess(ctx, append(r.argv[:len(r.argv):len(r.argv)], id), r.env, func(code int, stderr string) error {
		if code != 0 {
			return fmt.Errorf("exit status %d: %s", code, stderr)
		}
		return nil
	})
}

func (r *ociRunner) Close() error {
	if r.dir == "" {
		return nil
	}
	err := os.RemoveAll(r.dir)
	r.dir = ""
	return err
}
