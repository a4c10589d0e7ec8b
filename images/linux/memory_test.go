package linux

import (
	"fmt"
	"io"
	"sort"

	"github.com/microvm/microvm/images"
)

// fakeMemory is guest RAM backed by sparse []byte pages, laid out like the
// VMM does: [0, min(size, 3 GiB)) and [4 GiB, 4 GiB + rest). Pages are
// allocated on first write so a 4 GiB guest costs only what is touched.
type fakeMemory struct {
	regions []images.Region
	pages   map[uint64][]byte // page number → 64 KiB page
	writes  int
}

const fakePage = 64 << 10

func newFakeMemory(size uint64) *fakeMemory {
	const lowMax = 3 << 30
	m := &fakeMemory{pages: map[uint64][]byte{}}
	low := min(size, lowMax)
	m.regions = append(m.regions, images.Region{Start: 0, Size: low})
	if size > lowMax {
		m.regions = append(m.regions, images.Region{Start: 4 << 30, Size: size - lowMax})
	}
	return m
}

func (m *fakeMemory) Regions() []images.Region { return m.regions }

func (m *fakeMemory) check(off int64, n int) error {
	if off < 0 || !images.InRAM(m.regions, uint64(off), uint64(n)) {
		return fmt.Errorf("fake memory: access [0x%x, +0x%x) outside RAM", off, n)
	}
	return nil
}

func (m *fakeMemory) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(off, len(p)); err != nil {
		return 0, err
	}
	for i := 0; i < len(p); {
		a := uint64(off) + uint64(i)
		pg, o := a/fakePage, a%fakePage
		n := min(len(p)-i, int(fakePage-o))
		if b, ok := m.pages[pg]; ok {
			copy(p[i:i+n], b[o:])
		} else {
			clear(p[i : i+n])
		}
		i += n
	}
	return len(p), nil
}

func (m *fakeMemory) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(off, len(p)); err != nil {
		return 0, err
	}
	m.writes++
	for i := 0; i < len(p); {
		a := uint64(off) + uint64(i)
		pg, o := a/fakePage, a%fakePage
		n := min(len(p)-i, int(fakePage-o))
		b, ok := m.pages[pg]
		if !ok {
			b = make([]byte, fakePage)
			m.pages[pg] = b
		}
		copy(b[o:], p[i:i+n])
		i += n
	}
	return len(p), nil
}

// read returns n bytes at addr or fails the caller through panic-free error.
func (m *fakeMemory) read(addr uint64, n int) []byte {
	b := make([]byte, n)
	if _, err := m.ReadAt(b, int64(addr)); err != nil {
		return nil
	}
	return b
}

// touched lists the written page ranges, for debugging.
func (m *fakeMemory) touched() []uint64 {
	var ps []uint64
	for p := range m.pages {
		ps = append(ps, p*fakePage)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

var _ images.Memory = (*fakeMemory)(nil)
var _ io.ReaderAt = (*fakeMemory)(nil)
