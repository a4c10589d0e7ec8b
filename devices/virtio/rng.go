package virtio

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RNGMaxRequest bounds the entropy handed out per request.
const RNGMaxRequest = 64 << 10

const rngQueueSize = 64

// RNG is virtio-rng: it fills each request's writable buffers (up to
// RNGMaxRequest bytes) from the host's getrandom(2).
type RNG struct {
	read  func([]byte) error
	bytes atomic.Uint64
}

// NewRNG returns an entropy device reading the host's getrandom.
func NewRNG() *RNG { return &RNG{read: getrandom} }

// newRNGFrom returns an entropy device reading from read (tests).
func newRNGFrom(read func([]byte) error) *RNG { return &RNG{read: read} }

// Bytes returns how many bytes of entropy the device handed out.
func (r *RNG) Bytes() uint64 { return r.bytes.Load() }

// DeviceID implements Backend.
func (r *RNG) DeviceID() DeviceID { return DeviceRNG }

// Features implements Backend: none.
func (r *RNG) Features() uint64 { return 0 }

// Config implements Backend: none.
func (r *RNG) Config() []byte { return nil }

// QueueSizes implements Backend: one request queue.
func (r *RNG) QueueSizes() []uint16 { return []uint16{rngQueueSize} }

// Process implements Backend.
func (r *RNG) Process(_ int, c *Chain) (uint32, error) {
	n := min(c.WriteLen, RNGMaxRequest)
	done := uint64(0)
	visit(c.Writable, 0, n, func(p []byte) bool {
		if r.read(p) != nil {
			return false
		}
		done += uint64(len(p))
		return true
	})
	r.bytes.Add(done)
	return uint32(done), nil
}

// getrandom fills p from the kernel's CSPRNG.
func getrandom(p []byte) error {
	for len(p) > 0 {
		n, err := unix.Getrandom(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
