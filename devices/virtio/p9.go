package virtio

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/microvm/microvm/devices/p9"
)

// P9FMountTag is VIRTIO_9P_F_MOUNT_TAG (virtio 1.2, 5.18.3): the
// configuration space holds the tag the guest mounts the device by.
const P9FMountTag = 1 << 0

// P9MaxTagLen is the longest mount tag accepted (what every Linux version
// takes).
const P9MaxTagLen = 31

const p9QueueSize = 128

// P9Stats counts a 9p device's requests.
type P9Stats struct {
	// Requests counts messages served.
	Requests uint64
	// Dropped counts chains answered with nothing: too short to hold a
	// message header, or without room for an answer.
	Dropped uint64
	// TooLong counts messages refused for exceeding the message size.
	TooLong uint64
}

// P9 is virtio-9p: a 9P2000.L file server (package p9) exporting a host
// directory, which a Linux guest mounts with
//
//	mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt
//
// Each chain holds one T-message in its readable buffers and room for the
// R-message in its writable ones. The device never fails the queue: a
// request it cannot parse is answered Rlerror, or not at all when it is
// shorter than a message header.
type P9 struct {
	srv    *p9.Server
	tag    string
	config []byte
	// req and resp are reused between requests; Process is serialised by
	// the transport.
	req, resp []byte

	requests, dropped, tooLong atomic.Uint64
}

// NewP9 returns a 9p device exporting the directory root under the mount
// tag tag (1 to P9MaxTagLen bytes, no NUL), read-only when readOnly.
func NewP9(tag, root string, readOnly bool) (*P9, error) {
	if len(tag) == 0 || len(tag) > P9MaxTagLen || strings.IndexByte(tag, 0) >= 0 {
		return nil, fmt.Errorf("9p mount tag %q: must be 1 to %d bytes without NUL", tag, P9MaxTagLen)
	}
	srv, err := p9.NewServer(root, readOnly)
	if err != nil {
		return nil, fmt.Errorf("9p device %s: %w", tag, err)
	}
	config := make([]byte, 2+len(tag))
	binary.LittleEndian.PutUint16(config, uint16(len(tag)))
	copy(config[2:], tag)
	return &P9{srv: srv, tag: tag, config: config}, nil
}

// Tag returns the mount tag.
func (p *P9) Tag() string { return p.tag }

// Server returns the file server behind the device.
func (p *P9) Server() *p9.Server { return p.srv }

// Stats returns the request counters.
func (p *P9) Stats() P9Stats {
	return P9Stats{Requests: p.requests.Load(), Dropped: p.dropped.Load(), TooLong: p.tooLong.Load()}
}

// Close closes every descriptor the server holds.
func (p *P9) Close() error {
	if err := p.srv.Close(); err != nil {
		return fmt.Errorf("9p device %s: %w", p.tag, err)
	}
	return nil
}

// DeviceID implements Backend.
func (p *P9) DeviceID() DeviceID { return Device9P }

// Features implements Backend: the mount tag.
func (p *P9) Features() uint64 { return P9FMountTag }

// Config implements Backend: tag_len u16 then the tag.
func (p *P9) Config() []byte { return p.config }

// QueueSizes implements Backend: one request queue.
func (p *P9) QueueSizes() []uint16 { return []uint16{p9QueueSize} }

// Reset implements Resetter: a reset driver starts a new 9P session.
func (p *P9) Reset() { p.srv.Reset() }

// Process implements Backend: one message.
func (p *P9) Process(_ int, c *Chain) (uint32, error) {
	var hdr [p9.HeaderSize]byte
	if c.ReadLen < p9.HeaderSize || c.WriteLen < p9.HeaderSize+4 {
		p.dropped.Add(1)
		return 0, nil
	}
	c.ReadAt(hdr[:], 0)
	msize := uint64(p.srv.Msize())
	size := min(uint64(binary.LittleEndian.Uint32(hdr[:])), c.ReadLen)
	if size > msize {
		// Longer than negotiated: refused without being read.
		p.tooLong.Add(1)
		var e [p9.HeaderSize + 4]byte
		enc := p9.NewEncoder(e[:])
		enc.Header(p9.Rlerror, binary.LittleEndian.Uint16(hdr[5:]))
		enc.U32(uint32(unix.EMSGSIZE))
		n, _ := enc.Finish()
		return uint32(c.WriteAt(e[:n], 0)), nil
	}
	size = max(size, p9.HeaderSize) // a bad size field is the server's to answer
	req := grow(&p.req, int(size))
	c.ReadAt(req, 0)
	resp := grow(&p.resp, int(min(c.WriteLen, msize)))
	n := p.srv.Handle(req, resp)
	p.requests.Add(1)
	if n == 0 {
		p.dropped.Add(1)
		return 0, nil
	}
	return uint32(c.WriteAt(resp[:n], 0)), nil
}

// grow returns (*buf)[:n], reallocating when it is too small.
func grow(buf *[]byte, n int) []byte {
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	return (*buf)[:n]
}
