package devices

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
)

// FWCfg is a minimal QEMU fw_cfg device, traditional interface only (no
// DMA): a 16-bit selector at port 0x510 (offset 0) picks an item, and each
// read of the data port 0x511 (offset 1) returns its next byte, zero past
// the end. It holds the signature "QEMU", the interface ID 1, the RAM size,
// the CPU count, and a file directory. Writes to the data port are ignored
// (items are read-only), as are selectors nobody knows: they read as zeros.
type FWCfg struct {
	mu    sync.Mutex
	items map[uint16][]byte
	cur   []byte
	pos   int
}

// fw_cfg ports and keys (QEMU's docs/specs/fw_cfg.rst).
const (
	FWCfgBase = 0x510
	FWCfgSize = 2

	FWCfgSignature = 0x0000
	FWCfgID        = 0x0001
	FWCfgRAMSize   = 0x0003
	FWCfgNbCPUs    = 0x0005
	FWCfgMaxCPUs   = 0x000f
	FWCfgFileDir   = 0x0019
	FWCfgFileFirst = 0x0020

	fwCfgWriteBit  = 0x4000 // selector bit asking for write access: ignored
	fwCfgMaxName   = 56     // file names, NUL included
	fwCfgIDTradnal = 1      // traditional interface, no DMA
)

// FWCfgFile is a named item of the file directory.
type FWCfgFile struct {
	Name string
	Data []byte
}

// NewFWCfg returns a fw_cfg device for a guest with ramBytes of RAM and
// cpus vCPUs, whose file directory lists files (in name order, selectors
// from 0x20). Names must be shorter than 56 bytes and unique.
func NewFWCfg(ramBytes uint64, cpus int, files []FWCfgFile) (*FWCfg, error) {
	d := &FWCfg{items: map[uint16][]byte{}}
	d.items[FWCfgSignature] = []byte("QEMU")
	d.items[FWCfgID] = binary.LittleEndian.AppendUint32(nil, fwCfgIDTradnal)
	d.items[FWCfgRAMSize] = binary.LittleEndian.AppendUint64(nil, ramBytes)
	d.items[FWCfgNbCPUs] = binary.LittleEndian.AppendUint16(nil, uint16(cpus))
	d.items[FWCfgMaxCPUs] = binary.LittleEndian.AppendUint16(nil, uint16(cpus))
	files = append([]FWCfgFile(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	if len(files) > fwCfgWriteBit-FWCfgFileFirst {
		return nil, fmt.Errorf("fw_cfg: %d files, at most %d", len(files), fwCfgWriteBit-FWCfgFileFirst)
	}
	// The directory is big-endian: count, then size, select, reserved, name.
	dir := binary.BigEndian.AppendUint32(nil, uint32(len(files)))
	for i, f := range files {
		if len(f.Name) == 0 || len(f.Name) >= fwCfgMaxName {
			return nil, fmt.Errorf("fw_cfg file name %q: want 1 to %d bytes", f.Name, fwCfgMaxName-1)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return nil, fmt.Errorf("fw_cfg file %q given twice", f.Name)
		}
		if uint64(len(f.Data)) > 1<<32-1 {
			return nil, fmt.Errorf("fw_cfg file %q: %d bytes is too large", f.Name, len(f.Data))
		}
		sel := uint16(FWCfgFileFirst + i)
		dir = binary.BigEndian.AppendUint32(dir, uint32(len(f.Data)))
		dir = binary.BigEndian.AppendUint16(dir, sel)
		dir = binary.BigEndian.AppendUint16(dir, 0)
		var name [fwCfgMaxName]byte
		copy(name[:], f.Name)
		dir = append(dir, name[:]...)
		d.items[sel] = f.Data
	}
	d.items[FWCfgFileDir] = dir
	d.cur = d.items[FWCfgSignature]
	return d, nil
}

// Read returns the selected item's next bytes at the data port (offset 1);
// the selector port reads as zero.
func (d *FWCfg) Read(offset uint64, data []byte) {
	clear(data)
	if offset != 1 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range data {
		if d.pos < len(d.cur) {
			data[i] = d.cur[d.pos]
			d.pos++
		}
	}
}

// Write at the selector port (offset 0) selects an item and rewinds it.
func (d *FWCfg) Write(offset uint64, data []byte) {
	if offset != 0 {
		return
	}
	sel := uint16(le(data)) &^ fwCfgWriteBit
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur, d.pos = d.items[sel], 0
}
