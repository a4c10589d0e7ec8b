package virtio

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// virtio-net feature bits (virtio 1.2, 5.1.3).
const (
	NetFMAC = 1 << 5
)

// virtio-net layout.
const (
	// NetHdrSize is struct virtio_net_hdr with VIRTIO_F_VERSION_1 (it
	// includes num_buffers).
	NetHdrSize = 12
	// NetRXQueue and NetTXQueue are the receive and transmit queues.
	NetRXQueue = 0
	NetTXQueue = 1
	// MaxFrame is the largest Ethernet frame the device passes (64 KiB of
	// payload, a header and VLAN tags).
	MaxFrame      = 1<<16 + 32
	netQueueSize  = 256
	netConfigSize = 8 // mac[6], status u16 (not offered)
)

// NetStats counts a network device's frames.
type NetStats struct {
	TXFrames, TXDropped, RXFrames, RXDropped uint64
}

var errFrameTooBig = errors.New("frame larger than the receive buffer")

// Net is virtio-net in front of a tap (any io.ReadWriteCloser that reads
// and writes whole Ethernet frames). No offloads are offered: frames pass
// as they are, behind a zeroed virtio-net header. Transmit happens on the
// driver's notification; receive in ServeRX, which delivers each frame
// the tap gives into the next receive buffer: a frame waits for the
// driver to post one (the tap's queue holds the rest), and is dropped when
// the device is not running or the frame does not fit.
type Net struct {
	mac    net.HardwareAddr
	tap    io.ReadWriteCloser
	config []byte
	txbuf  []byte
	kick   chan struct{}
	done   chan struct{}
	close  sync.Once

	txFrames, txDropped, rxFrames, rxDropped atomic.Uint64
}

// NewNet returns a network device with MAC mac in front of tap.
func NewNet(mac net.HardwareAddr, tap io.ReadWriteCloser) *Net {
	n := &Net{
		mac:    append(net.HardwareAddr(nil), mac...),
		tap:    tap,
		config: make([]byte, netConfigSize),
		txbuf:  make([]byte, MaxFrame),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	copy(n.config, mac)
	return n
}

// DefaultMAC derives a stable, locally administered unicast MAC from a tap
// name.
func DefaultMAC(tap string) net.HardwareAddr {
	h := fnv.New64a()
	h.Write([]byte(tap))
	s := h.Sum(nil)
	return net.HardwareAddr{0x02, s[0], s[1], s[2], s[3], s[4]}
}

// MAC returns the device's MAC address.
func (n *Net) MAC() net.HardwareAddr { return n.mac }

// Stats returns the frame counters.
func (n *Net) Stats() NetStats {
	return NetStats{
		TXFrames: n.txFrames.Load(), TXDropped: n.txDropped.Load(),
		RXFrames: n.rxFrames.Load(), RXDropped: n.rxDropped.Load(),
	}
}

// DeviceID implements Backend.
func (n *Net) DeviceID() DeviceID { return DeviceNet }

// Features implements Backend: the MAC in the configuration space.
func (n *Net) Features() uint64 { return NetFMAC }

// Config implements Backend.
func (n *Net) Config() []byte { return n.config }

// QueueSizes implements Backend: receive and transmit.
func (n *Net) QueueSizes() []uint16 { return []uint16{netQueueSize, netQueueSize} }

// Kick implements Kicker: the receive queue is the device's to fill; a
// notification there wakes a frame waiting for a buffer.
func (n *Net) Kick(q int) bool {
	if q != NetRXQueue {
		return false
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
	return true
}

// Process implements Backend: transmit one frame. A malformed frame (no
// header, too long) or a failed write is dropped and counted.
func (n *Net) Process(q int, c *Chain) (uint32, error) {
	if q != NetTXQueue {
		return 0, nil
	}
	if c.ReadLen < NetHdrSize || c.ReadLen-NetHdrSize > MaxFrame {
		n.txDropped.Add(1)
		return 0, nil
	}
	frame := n.txbuf[:c.ReadLen-NetHdrSize]
	c.ReadAt(frame, NetHdrSize)
	if _, err := n.tap.Write(frame); err != nil {
		n.txDropped.Add(1)
		return 0, nil
	}
	n.txFrames.Add(1)
	return 0, nil
}

// ServeRX reads frames from the tap and delivers them to d's receive
// queue until the tap is closed (it then returns nil) or fails.
func (n *Net) ServeRX(d *MMIODevice) error {
	buf := make([]byte, MaxFrame)
	for {
		k, err := n.tap.Read(buf)
		if err != nil {
			select {
			case <-n.done:
				return nil
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if !n.deliver(d, buf[:k]) {
			return nil
		}
	}
}

// deliver puts one frame into the receive queue, waiting for a buffer
// while the device runs. It returns false when the device is closing.
func (n *Net) deliver(d *MMIODevice, frame []byte) bool {
	fill := func(c *Chain) (uint32, error) {
		if c.WriteLen < NetHdrSize+uint64(len(frame)) {
			return 0, errFrameTooBig
		}
		var hdr [NetHdrSize]byte
		binary.LittleEndian.PutUint16(hdr[10:], 1) // num_buffers
		c.WriteAt(hdr[:], 0)
		c.WriteAt(frame, NetHdrSize)
		return uint32(NetHdrSize + len(frame)), nil
	}
	for {
		ok, err := d.Fill(NetRXQueue, fill)
		switch {
		case ok:
			n.rxFrames.Add(1)
			return true
		case err != nil:
			n.rxDropped.Add(1)
			return true
		}
		select { // no buffer: wait for the driver to post one
		case <-n.kick:
		case <-n.done:
			return false
		}
	}
}

// Close closes the tap and stops ServeRX.
func (n *Net) Close() error {
	var err error
	n.close.Do(func() {
		close(n.done)
		err = n.tap.Close()
	})
	return err
}
