package vmm

import (
	"github.com/microvm/microvm/devices"
)

// The PC and QEMU conventions that guests written for other VMMs use
// (docs/guests.md): a CMOS/RTC and a minimal fw_cfg for every guest (both
// only answer when asked), and isa-debug-exit when Config.DebugExit asks.

// portDevice is a device placed in port I/O space.
type portDevice struct {
	port, size uint64
	name       string
	dev        devices.Device
}

// qemuDevices returns the CMOS/RTC, fw_cfg and (opt-in) debug-exit devices.
func (m *Machine) qemuDevices() ([]portDevice, error) {
	var low, high uint64
	for _, r := range m.mem.Regions() {
		if r.Start < MMIOGapEnd {
			low += r.Size
		} else {
			high += r.Size
		}
	}
	fw, err := devices.NewFWCfg(m.mem.Size(), m.cfg.CPUs, nil)
	if err != nil {
		return nil, err
	}
	out := []portDevice{
		{devices.CMOSBase, devices.CMOSSize, "cmos", devices.NewCMOS(low, high, nil)},
		{devices.FWCfgBase, devices.FWCfgSize, "fw_cfg", fw},
	}
	if m.cfg.DebugExit {
		out = append(out, portDevice{devices.DebugExitPort, devices.DebugExitSize, "isa-debug-exit", devices.NewDebugExit(m.onExit)})
	}
	return out, nil
}
