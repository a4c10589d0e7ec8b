package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

// virtio-blk feature bits (virtio 1.2, 5.2.3).
const (
	BlkFSegMax = 1 << 2
	BlkFRO     = 1 << 5
	BlkFFlush  = 1 << 9
)

// virtio-blk request types and statuses (virtio 1.2, 5.2.6).
const (
	BlkTIn    = 0
	BlkTOut   = 1
	BlkTFlush = 4
	BlkTGetID = 8

	BlkSOK     = 0
	BlkSIOErr  = 1
	BlkSUnsupp = 2
)

// Block geometry.
const (
	// SectorSize is the unit of virtio-blk addresses and capacity.
	SectorSize = 512
	// BlkIDLen is the length of the GET_ID answer.
	BlkIDLen = 20
	// blkHeaderSize is the request header: type u32, reserved u32, sector u64.
	blkHeaderSize = 16
	blkQueueSize  = 256
	blkConfigSize = 64
)

// BlkFile is what a block device reads and writes: an *os.File.
type BlkFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// BlkStats counts a block device's requests.
type BlkStats struct {
	Reads, Writes, Flushes, GetIDs, Errors, Unsupported uint64
}

// Blk is a virtio-blk device backed by a file (or block device). Its
// capacity is the file's size at open in 512-byte sectors; a tail shorter
// than a sector is unreachable. Requests outside the capacity fail with
// IOERR, so the file is never written past its end; a read-only device
// offers VIRTIO_BLK_F_RO and fails every write with IOERR.
type Blk struct {
	f        BlkFile
	closer   io.Closer
	readOnly bool
	sectors  uint64
	id       [BlkIDLen]byte
	config   []byte

	reads, writes, flushes, getIDs, errors, unsupported atomic.Uint64
}

// OpenBlk opens the file at path as a block device: read-write unless
// readOnly. The device's id (GET_ID) is the file's base name, cut to 20
// bytes.
func OpenBlk(path string, readOnly bool) (*Blk, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, errors.Unwrap(err))
	}
	switch {
	case st.IsDir():
		return nil, fmt.Errorf("disk %s is a directory, not a disk image", path)
	case !st.Mode().IsRegular() && (st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0):
		return nil, fmt.Errorf("disk %s is not a regular file or block device", path)
	}
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, errors.Unwrap(err))
	}
	b, err := BlkFromFile(f, filepath.Base(path), readOnly)
	if err != nil {
		f.Close()
		return nil, err
	}
	b.closer = f
	return b, nil
}

// BlkFromFile makes a block device of an already-open image (one opened
// before the VMM entered a jail, say); the caller keeps ownership of f.
// name is the device's id (GET_ID), cut to 20 bytes.
func BlkFromFile(f *os.File, name string, readOnly bool) (*Blk, error) {
	// The size of what was opened (a block device reports it by seeking).
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("disk %s: size: %w", name, err)
	}
	return NewBlk(f, size, readOnly, name), nil
}

// NewBlk returns a block device over f, size bytes long.
func NewBlk(f BlkFile, size int64, readOnly bool, id string) *Blk {
	b := &Blk{f: f, readOnly: readOnly}
	if size > 0 {
		b.sectors = uint64(size) / SectorSize
	}
	copy(b.id[:], id)
	b.config = make([]byte, blkConfigSize)
	binary.LittleEndian.PutUint64(b.config[0:], b.sectors)       // capacity
	binary.LittleEndian.PutUint32(b.config[12:], blkQueueSize-2) // seg_max: the chain has a header and a status too
	return b
}

// Close closes the file when OpenBlk opened it.
func (b *Blk) Close() error {
	if b.closer == nil {
		return nil
	}
	return b.closer.Close()
}

// Sectors returns the capacity in 512-byte sectors.
func (b *Blk) Sectors() uint64 { return b.sectors }

// ReadOnly reports whether the device refuses writes.
func (b *Blk) ReadOnly() bool { return b.readOnly }

// Stats returns the request counters.
func (b *Blk) Stats() BlkStats {
	return BlkStats{
		Reads: b.reads.Load(), Writes: b.writes.Load(), Flushes: b.flushes.Load(),
		GetIDs: b.getIDs.Load(), Errors: b.errors.Load(), Unsupported: b.unsupported.Load(),
	}
}

// DeviceID implements Backend.
func (b *Blk) DeviceID() DeviceID { return DeviceBlock }

// Features implements Backend.
func (b *Blk) Features() uint64 {
	f := uint64(BlkFFlush | BlkFSegMax)
	if b.readOnly {
		f |= BlkFRO
	}
	return f
}

// Config implements Backend.
func (b *Blk) Config() []byte { return b.config }

// QueueSizes implements Backend: one request queue.
func (b *Blk) QueueSizes() []uint16 { return []uint16{blkQueueSize} }

// Process implements Backend: one request. The chain holds the 16-byte
// header (readable), the data (readable for OUT, writable for IN and
// GET_ID) and a status byte, the last writable byte. A chain without a
// status byte cannot be answered: the device needs a reset. Everything else
// is answered in the status.
func (b *Blk) Process(_ int, c *Chain) (uint32, error) {
	if c.WriteLen == 0 {
		return 0, queueErrorf("block request without a status byte")
	}
	status, written := b.request(c)
	if status != BlkSOK {
		if status == BlkSUnsupp {
			b.unsupported.Add(1)
		} else {
			b.errors.Add(1)
		}
		written = 0
	}
	c.WriteAt([]byte{status}, c.WriteLen-1)
	return uint32(written + 1), nil
}

// request performs the request and returns its status and how many data
// bytes it wrote into the chain.
func (b *Blk) request(c *Chain) (status byte, written uint64) {
	var hdr [blkHeaderSize]byte
	if c.ReadAt(hdr[:], 0) < blkHeaderSize {
		return BlkSIOErr, 0
	}
	typ := binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])
	switch typ {
	case BlkTIn:
		n := c.WriteLen - 1
		if !b.inRange(sector, n) {
			return BlkSIOErr, 0
		}
		b.reads.Add(1)
		if !b.transfer(c.Writable, n, sector*SectorSize, false) {
			return BlkSIOErr, 0
		}
		return BlkSOK, n
	case BlkTOut:
		if b.readOnly {
			return BlkSIOErr, 0
		}
		n := c.ReadLen - blkHeaderSize
		if !b.inRange(sector, n) {
			return BlkSIOErr, 0
		}
		b.writes.Add(1)
		if !b.transfer(c.Readable, n, sector*SectorSize, true) {
			return BlkSIOErr, 0
		}
		return BlkSOK, 0
	case BlkTFlush:
		b.flushes.Add(1)
		if !b.readOnly {
			if err := b.f.Sync(); err != nil {
				return BlkSIOErr, 0
			}
		}
		return BlkSOK, 0
	case BlkTGetID:
		b.getIDs.Add(1)
		n := min(c.WriteLen-1, BlkIDLen)
		return BlkSOK, uint64(c.WriteAt(b.id[:n], 0))
	}
	return BlkSUnsupp, 0
}

// inRange reports whether n bytes at sector are whole sectors inside the
// capacity.
func (b *Blk) inRange(sector, n uint64) bool {
	return n%SectorSize == 0 && sector <= b.sectors && n/SectorSize <= b.sectors-sector
}

// transfer moves n bytes between the file at off and the chain's buffers
// (for a write, those after the header).
func (b *Blk) transfer(bufs [][]byte, n, off uint64, write bool) bool {
	start := uint64(0)
	if write {
		start = blkHeaderSize
	}
	ok := true
	visit(bufs, start, n, func(p []byte) bool {
		var err error
		if write {
			_, err = b.f.WriteAt(p, int64(off))
		} else {
			_, err = b.f.ReadAt(p, int64(off))
		}
		if err != nil {
			ok = false
			return false
		}
		off += uint64(len(p))
		return true
	})
	return ok
}
