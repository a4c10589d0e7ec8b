package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/microvm/microvm/bench/qemuguest"
	"github.com/microvm/microvm/images/guests"
)

// qemuRunner boots the same tiny guest in QEMU's microvm machine with KVM:
//
//	qemu-system-x86_64 -M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=off
//	  -accel kvm -cpu host,-arch-capabilities -m 128M -nodefaults -no-user-config
//	  -nographic -no-reboot -kernel GUEST-PVH.elf
//	  -chardev file,id=rdy,path=/dev/fd/3 -device isa-debugcon,iobase=0x502,chardev=rdy
//	  -device isa-debug-exit,iobase=0x501,iosize=1
//
// The guest is the "ready" guest's own bytes, wrapped by qemuguest.Wrap in
// a PVH ELF whose ~20-instruction stub does the long-mode setup microvm's
// VMM does from the host. Its ready write reaches fd 3 (the benchmark's
// ready pipe) through the debugcon device, its exit write ends QEMU with
// status (v<<1)|1. `-cpu host` alone aborts on kvm_pvm hosts (MSR 0x10a).
//
// With multiboot set (path qemu-multiboot) the same guest and stub come in
// an ELF32 Multiboot kernel (qemuguest.WrapMultiboot), booted through
// QEMU's Multiboot loader: the twin of path vm-multiboot.
type qemuRunner struct {
	cfg       *Config
	multiboot bool
	argv      []string
	dir       string
}

func newQEMURunner(cfg *Config, multiboot bool) *qemuRunner {
	return &qemuRunner{cfg: cfg, multiboot: multiboot}
}

func (r *qemuRunner) Name() string {
	if r.multiboot {
		return "qemu-multiboot"
	}
	return "qemu"
}

func (r *qemuRunner) Describe() string {
	if r.multiboot {
		return fmt.Sprintf("`qemu-system-x86_64 -M microvm -accel kvm -kernel` booting the %q guest as a Multiboot kernel (ELF32, stub), whole process", r.cfg.guest())
	}
	return fmt.Sprintf("`qemu-system-x86_64 -M microvm -accel kvm` booting the same %q guest (PVH stub), whole process", r.cfg.guest())
}

func (r *qemuRunner) Setup(ctx context.Context) error {
	bin := r.cfg.QEMU
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("%s is not installed (Debian package qemu-system-x86)", bin)
	}
	if err := needKVM(); err != nil {
		return err
	}
	g, err := guests.Get(r.cfg.guest())
	if err != nil {
		return err
	}
	mem := r.cfg.memory()
	wrap := qemuguest.Wrap
	if r.multiboot {
		wrap = qemuguest.WrapMultiboot
	}
	img, err := wrap(g, mem, "")
	if err != nil {
		return err
	}
	if r.dir, err = os.MkdirTemp("", "microvm-qemu-"); err != nil {
		return err
	}
	kernel := filepath.Join(r.dir, r.cfg.guest()+"-"+r.Name()+".elf")
	if err := os.WriteFile(kernel, img, 0o644); err != nil {
		return err
	}
	r.argv = []string{path,
		"-M", "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=off",
		"-accel", "kvm", "-cpu", "host,-arch-capabilities",
		"-m", fmt.Sprintf("%dM", mem>>20), "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-kernel", kernel,
		"-chardev", "file,id=rdy,path=/dev/fd/3", "-device", "isa-debugcon,iobase=0x502,chardev=rdy",
		"-device", "isa-debug-exit,iobase=0x501,iosize=1",
	}
	// One trial launch: a QEMU that cannot run this guest here is "not
	// available", with its own words as the reason.
	if _, err := r.Launch(ctx); err != nil {
		return fmt.Errorf("trial boot failed: %w", err)
	}
	return nil
}

func (r *qemuRunner) Launch(ctx context.Context) (Sample, error) {
	if r.argv == nil {
		return Sample{}, errors.New("qemu: not set up")
	}
	return launchProcess(ctx, r.argv, nil, qemuStatus)
}

// qemuStatus maps QEMU's exit status back to the guest's: isa-debug-exit
// makes QEMU exit with (v<<1)|1, QEMU's own failures exit 1 with a message.
func qemuStatus(code int, stderr string) error {
	if code == 1 && stderr != "" {
		return fmt.Errorf("qemu failed: %s", stderr)
	}
	if code%2 == 1 {
		if g := code >> 1; g != 0 {
			return fmt.Errorf("guest exited with status %d", g)
		}
		return nil
	}
	if code == 0 {
		return errors.New("qemu exited 0: the guest never wrote the exit port")
	}
	return fmt.Errorf("qemu exit status %d: %s", code, stderr)
}

func (r *qemuRunner) Close() error {
	if r.dir == "" {
		return nil
	}
	err := os.RemoveAll(r.dir)
	r.dir = ""
	return err
}
