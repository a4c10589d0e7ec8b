package vmm

import (
	"errors"
	"fmt"

	"github.com/microvm/microvm/images"
	"golang.org/x/sys/unix"
)

// Guest-physical RAM layout: RAM starts at 0 and runs up to MMIOGapStart;
// what does not fit continues at 4 GiB. The gap holds device MMIO (the
// control page, virtio-mmio devices, the IOAPIC and local APICs).
const (
	MMIOGapStart = 0xc0000000  // 3 GiB
	MMIOGapEnd   = 0x100000000 // 4 GiB
)

// ErrGuestAddress is wrapped by every guest-memory access that falls
// outside RAM.
var ErrGuestAddress = errors.New("guest address outside RAM")

// Memory is guest RAM: one anonymous mapping split into regions at their
// guest-physical addresses. Every access by guest address is bounds-checked
// and fails with an error wrapping ErrGuestAddress, never a panic.
type Memory struct {
	host    []byte
	regions []memRegion
}

type memRegion struct {
	images.Region
	host []byte
}

// NewMemory maps size bytes of guest RAM (lazily: pages cost host memory
// only when touched).
func NewMemory(size uint64) (*Memory, error) {
	if size == 0 || size%pageSize != 0 {
		return nil, fmt.Errorf("guest memory size %d is not a positive multiple of %d", size, pageSize)
	}
	host, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map %d MiB of guest memory: %w", size>>20, err)
	}
	m := &Memory{host: host}
	low := min(size, MMIOGapStart)
	m.regions = append(m.regions, memRegion{images.Region{Start: 0, Size: low}, host[:low]})
	if size > low {
		m.regions = append(m.regions, memRegion{images.Region{Start: MMIOGapEnd, Size: size - low}, host[low:]})
	}
	return m, nil
}

// Resident returns how many bytes of guest RAM are backed by host memory:
// the pages the guest or the VMM touched (mincore).
func (m *Memory) Resident() (uint64, error) {
	vec := make([]byte, (len(m.host)+pageSize-1)/pageSize)
	if err := mincore(m.host, vec); err != nil {
		return 0, fmt.Errorf("mincore guest memory: %w", err)
	}
	var n uint64
	for _, v := range vec {
		n += uint64(v & 1)
	}
	return n * pageSize, nil
}

// Close unmaps guest RAM. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	if m.host == nil {
		return nil
	}
	err := unix.Munmap(m.host)
	m.host, m.regions = nil, nil
	return err
}

// Size returns the total RAM size in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.host)) }

// Regions lists RAM by guest-physical address.
func (m *Memory) Regions() []images.Region {
	rs := make([]images.Region, len(m.regions))
	for i, r := range m.regions {
		rs[i] = r.Region
	}
	return rs
}

// Slice returns the host bytes backing [gpa, gpa+n), which must lie in one
// RAM region. The slice aliases guest memory.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if r.Contains(gpa, n) {
			off := gpa - r.Start
			return r.host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrGuestAddress, gpa, n)
}

// ReadAt copies guest memory at guest-physical address off into p.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative address %d", ErrGuestAddress, off)
	}
	b, err := m.Slice(uint64(off), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}

// WriteAt copies p into guest memory at guest-physical address off.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative address %d", ErrGuestAddress, off)
	}
	b, err := m.Slice(uint64(off), uint64(len(p)))
	if err != nil {
		return 0, err
	}
	return copy(b, p), nil
}
