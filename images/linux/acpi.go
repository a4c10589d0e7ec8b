package linux

import (
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
)

// ACPI tables (ACPI 6.5): how a kernel built without an MP table parser or
// without virtio-mmio command-line devices — Debian's cloud kernel is both —
// finds its CPUs, its I/O APIC, the serial port and the virtio-mmio devices.
// Like Firecracker's, the platform is "hardware-reduced" (no PM timer, no
// SCI, no fixed-feature registers, no 8259 PIC: Linux then takes its timer
// interrupts from the local APIC), and the DSDT holds COM1 (PNP0501) and one
// LNRO0005 device per virtio-mmio transport, the ID Linux's virtio_mmio
// driver matches.
//
// Layout: the RSDP at ACPIAddr, where Linux's legacy scan of
// [0xe0000, 0x100000) finds it, and the XSDT, FADT, MADT and DSDT after it,
// all inside [EBDAStart, HighMemStart), which E820 reports reserved.

// ACPIAddr is where WriteACPI puts the RSDP; the other tables follow it.
const ACPIAddr = 0xe0000

// MaxACPIDevices bounds the virtio-mmio devices the DSDT describes.
const MaxACPIDevices = 64

// MMIODevice is a virtio-mmio transport for the DSDT: its register window
// and the GSI (I/O APIC pin) its interrupt arrives on.
type MMIODevice struct {
	Base, Size uint64
	GSI        uint32
}

// COM1, as the DSDT describes it: the 16550 at the first PC serial port.
const (
	com1Port = 0x3f8
	com1Len  = 8
	com1GSI  = 4
)

// ACPI table constants.
const (
	acpiHeaderSize = 36
	rsdpSize       = 36
	fadtSize       = 276 // ACPI 6.5 FADT, hypervisor vendor identity included
	acpiOEMID      = "MICRVM"
	acpiCreatorID  = "MVM "

	fadtRevision, fadtMinor = 6, 5
	madtRevision            = 5
	dsdtRevision            = 2 // 64-bit AML integers
	xsdtRevision            = 1

	fadtFlagPwrButton     = 1 << 4  // power button is a control-method device (there is none)
	fadtFlagSlpButton     = 1 << 5  // likewise the sleep button
	fadtFlagHWReducedACPI = 1 << 20 // no fixed hardware: no PM timer, SCI, PM1 blocks
	iapcVGANotPresent     = 1 << 2
	iapcMSINotSupported   = 1 << 3
	iapcPCIeASPMControls  = 1 << 4
	iapcCMOSRTCAbsent     = 1 << 5

	madtPCATCompat           = 1 // the 8259 pair exists (KVM's irqchip has one)
	madtLocalAPIC            = 0
	madtIOAPIC               = 1
	madtLocalAPICNMI         = 4
	madtEnabled              = 1
	madtNMIFlags             = 0x5 // active high, edge triggered
	madtAllProcessors        = 0xff
	ioapicPins               = 24
	mmio32Limit       uint64 = 1 << 32
)

// ACPITablesSize bounds the bytes ACPITables returns; the tables must fit
// in [ACPIAddr, HighMemStart).
const ACPITablesSize = HighMemStart - ACPIAddr

// WriteACPI writes the RSDP at ACPIAddr and the XSDT, FADT, MADT and DSDT
// after it, describing cpus CPUs (local APIC ids 0 to cpus-1), the I/O APIC
// (id cpus, like the MP table), COM1 and the given virtio-mmio devices.
func WriteACPI(mem images.Memory, cpus int, devices []MMIODevice) error {
	b, err := ACPITables(ACPIAddr, cpus, devices)
	if err != nil {
		return err
	}
	if !images.InRAM(mem.Regions(), ACPIAddr, uint64(len(b))) {
		return errorf(ErrDoesNotFit, "ACPI tables [0x%x, +%d) are not in guest RAM (%s)", ACPIAddr, len(b), describeRegions(mem.Regions()))
	}
	if _, err := mem.WriteAt(b, ACPIAddr); err != nil {
		return fmt.Errorf("write ACPI tables at 0x%x: %w", ACPIAddr, err)
	}
	return nil
}

// ACPITables returns the RSDP followed by the XSDT, FADT, MADT and DSDT
// (each 16-byte aligned), for placement at guest-physical address addr.
func ACPITables(addr uint64, cpus int, devices []MMIODevice) ([]byte, error) {
	if cpus < 1 || cpus > MaxCPUs {
		return nil, fmt.Errorf("acpi: %d CPUs: want 1 to %d", cpus, MaxCPUs)
	}
	if len(devices) > MaxACPIDevices {
		return nil, fmt.Errorf("acpi: %d devices: at most %d", len(devices), MaxACPIDevices)
	}
	for i, d := range devices {
		if d.Size == 0 || d.Base+d.Size > mmio32Limit || d.Base+d.Size < d.Base {
			return nil, fmt.Errorf("acpi: device %d: window [0x%x, +0x%x) must be non-empty and below 4 GiB", i, d.Base, d.Size)
		}
		if d.GSI >= ioapicPins {
			return nil, fmt.Errorf("acpi: device %d: GSI %d: the I/O APIC has pins 0 to %d", i, d.GSI, ioapicPins-1)
		}
	}
	dsdt, err := dsdtTable(devices)
	if err != nil {
		return nil, err
	}
	madt := madtTable(cpus)

	align := func(n int) int { return (n + 15) &^ 15 }
	xsdtOff := align(rsdpSize)
	fadtOff := align(xsdtOff + acpiHeaderSize + 2*8)
	madtOff := align(fadtOff + fadtSize)
	dsdtOff := align(madtOff + len(madt))
	total := dsdtOff + len(dsdt)
	if total > ACPITablesSize {
		return nil, errorf(ErrDoesNotFit, "ACPI tables need %d bytes; [0x%x, 0x%x) holds %d", total, ACPIAddr, HighMemStart, ACPITablesSize)
	}
	at := func(off int) uint64 { return addr + uint64(off) }

	out := make([]byte, total)
	copy(out[0:], rsdp(at(xsdtOff)))
	copy(out[xsdtOff:], xsdtTable(at(fadtOff), at(madtOff)))
	copy(out[fadtOff:], fadtTable(at(dsdtOff)))
	copy(out[madtOff:], madt)
	copy(out[dsdtOff:], dsdt)
	return out, nil
}

// rsdp returns the ACPI 2.0+ root system description pointer.
func rsdp(xsdt uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], acpiOEMID)
	b[15] = 2 // revision: ACPI 2.0 or later, XSDT used
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = checksum(b[:20])        // ACPI 1.0 checksum over the first 20 bytes
	b[32] = checksum(b[:rsdpSize]) // extended checksum over all of it
	return b
}

// sdt returns a table: the standard 36-byte header, then body, with the
// length and checksum filled in.
func sdt(sig string, rev byte, tableID string, body []byte) []byte {
	b := make([]byte, acpiHeaderSize, acpiHeaderSize+len(body))
	copy(b[0:4], sig)
	binary.LittleEndian.PutUint32(b[4:], uint32(acpiHeaderSize+len(body)))
	b[8] = rev
	copy(b[10:16], acpiOEMID)
	copy(b[16:24], fmt.Sprintf("%-8s", tableID))
	binary.LittleEndian.PutUint32(b[24:], 1) // OEM revision
	copy(b[28:32], acpiCreatorID)
	binary.LittleEndian.PutUint32(b[32:], 1) // creator revision
	b = append(b, body...)
	b[9] = checksum(b)
	return b
}

func xsdtTable(entries ...uint64) []byte {
	var body []byte
	for _, e := range entries {
		body = binary.LittleEndian.AppendUint64(body, e)
	}
	return sdt("XSDT", xsdtRevision, "MVMXSDT", body)
}

// fadtTable returns a hardware-reduced FADT pointing at the DSDT.
func fadtTable(dsdt uint64) []byte {
	le := binary.LittleEndian
	body := make([]byte, fadtSize-acpiHeaderSize)
	f := func(off int) []byte { return body[off-acpiHeaderSize:] } // offsets as in the spec's table
	le.PutUint32(f(40), uint32(dsdt))                              // DSDT (32-bit)
	le.PutUint16(f(109), iapcVGANotPresent|iapcMSINotSupported|iapcPCIeASPMControls|iapcCMOSRTCAbsent)
	le.PutUint32(f(112), fadtFlagHWReducedACPI|fadtFlagPwrButton|fadtFlagSlpButton)
	f(131)[0] = fadtMinor
	le.PutUint64(f(140), dsdt) // X_DSDT
	copy(f(268), "MICROVM ")   // hypervisor vendor identity
	return sdt("FACP", fadtRevision, "MVMFACP", body)
}

// madtTable returns the MADT: a local APIC per CPU, the I/O APIC (GSIs
// 0–23 identity-mapped to its pins, as KVM routes them) and NMI on every
// CPU's LINT1 — the MP table's picture, in ACPI terms.
func madtTable(cpus int) []byte {
	le := binary.LittleEndian
	body := le.AppendUint32(nil, LAPICAddr)
	body = le.AppendUint32(body, madtPCATCompat)
	for i := range cpus {
		body = append(body, madtLocalAPIC, 8, byte(i), byte(i))
		body = le.AppendUint32(body, madtEnabled)
	}
	body = append(body, madtIOAPIC, 12, byte(cpus), 0)
	body = le.AppendUint32(body, IOAPICAddr)
	body = le.AppendUint32(body, 0) // GSI base
	body = append(body, madtLocalAPICNMI, 6, madtAllProcessors)
	body = le.AppendUint16(body, madtNMIFlags)
	body = append(body, 1) // LINT1
	return sdt("APIC", madtRevision, "MVMAPIC", body)
}

// dsdtTable returns the DSDT: Scope(\_SB) with COM1 and one LNRO0005
// device per virtio-mmio transport.
func dsdtTable(devices []MMIODevice) ([]byte, error) {
	com1, err := amlFixedDevice("COM1", "PNP0501", 0, false,
		resIOPort(com1Port, com1Len), resInterrupt(com1GSI))
	if err != nil {
		return nil, err
	}
	objs := [][]byte{com1}
	for i, d := range devices {
		dev, err := amlFixedDevice(fmt.Sprintf("V%03d", i), "LNRO0005", uint64(i), true,
			resMemory32(uint32(d.Base), uint32(d.Size)), resInterrupt(d.GSI))
		if err != nil {
			return nil, err
		}
		objs = append(objs, dev)
	}
	sb, err := amlScope("_SB_", objs...)
	if err != nil {
		return nil, fmt.Errorf("acpi: DSDT: %w", err)
	}
	return sdt("DSDT", dsdtRevision, "MVMDSDT", sb), nil
}

// amlFixedDevice encodes Device(name) with _HID, _UID, optionally
// _CCA = 1 (cache-coherent DMA, which virtio-mmio does) and a _CRS of the
// given resource descriptors.
func amlFixedDevice(name, hid string, uid uint64, coherent bool, res ...[]byte) ([]byte, error) {
	s, err := amlString(hid)
	if err != nil {
		return nil, err
	}
	crs, err := amlResourceTemplate(res...)
	if err != nil {
		return nil, err
	}
	type named struct {
		name  string
		value []byte
	}
	objs := []named{{"_HID", s}, {"_UID", amlInteger(uid)}}
	if coherent {
		objs = append(objs, named{"_CCA", amlInteger(1)})
	}
	objs = append(objs, named{"_CRS", crs})
	var body [][]byte
	for _, n := range objs {
		b, err := amlName(n.name, n.value)
		if err != nil {
			return nil, err
		}
		body = append(body, b)
	}
	return amlDevice(name, body...)
}
