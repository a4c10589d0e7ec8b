package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
)

// virtioFlags are boot's virtio device flags (docs/virtio.md).
type virtioFlags struct {
	disks []string
	nets  []string
	rng   bool
}

// addVirtioFlags registers --disk, --net and --rng on boot and documents them.
func addVirtioFlags(cmd *cobra.Command, f *virtioFlags) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.disks, "disk", nil, "add a virtio-blk disk `PATH[,ro]`: a raw image file, ro for read-only (repeatable)")
	fl.StringArrayVar(&f.nets, "net", nil, "add a virtio-net device `tap=NAME[,mac=MAC]` on a tap (repeatable; the tap is created when missing and removed afterwards; needs CAP_NET_ADMIN)")
	fl.BoolVar(&f.rng, "rng", false, "add a virtio-rng entropy device (host getrandom)")
	cmd.Long += `

Virtio devices (docs/virtio.md): --disk, --net and --rng add virtio-mmio
devices at 0xd0000000 + i*0x1000 with interrupt 5+i (disks first, then network
devices, then the entropy device). Tiny guests find them in the boot info's
device table (ABI v2); Linux through virtio_mmio.device= entries microvm adds
to its command line.`
	cmd.Example += `
  microvm boot --guest virtio --disk disk.img --rng   # the virtio test guest
  microvm boot --guest virtio --disk base.img,ro --net tap=tap0,mac=02:00:00:00:00:01`
}

// apply checks the flags and adds the devices to cfg. Malformed specs are
// usage errors; a disk that cannot be used is a bad-image error.
func (f *virtioFlags) apply(cfg *vmm.Config) error {
	for _, spec := range f.disks {
		d, err := parseDisk(spec)
		if err != nil {
			return err
		}
		cfg.Disks = append(cfg.Disks, d)
	}
	taps := map[string]bool{}
	for _, spec := range f.nets {
		n, err := parseNet(spec)
		if err != nil {
			return err
		}
		if taps[n.Tap] {
			return usageErrorf("--net %s: tap %s is given twice", spec, n.Tap)
		}
		taps[n.Tap] = true
		cfg.Nets = append(cfg.Nets, n)
	}
	cfg.RNG = f.rng
	if n := len(cfg.Disks) + len(cfg.Nets) + btoi(cfg.RNG); n > vmm.MaxVirtioDevices {
		return usageErrorf("%d virtio devices: at most %d fit", n, vmm.MaxVirtioDevices)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseDisk parses --disk PATH[,ro] and checks the file is usable. A
// 0-byte file is allowed: the guest sees a disk of capacity 0.
func parseDisk(spec string) (vmm.DiskConfig, error) {
	var d vmm.DiskConfig
	path, opts, _ := strings.Cut(spec, ",")
	if path == "" {
		return d, usageErrorf("--disk %q: want PATH[,ro]", spec)
	}
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "":
		case "ro", "readonly":
			d.ReadOnly = true
		case "rw":
			d.ReadOnly = false
		default:
			return d, usageErrorf("--disk %s: unknown option %q (want ro or rw)", spec, o)
		}
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return d, withCode(exitBadImage, fmt.Errorf("--disk %s: %w", path, errors.Unwrap(err)))
	case st.IsDir():
		return d, withCode(exitBadImage, fmt.Errorf("--disk %s is a directory, not a disk image", path))
	case !st.Mode().IsRegular() && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0):
		return d, withCode(exitBadImage, fmt.Errorf("--disk %s is not a regular file or block device", path))
	}
	d.Path = path
	return d, nil
}

// parseNet parses --net tap=NAME[,mac=XX:XX:XX:XX:XX:XX].
func parseNet(spec string) (vmm.NetConfig, error) {
	var n vmm.NetConfig
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return n, usageErrorf("--net %q: want tap=NAME[,mac=XX:XX:XX:XX:XX:XX]", spec)
		}
		switch k {
		case "tap":
			if err := virtio.ValidTapName(v); err != nil {
				return n, usageErrorf("--net %s: %v", spec, err)
			}
			n.Tap = v
		case "mac":
			mac, err := net.ParseMAC(v)
			if err != nil || len(mac) != 6 {
				return n, usageErrorf("--net %s: bad MAC %q: want six hex pairs like 02:00:00:00:00:01", spec, v)
			}
			if mac[0]&1 != 0 {
				return n, usageErrorf("--net %s: MAC %s is a multicast address; a NIC needs a unicast one (first byte even)", spec, v)
			}
			n.MAC = mac
		default:
			return n, usageErrorf("--net %s: unknown key %q (want tap or mac)", spec, k)
		}
	}
	if n.Tap == "" {
		return n, usageErrorf("--net %q: tap=NAME is required", spec)
	}
	return n, nil
}
