package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/microvm/microvm/libvirt"
)

// libvirtRunner boots Config.Kernel (with Config.Initrd) as a transient
// libvirt domain per launch: ready is the guest init's ready marker on the
// console, exit the domain seen stopped.
type libvirtRunner struct {
	cfg  *Config
	conn *libvirt.Conn
}

func newLibvirtRunner(cfg *Config) *libvirtRunner { return &libvirtRunner{cfg: cfg} }

func (r *libvirtRunner) Name() string { return "libvirt" }

func (r *libvirtRunner) Describe() string {
	return "KERNEL + INITRD as a transient libvirt domain (direct kernel boot), create → ready marker → stopped"
}

func (r *libvirtRunner) uri() string {
	if r.cfg.LibvirtURI != "" {
		return r.cfg.LibvirtURI
	}
	return "qemu:///system"
}

func (r *libvirtRunner) Setup(ctx context.Context) error {
	if r.cfg.Kernel == "" {
		return errors.New("needs --kernel (and an initrd whose init prints the ready marker)")
	}
	if _, err := os.Stat(r.cfg.Kernel); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	c, err := libvirt.Dial(ctx, r.uri(), libvirt.Options{ConnectTimeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("no libvirtd at %s: %w", r.uri(), err)
	}
	r.conn = c
	return nil
}

func (r *libvirtRunner) Launch(ctx context.Context) (Sample, error) {
	timeout := 2 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	res, err := r.conn.BootKernel(ctx, libvirt.BootSpec{
		Kernel: r.cfg.Kernel, Initrd: r.cfg.Initrd, Transient: true, WaitExit: true, Timeout: timeout,
	})
	if res != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		defer res.Cleanup(cctx)
	}
	if err != nil {
		return Sample{}, err
	}
	if !res.Exited {
		return Sample{}, fmt.Errorf("domain did not stop (last console line %q)", res.LastLine)
	}
	s := Sample{Exit: res.ExitAfter}
	if res.Ready {
		s.Ready, s.HasReady = res.ReadyAfter, true
	}
	return s, nil
}

func (r *libvirtRunner) Close() error {
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	return err
}
