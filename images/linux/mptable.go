package linux

import (
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
)

// MP table (Intel MultiProcessor Specification 1.4): how a kernel without
// ACPI finds its CPUs, its I/O APIC and the ISA interrupt routing. Modelled
// on Firecracker's arch/src/x86_64/mptable.rs, written from the spec.

// MaxCPUs is the most CPUs an MP table can describe here: APIC ids are 8
// bits, 0xff is the broadcast id and the I/O APIC takes the id after the
// last CPU.
const MaxCPUs = 254

// MPIRQs is the number of I/O APIC pins that get an interrupt entry: all 24
// pins of KVM's in-kernel I/O APIC, identity-mapped (bus IRQ n → pin n, as
// KVM's default GSI routing has it). IRQs 0–15 are the ISA ones (virtio-mmio
// devices use 5 and up, which also work through the PIC); 16–23 are spare.
const MPIRQs = 24

const (
	mpfSize       = 16
	mpcHeaderSize = 44
	mpcCPUSize    = 20
	mpcEntrySize  = 8 // bus, I/O APIC, I/O interrupt and local interrupt entries

	mpSpecRev    = 4
	apicVersion  = 0x14 // integrated (x)APIC
	mpProcessor  = 0
	mpBus        = 1
	mpIOAPIC     = 2
	mpIntSrc     = 3
	mpLIntSrc    = 4
	mpIntINT     = 0
	mpIntNMI     = 1
	mpIntExtINT  = 3
	cpuEnabled   = 1
	cpuBSP       = 2
	cpuSignature = 0x600       // family 6
	cpuFeatures  = 0x200 | 0x1 // APIC, FPU
	busISA       = 0
	ioapicUsable = 1
	lapicAllCPUs = 0xff
	mpIRQDefault = 0 // polarity and trigger "conforms to the bus"
)

// MPTableSize returns the bytes WriteMPTable writes for cpus CPUs.
func MPTableSize(cpus int) int {
	return mpfSize + mpcHeaderSize + cpus*mpcCPUSize +
		mpcEntrySize + // ISA bus
		mpcEntrySize + // I/O APIC
		MPIRQs*mpcEntrySize + // I/O interrupt entries
		2*mpcEntrySize // local interrupt entries: ExtINT on LINT0, NMI on LINT1
}

// WriteMPTable writes an MP floating pointer at MPTableAddr and the MP
// configuration table right after it, describing cpus CPUs (LAPIC ids 0 to
// cpus-1, CPU 0 the bootstrap processor, LAPICs at LAPICAddr), one ISA bus,
// one I/O APIC with id cpus at IOAPICAddr, identity interrupt routing for
// bus IRQs 0–23 to I/O APIC pins 0–23, ExtINT on the bootstrap CPU's LINT0
// and NMI on every CPU's LINT1. The table lies inside [EBDAStart, HighMemStart), which E820
// reports reserved.
func WriteMPTable(mem images.Memory, cpus int) error {
	if cpus < 1 || cpus > MaxCPUs {
		return fmt.Errorf("mp table: %d CPUs: want 1 to %d", cpus, MaxCPUs)
	}
	b := MPTable(MPTableAddr, cpus)
	if MPTableAddr+uint64(len(b)) > HighMemStart || !images.InRAM(mem.Regions(), MPTableAddr, uint64(len(b))) {
		return errorf(ErrDoesNotFit, "MP table [0x%x, +%d) is not in guest RAM below 1 MiB (%s)", MPTableAddr, len(b), describeRegions(mem.Regions()))
	}
	if _, err := mem.WriteAt(b, MPTableAddr); err != nil {
		return fmt.Errorf("write MP table at 0x%x: %w", MPTableAddr, err)
	}
	return nil
}

// MPTable returns the bytes of the MP floating pointer followed by the
// configuration table, for placement at guest-physical address addr.
func MPTable(addr uint64, cpus int) []byte {
	le := binary.LittleEndian
	b := make([]byte, MPTableSize(cpus))

	// MP floating pointer structure.
	copy(b[0:], "_MP_")
	le.PutUint32(b[4:], uint32(addr+mpfSize)) // physical address of the configuration table
	b[8] = 1                                  // length in 16-byte paragraphs
	b[9] = mpSpecRev
	// b[11] feature byte 1 = 0: a configuration table is present.
	// b[12] feature byte 2 = 0: virtual wire mode, no IMCR.
	b[10] = checksum(b[:mpfSize])

	// Configuration table entries, after its 44-byte header.
	t := b[mpfSize:]
	off := mpcHeaderSize
	ioapicID := byte(cpus)
	for i := range cpus {
		e := t[off:]
		e[0] = mpProcessor
		e[1] = byte(i) // LAPIC id
		e[2] = apicVersion
		e[3] = cpuEnabled
		if i == 0 {
			e[3] |= cpuBSP
		}
		le.PutUint32(e[4:], cpuSignature)
		le.PutUint32(e[8:], cpuFeatures)
		off += mpcCPUSize
	}
	e := t[off:]
	e[0] = mpBus
	e[1] = busISA
	copy(e[2:8], "ISA   ")
	off += mpcEntrySize

	e = t[off:]
	e[0] = mpIOAPIC
	e[1] = ioapicID
	e[2] = apicVersion
	e[3] = ioapicUsable
	le.PutUint32(e[4:], IOAPICAddr)
	off += mpcEntrySize

	for irq := range MPIRQs {
		e = t[off:]
		e[0] = mpIntSrc
		e[1] = mpIntINT
		le.PutUint16(e[2:], mpIRQDefault)
		e[4] = busISA
		e[5] = byte(irq) // source bus IRQ
		e[6] = ioapicID
		e[7] = byte(irq) // I/O APIC pin
		off += mpcEntrySize
	}
	for lint, l := range []struct{ typ, dest byte }{
		{mpIntExtINT, 0},         // LINT0: ExtINT (the 8259 output), on the BSP
		{mpIntNMI, lapicAllCPUs}, // LINT1: NMI, on every CPU
	} {
		e = t[off:]
		e[0] = mpLIntSrc
		e[1] = l.typ
		le.PutUint16(e[2:], mpIRQDefault)
		e[4] = busISA
		e[5] = 0
		e[6] = l.dest
		e[7] = byte(lint)
		off += mpcEntrySize
	}

	// Configuration table header.
	copy(t[0:], "PCMP")
	le.PutUint16(t[4:], uint16(off)) // base table length
	t[6] = mpSpecRev
	copy(t[8:16], "MICROVM ")      // OEM id
	copy(t[16:28], "MICROVM-KVM ") // product id
	// t[28:32] OEM table pointer, t[32:34] OEM table size: none.
	le.PutUint16(t[34:], uint16(cpus+1+1+MPIRQs+2)) // entry count
	le.PutUint32(t[36:], LAPICAddr)
	// t[40:42] extended table length, t[42] its checksum: none.
	t[7] = checksum(t[:off])
	return b
}

// checksum returns the byte that makes b (whose checksum byte is still 0)
// sum to zero.
func checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}
