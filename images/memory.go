// Package images knows what gets booted: it detects image formats and places
// tiny-guest ELF64 and flat binaries into guest memory. Loaders place bytes;
// they know nothing about vCPUs. Linux boot protocol support lives in
// images/linux, the embedded tiny guests in images/guests.
package images

import "io"

// Memory is guest-physical memory as a loader sees it. Offsets passed to
// ReadAt and WriteAt are guest-physical addresses; an access that does not
// lie wholly inside one RAM region fails with an error and changes nothing.
type Memory interface {
	io.ReaderAt
	io.WriterAt
	// Regions lists the guest's RAM, in ascending address order.
	Regions() []Region
}

// Region is one contiguous range of guest RAM.
type Region struct {
	Start uint64 // guest-physical address of the first byte
	Size  uint64 // length in bytes
}

// End returns the first address past the region.
func (r Region) End() uint64 { return r.Start + r.Size }

// Contains reports whether [addr, addr+n) lies wholly inside r.
func (r Region) Contains(addr, n uint64) bool {
	return addr >= r.Start && n <= r.Size && addr-r.Start <= r.Size-n
}

// InRAM reports whether [addr, addr+n) lies wholly inside one region of m.
func InRAM(regions []Region, addr, n uint64) bool {
	for _, r := range regions {
		if r.Contains(addr, n) {
			return true
		}
	}
	return false
}
