// Package virtio implements virtio devices for microvm guests in three
// layers, after rust-vmm: the split virtqueue walker (Queue, Chain), which
// knows no transport; the virtio-mmio transport (MMIODevice, a
// devices.Device); and device backends (Blk, Net, RNG) behind the small
// Backend interface.
//
// Everything the guest controls is untrusted: every descriptor, ring index
// and length is checked against guest memory and the queue size before it
// is used. A malformed queue puts the device in DEVICE_NEEDS_RESET; it never
// panics and never does unbounded work.
package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Memory is guest memory as a device sees it: Slice returns the host bytes
// backing guest-physical [gpa, gpa+n), or an error when any of it is not
// RAM. The slice aliases guest memory. *vmm.Memory satisfies it.
type Memory interface {
	Slice(gpa, n uint64) ([]byte, error)
}

// Descriptor flags (virtio 1.2, 2.7.5).
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4
)

// Ring layout sizes (split virtqueue).
const (
	descSize      = 16
	ringHeader    = 4 // flags u16, idx u16
	usedElemSize  = 8
	ringEventSize = 2 // used_event / avail_event (present even without EVENT_IDX)
)

// MaxQueueSize is the largest split queue the spec allows.
const MaxQueueSize = 32768

// MaxChainBytes bounds the total length of one descriptor chain. The used
// ring reports lengths as u32; microvm is stricter: no backend needs more
// than this per request.
const MaxChainBytes = 1 << 28

// ErrQueue is wrapped by every error about a malformed queue or chain: the
// driver broke the protocol and the device needs a reset.
var ErrQueue = errors.New("malformed virtqueue")

func queueErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrQueue, fmt.Sprintf(format, args...))
}

// Queue is one split virtqueue as the device sees it. The transport sets
// Size and the three ring addresses from the driver's writes, then calls
// Activate; Pop and PushUsed then walk the rings. A Queue is not safe for
// concurrent use: the transport serialises access.
type Queue struct {
	// MaxSize is the largest size the device accepts (QueueNumMax).
	MaxSize uint16
	// Size is the driver's queue size (QueueNum).
	Size uint16
	// DescAddr, AvailAddr and UsedAddr are the guest-physical addresses of
	// the descriptor table, the available (driver) ring and the used
	// (device) ring.
	DescAddr, AvailAddr, UsedAddr uint64

	ready               bool
	desc, avail, used   []byte // validated views of the rings
	lastAvail, nextUsed uint16
	chain               Chain // reused by Pop
}

// NewQueue returns a queue accepting sizes up to maxSize.
func NewQueue(maxSize uint16) *Queue {
	q := &Queue{MaxSize: maxSize}
	q.Reset()
	return q
}

// Reset returns the queue to its state after a device reset: not ready,
// addresses zero, size MaxSize.
func (q *Queue) Reset() {
	max := q.MaxSize
	*q = Queue{MaxSize: max, Size: max}
}

// Ready reports whether the queue was activated.
func (q *Queue) Ready() bool { return q.ready }

// Activate checks the queue's size and ring addresses against mem and the
// spec, and makes the queue ready. On error the queue stays not ready.
func (q *Queue) Activate(mem Memory) error {
	n := uint64(q.Size)
	switch {
	case q.Size == 0:
		return queueErrorf("queue size 0")
	case q.Size > q.MaxSize:
		return queueErrorf("queue size %d exceeds the maximum %d", q.Size, q.MaxSize)
	case q.Size&(q.Size-1) != 0:
		return queueErrorf("queue size %d is not a power of 2", q.Size)
	case q.DescAddr%16 != 0:
		return queueErrorf("descriptor table at %#x is not 16-byte aligned", q.DescAddr)
	case q.AvailAddr%2 != 0:
		return queueErrorf("available ring at %#x is not 2-byte aligned", q.AvailAddr)
	case q.UsedAddr%4 != 0:
		return queueErrorf("used ring at %#x is not 4-byte aligned", q.UsedAddr)
	}
	desc, err := mem.Slice(q.DescAddr, descSize*n)
	if err != nil {
		return queueErrorf("descriptor table: %v", err)
	}
	avail, err := mem.Slice(q.AvailAddr, ringHeader+2*n+ringEventSize)
	if err != nil {
		return queueErrorf("available ring: %v", err)
	}
	used, err := mem.Slice(q.UsedAddr, ringHeader+usedElemSize*n+ringEventSize)
	if err != nil {
		return queueErrorf("used ring: %v", err)
	}
	q.desc, q.avail, q.used = desc, avail, used
	q.lastAvail, q.nextUsed = 0, 0
	q.ready = true
	return nil
}

// Chain is one descriptor chain popped from a queue: the device-readable
// buffers, then the device-writable ones, each already checked to lie in
// guest RAM. The slices alias guest memory and stay valid until the next
// Pop on the same queue.
type Chain struct {
	// Head is the index of the chain's first descriptor, to hand back in
	// PushUsed.
	Head uint16
	// Readable and Writable are the chain's buffers in order.
	Readable, Writable [][]byte
	// ReadLen and WriteLen are the total bytes in each.
	ReadLen, WriteLen uint64
}

// Pop takes the next available chain. ok is false when the driver has
// made none available. An error (wrapping ErrQueue) means the driver
// broke the protocol: the caller should stop using the queue.
func (q *Queue) Pop(mem Memory) (c *Chain, ok bool, err error) {
	if !q.ready {
		return nil, false, nil
	}
	le := binary.LittleEndian
	availIdx := le.Uint16(q.avail[2:])
	pending := availIdx - q.lastAvail
	if pending == 0 {
		return nil, false, nil
	}
	if pending > q.Size {
		return nil, false, queueErrorf("available index %d is %d entries ahead of the device, more than the queue size %d", availIdx, pending, q.Size)
	}
	slot := uint64(q.lastAvail % q.Size)
	head := le.Uint16(q.avail[ringHeader+2*slot:])
	if head >= q.Size {
		return nil, false, queueErrorf("available ring entry %d names descriptor %d, outside the queue (size %d)", slot, head, q.Size)
	}
	c = &q.chain
	c.Head = head
	c.Readable, c.Writable = c.Readable[:0], c.Writable[:0]
	c.ReadLen, c.WriteLen = 0, 0
	idx := head
	// A chain has at most Size descriptors: a longer one loops.
	for n := uint16(0); ; n++ {
		if n >= q.Size {
			return nil, false, queueErrorf("descriptor chain from %d is longer than the queue (size %d): a loop", head, q.Size)
		}
		d := q.desc[descSize*uint64(idx):]
		addr := le.Uint64(d[0:])
		length := uint64(le.Uint32(d[8:]))
		flags := le.Uint16(d[12:])
		next := le.Uint16(d[14:])
		if flags&descFIndirect != 0 {
			return nil, false, queueErrorf("descriptor %d is indirect, a feature this device does not offer", idx)
		}
		if addr+length < addr {
			return nil, false, queueErrorf("descriptor %d: address %#x + length %#x wraps", idx, addr, length)
		}
		if c.ReadLen+c.WriteLen+length > MaxChainBytes {
			return nil, false, queueErrorf("descriptor chain from %d exceeds %d bytes", head, MaxChainBytes)
		}
		buf, err := mem.Slice(addr, length)
		if err != nil {
			return nil, false, queueErrorf("descriptor %d: %v", idx, err)
		}
		if flags&descFWrite != 0 {
			c.Writable = append(c.Writable, buf)
			c.WriteLen += length
		} else {
			if len(c.Writable) > 0 {
				return nil, false, queueErrorf("descriptor %d is device-readable but follows a device-writable one", idx)
			}
			c.Readable = append(c.Readable, buf)
			c.ReadLen += length
		}
		if flags&descFNext == 0 {
			break
		}
		if next >= q.Size {
			return nil, false, queueErrorf("descriptor %d chains to %d, outside the queue (size %d)", idx, next, q.Size)
		}
		idx = next
	}
	q.lastAvail++
	return c, true, nil
}

// Unpop gives the last popped chain back: the next Pop returns it again.
// Call it only right after a successful Pop.
func (q *Queue) Unpop() { q.lastAvail-- }

// PushUsed hands a chain back to the driver with the number of bytes the
// device wrote into it.
func (q *Queue) PushUsed(head uint16, written uint32) error {
	if !q.ready {
		return queueErrorf("push to a queue that is not ready")
	}
	le := binary.LittleEndian
	e := q.used[ringHeader+usedElemSize*uint64(q.nextUsed%q.Size):]
	le.PutUint32(e[0:], uint32(head))
	le.PutUint32(e[4:], written)
	q.nextUsed++
	// Go keeps stores in program order and x86 does not reorder stores:
	// the driver sees the element before the index that publishes it.
	le.PutUint16(q.used[2:], q.nextUsed)
	return nil
}

// ReadAt copies the chain's readable bytes at offset off into p and
// returns how many it copied (fewer than len(p) at the end).
func (c *Chain) ReadAt(p []byte, off uint64) int {
	n := 0
	visit(c.Readable, off, uint64(len(p)), func(b []byte) bool {
		n += copy(p[n:], b)
		return true
	})
	return n
}

// WriteAt copies p into the chain's writable bytes at offset off and
// returns how many it copied (fewer than len(p) at the end).
func (c *Chain) WriteAt(p []byte, off uint64) int {
	n := 0
	visit(c.Writable, off, uint64(len(p)), func(b []byte) bool {
		n += copy(b, p[n:])
		return true
	})
	return n
}

// visit calls fn with the pieces of bufs covering [off, off+n) in order,
// stopping early when fn returns false. Nothing past the buffers is visited.
func visit(bufs [][]byte, off, n uint64, fn func([]byte) bool) {
	for _, b := range bufs {
		if n == 0 {
			return
		}
		l := uint64(len(b))
		if off >= l {
			off -= l
			continue
		}
		piece := b[off:]
		if uint64(len(piece)) > n {
			piece = piece[:n]
		}
		off = 0
		n -= uint64(len(piece))
		if !fn(piece) {
			return
		}
	}
}

// QueueState is what a snapshot keeps of a queue: the driver's set-up
// and the device's two ring positions.
type QueueState struct {
	Size      uint16 `json:"size"`
	DescAddr  uint64 `json:"desc_addr"`
	AvailAddr uint64 `json:"avail_addr"`
	UsedAddr  uint64 `json:"used_addr"`
	Ready     bool   `json:"ready"`
	LastAvail uint16 `json:"last_avail"`
	NextUsed  uint16 `json:"next_used"`
}

// State returns the queue's state.
func (q *Queue) State() QueueState {
	return QueueState{Size: q.Size, DescAddr: q.DescAddr, AvailAddr: q.AvailAddr, UsedAddr: q.UsedAddr,
		Ready: q.ready, LastAvail: q.lastAvail, NextUsed: q.nextUsed}
}

// SetState gives the queue s (from a snapshot: untrusted). A ready queue
// is activated against mem first, with every check Activate makes; on
// error the queue is left reset.
func (q *Queue) SetState(s QueueState, mem Memory) error {
	q.Reset()
	q.Size, q.DescAddr, q.AvailAddr, q.UsedAddr = s.Size, s.DescAddr, s.AvailAddr, s.UsedAddr
	if !s.Ready {
		if s.LastAvail != 0 || s.NextUsed != 0 {
			q.Reset()
			return queueErrorf("queue not ready but at ring positions %d/%d", s.LastAvail, s.NextUsed)
		}
		return nil
	}
	if err := q.Activate(mem); err != nil {
		q.Reset()
		return err
	}
	q.lastAvail, q.nextUsed = s.LastAvail, s.NextUsed
	return nil
}
