package rig

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// qemuMicrovmFirmware are the files QEMU's -M microvm reads from its data
// directory: qboot as BIOS (QEMU 7.2 asks for qboot.rom, later ones for
// bios-microvm.bin), and the option ROMs that load a bzImage
// (linuxboot_dma) or a PVH vmlinux (pvh).
var qemuMicrovmFirmware = []string{"qboot.rom", "bios-microvm.bin", "linuxboot_dma.bin", "pvh.bin"}

// AddQEMU adds the host's qemu-system-x86_64 (bin, or from PATH when
// empty), its shared libraries and the firmware -M microvm needs to files,
// so that L1 can run `qemu-system-x86_64 -M microvm -accel kvm -cpu host
// -nodefaults -no-user-config ...` on its own /dev/kvm.
func AddQEMU(files map[string]string, bin string) error {
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("find QEMU: %w", err)
	}
	if err := AddBinary(files, p); err != nil {
		return err
	}
	// Debian's QEMU looks for firmware in /usr/share/qemu; a bios-microvm.bin
	// symlink there is followed, its content copied under the link's name.
	for _, fw := range qemuMicrovmFirmware {
		src := filepath.Join("/usr/share/qemu", fw)
		if !fileExists(src) {
			return fmt.Errorf("QEMU firmware %s missing (from Debian's qemu-system-data)", src)
		}
		files[src] = src
	}
	return nil
}
