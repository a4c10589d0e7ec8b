// Package devices holds the device models of a microvm guest: small state
// machines behind one bus interface, addressed by port or MMIO range. A
// device never touches KVM; it is handed guest memory and an interrupt line.
package devices

import (
	"fmt"
	"sort"
	"sync/atomic"
)

// Device is a model reached by port I/O or MMIO. Offsets are relative to
// the start of the range the device was added at; len(data) is the access
// width (1, 2, 4 or 8). Read fills data; Write consumes it. A port access
// goes to the device owning its first port, even when wider than the rest
// of the range.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// IRQ is an interrupt line a device can raise.
type IRQ interface {
	// Trigger signals the line (an edge).
	Trigger() error
}

// Space is an address space of the bus.
type Space uint8

// The two address spaces of an x86 guest.
const (
	PIO Space = iota
	MMIO
)

func (s Space) String() string {
	if s == PIO {
		return "port"
	}
	return "mmio"
}

type mapping struct {
	base, size uint64
	dev        Device
	name       string
}

// Bus routes accesses to devices. Add every device before the guest runs;
// after that the bus is read-only and safe for concurrent use by vCPUs.
type Bus struct {
	spaces [2][]mapping
	// Unknown accesses, counted: reads return all ones, writes are dropped.
	unknownReads  atomic.Uint64
	unknownWrites atomic.Uint64
	// OnUnknown, when set, is told of every access no device claims.
	OnUnknown func(space Space, addr uint64, write bool, data []byte)
}

// Add maps dev at [base, base+size) in space. Overlapping ranges are refused.
func (b *Bus) Add(space Space, base, size uint64, name string, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("add %s: bad %v range %#x+%#x", name, space, base, size)
	}
	ms := b.spaces[space]
	for _, m := range ms {
		if base < m.base+m.size && m.base < base+size {
			return fmt.Errorf("add %s: %v range %#x+%#x overlaps %s at %#x+%#x", name, space, base, size, m.name, m.base, m.size)
		}
	}
	ms = append(ms, mapping{base: base, size: size, dev: dev, name: name})
	sort.Slice(ms, func(i, j int) bool { return ms[i].base < ms[j].base })
	b.spaces[space] = ms
	return nil
}

func (b *Bus) find(space Space, addr uint64, n int) *mapping {
	ms := b.spaces[space]
	i := sort.Search(len(ms), func(i int) bool { return ms[i].base+ms[i].size > addr })
	if i < len(ms) {
		m := &ms[i]
		// A port access belongs to the device at its first port (an outl
		// to 0x501 is a write to port 0x501); an MMIO access must fit.
		if addr >= m.base && (space == PIO || addr-m.base+uint64(n) <= m.size) {
			return m
		}
	}
	return nil
}

// Read performs a guest read of len(data) bytes at addr. It reports whether
// a device claimed the access; unclaimed reads return all ones.
func (b *Bus) Read(space Space, addr uint64, data []byte) bool {
	if m := b.find(space, addr, len(data)); m != nil {
		m.dev.Read(addr-m.base, data)
		return true
	}
	for i := range data {
		data[i] = 0xff
	}
	b.unknownReads.Add(1)
	if b.OnUnknown != nil {
		b.OnUnknown(space, addr, false, data)
	}
	return false
}

// Write performs a guest write of data at addr. It reports whether a device
// claimed the access; unclaimed writes are dropped.
func (b *Bus) Write(space Space, addr uint64, data []byte) bool {
	if m := b.find(space, addr, len(data)); m != nil {
		m.dev.Write(addr-m.base, data)
		return true
	}
	b.unknownWrites.Add(1)
	if b.OnUnknown != nil {
		b.OnUnknown(space, addr, true, data)
	}
	return false
}

// Unknown returns how many reads and writes no device claimed.
func (b *Bus) Unknown() (reads, writes uint64) {
	return b.unknownReads.Load(), b.unknownWrites.Load()
}
