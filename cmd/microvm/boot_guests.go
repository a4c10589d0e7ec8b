package main

import (
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
)

// guestConvFlags are boot's opt-ins for guests written for other VMMs
// (docs/guests.md).
type guestConvFlags struct {
	debugExit bool
	irqchip   bool
}

// addGuestConvFlags registers --debug-exit and --irqchip on boot.
func addGuestConvFlags(cmd *cobra.Command, f *guestConvFlags) {
	fl := cmd.Flags()
	fl.BoolVar(&f.debugExit, "debug-exit", false, "add QEMU's isa-debug-exit at port 0xf4: a write of V ends the VM with status (V<<1)|1")
	fl.BoolVar(&f.irqchip, "irqchip", false, "give a tiny guest the in-kernel PIC, IOAPIC and local APICs: vCPUs but 0 wait for the guest's INIT/SIPI (hlt then no longer ends the VM)")
	cmd.Long += `

Guests written for other VMMs (docs/guests.md): every guest finds a CMOS/RTC
at ports 0x70/0x71 (host time, UTC) and a minimal fw_cfg at 0x510/0x511;
--debug-exit adds isa-debug-exit at 0xf4 (status (V<<1)|1, above 119 reported
as 120), --irqchip lets a tiny guest start its own APs by INIT/SIPI.`
}

// apply sets the opt-ins in cfg.
func (f *guestConvFlags) apply(cfg *vmm.Config) {
	cfg.DebugExit = f.debugExit
	cfg.IRQChip = f.irqchip
}
