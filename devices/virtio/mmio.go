package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/microvm/microvm/devices"
)

// DeviceID is a virtio device type (virtio 1.2, 5).
type DeviceID uint32

// Device types microvm implements.
const (
	DeviceNet   DeviceID = 1
	DeviceBlock DeviceID = 2
	DeviceRNG   DeviceID = 4
	Device9P    DeviceID = 9
)

func (id DeviceID) String() string {
	switch id {
	case DeviceNet:
		return "net"
	case DeviceBlock:
		return "blk"
	case DeviceRNG:
		return "rng"
	case Device9P:
		return "9p"
	}
	return fmt.Sprintf("virtio-%d", uint32(id))
}

// Transport feature bits (virtio 1.2, 6).
const (
	FeatureIndirectDesc = 1 << 28
	FeatureEventIdx     = 1 << 29
	FeatureVersion1     = 1 << 32
	// transportOwned are the bits the transport decides, whatever a
	// backend says: it offers VERSION_1 and never indirect descriptors or
	// event index, which the walker does not implement.
	transportOwned = FeatureIndirectDesc | FeatureEventIdx | FeatureVersion1
)

// Device status bits (virtio 1.2, 2.1).
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 0x40
	StatusFailed      = 0x80
)

// Interrupt status bits.
const (
	IntUsedBuffer   = 1
	IntConfigChange = 2
)

// virtio-mmio registers (virtio 1.2, 4.2.2), offsets in the device's page.
const (
	RegMagic            = 0x000
	RegVersion          = 0x004
	RegDeviceID         = 0x008
	RegVendorID         = 0x00c
	RegDeviceFeatures   = 0x010
	RegDeviceFeatSel    = 0x014
	RegDriverFeatures   = 0x020
	RegDriverFeatSel    = 0x024
	RegQueueSel         = 0x030
	RegQueueNumMax      = 0x034
	RegQueueNum         = 0x038
	RegQueueReady       = 0x044
	RegQueueNotify      = 0x050
	RegInterruptStatus  = 0x060
	RegInterruptACK     = 0x064
	RegStatus           = 0x070
	RegQueueDescLow     = 0x080
	RegQueueDescHigh    = 0x084
	RegQueueDriverLow   = 0x090
	RegQueueDriverHigh  = 0x094
	RegQueueDeviceLow   = 0x0a0
	RegQueueDeviceHigh  = 0x0a4
	RegSHMSel           = 0x0ac
	RegSHMLenLow        = 0x0b0
	RegSHMLenHigh       = 0x0b4
	RegSHMBaseLow       = 0x0b8
	RegSHMBaseHigh      = 0x0bc
	RegConfigGeneration = 0x0fc
	RegConfig           = 0x100

	// MMIOMagic is "virt" little-endian.
	MMIOMagic = 0x74726976
	// MMIOVersion is the modern (virtio 1.x) transport.
	MMIOVersion = 2
	// VendorID is microvm's ("MVM").
	VendorID = 0x004d564d
	// MMIOSize is the size of a device's register page.
	MMIOSize = 0x1000
)

// Backend is a virtio device model behind a transport.
type Backend interface {
	// DeviceID says what kind of device this is.
	DeviceID() DeviceID
	// Features returns the device-specific feature bits offered. Bits the
	// transport owns (VERSION_1, INDIRECT_DESC, EVENT_IDX) are ignored.
	Features() uint64
	// Config returns the device configuration space (read-only to the
	// driver).
	Config() []byte
	// QueueSizes returns the maximum size of each of the device's queues.
	QueueSizes() []uint16
	// Process handles one chain popped from queue q and returns how many
	// bytes it wrote into the chain's writable buffers. A request the
	// backend refuses is answered in the request's own status; an error
	// means the driver broke the protocol and the device needs a reset.
	Process(q int, c *Chain) (written uint32, err error)
}

// Kicker is an optional Backend interface for queues the device fills on
// its own schedule (virtio-net's receive queue). Kick is called for every
// notification of queue q while the device is running; when it returns
// true the transport does not pop q's chains for Process. It is called
// with the device locked and must not call back into the device.
type Kicker interface {
	Kick(q int) bool
}

// Resetter is an optional Backend interface told of every device reset.
type Resetter interface {
	Reset()
}

// Stats counts what a device did.
type Stats struct {
	// Notifications counts queue notifications (MMIO writes to QueueNotify
	// and ioeventfd signals).
	Notifications uint64 `json:"notifications"`
	// EarlyNotifications counts notifications that came before DRIVER_OK
	// (ignored; the queues are processed when DRIVER_OK is set).
	EarlyNotifications uint64 `json:"early_notifications"`
	// Chains counts descriptor chains processed and returned.
	Chains uint64 `json:"chains"`
	// Interrupts counts interrupts raised.
	Interrupts uint64 `json:"interrupts"`
	// Resets counts device resets by the driver.
	Resets uint64 `json:"resets"`
	// Errors counts protocol errors that set DEVICE_NEEDS_RESET.
	Errors uint64 `json:"errors"`
}

// maxLoggedErrors bounds how many protocol errors a device logs; later
// ones are only counted, so a hostile guest cannot flood the log.
const maxLoggedErrors = 8

// MMIODevice is the virtio-mmio transport (version 2) in front of a
// Backend: a devices.Device for one 4 KiB MMIO page. It is safe for
// concurrent use: vCPUs, ioeventfd goroutines and backend goroutines
// (Fill) serialise on its lock.
type MMIODevice struct {
	mu      sync.Mutex
	backend Backend
	kicker  Kicker
	mem     Memory
	irq     devices.IRQ
	log     *slog.Logger

	devFeatures  uint64
	drvFeatures  uint64
	devFeatSel   uint32
	drvFeatSel   uint32
	status       uint32
	queueSel     uint32
	queues       []*Queue
	intStatus    uint32
	config       []byte
	shmSel       uint32
	stats        Stats
	loggedErrors int
	// paused: notifications and Fill are held off (Pause, Resume).
	paused bool
}

// NewMMIODevice puts backend behind the MMIO transport. mem is guest
// memory; irq (may be nil: the guest then polls) is raised for used
// buffers and configuration changes; log (may be nil) gets protocol errors.
func NewMMIODevice(backend Backend, mem Memory, irq devices.IRQ, log *slog.Logger) *MMIODevice {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &MMIODevice{
		backend:     backend,
		mem:         mem,
		irq:         irq,
		log:         log,
		devFeatures: backend.Features()&^transportOwned | FeatureVersion1,
		config:      backend.Config(),
	}
	d.kicker, _ = backend.(Kicker)
	for _, n := range backend.QueueSizes() {
		d.queues = append(d.queues, NewQueue(min(n, MaxQueueSize)))
	}
	return d
}

// Backend returns the device model behind the transport.
func (d *MMIODevice) Backend() Backend { return d.backend }

// NumQueues returns how many queues the device has.
func (d *MMIODevice) NumQueues() int { return len(d.queues) }

// Stats returns a snapshot of the device's counters.
func (d *MMIODevice) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Status returns the device status register.
func (d *MMIODevice) Status() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

// Read handles a guest read of the device's page.
func (d *MMIODevice) Read(offset uint64, data []byte) {
	clear(data)
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset >= RegConfig {
		off := offset - RegConfig
		if off < uint64(len(d.config)) {
			copy(data, d.config[off:])
		}
		return
	}
	if len(data) != 4 {
		return // registers are 32 bits wide
	}
	binary.LittleEndian.PutUint32(data, d.readReg(offset))
}

func (d *MMIODevice) readReg(offset uint64) uint32 {
	q := d.selected()
	switch offset {
	case RegMagic:
		return MMIOMagic
	case RegVersion:
		return MMIOVersion
	case RegDeviceID:
		return uint32(d.backend.DeviceID())
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		switch d.devFeatSel {
		case 0:
			return uint32(d.devFeatures)
		case 1:
			return uint32(d.devFeatures >> 32)
		}
	case RegQueueNumMax:
		if q != nil {
			return uint32(q.MaxSize)
		}
	case RegQueueNum:
		if q != nil {
			return uint32(q.Size)
		}
	case RegQueueReady:
		if q != nil && q.Ready() {
			return 1
		}
	case RegInterruptStatus:
		return d.intStatus
	case RegStatus:
		return d.status
	case RegQueueDescLow, RegQueueDescHigh, RegQueueDriverLow, RegQueueDriverHigh,
		RegQueueDeviceLow, RegQueueDeviceHigh:
		if q != nil {
			a := *queueAddr(q, offset)
			if offset%8 != 0 {
				a >>= 32
			}
			return uint32(a)
		}
	case RegSHMLenLow, RegSHMLenHigh:
		return 0xffffffff // no shared memory regions
	case RegSHMBaseLow, RegSHMBaseHigh:
		return 0xffffffff
	case RegConfigGeneration:
		return 0 // the configuration space never changes
	}
	return 0
}

// selected returns the queue QueueSel names, or nil when it names none.
func (d *MMIODevice) selected() *Queue {
	if int64(d.queueSel) < int64(len(d.queues)) {
		return d.queues[d.queueSel]
	}
	return nil
}

// Write handles a guest write to the device's page. The configuration
// space is read-only; registers take 32-bit writes only.
func (d *MMIODevice) Write(offset uint64, data []byte) {
	if offset >= RegConfig || len(data) != 4 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == RegQueueNotify {
		d.Notify(int(v))
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	q := d.selected()
	// Queue registers change only while the queue is not ready.
	qw := q != nil && !q.Ready()
	switch offset {
	case RegDeviceFeatSel:
		d.devFeatSel = v
	case RegDriverFeatures:
		if d.status&StatusFeaturesOK != 0 {
			break // features are fixed once accepted
		}
		switch d.drvFeatSel {
		case 0:
			d.drvFeatures = d.drvFeatures&^0xffffffff | uint64(v)
		case 1:
			d.drvFeatures = d.drvFeatures&0xffffffff | uint64(v)<<32
		}
	case RegDriverFeatSel:
		d.drvFeatSel = v
	case RegQueueSel:
		d.queueSel = v
	case RegQueueNum:
		if qw {
			// Checked (power of 2, at most QueueNumMax) when the queue
			// is made ready; the register keeps 16 bits.
			if v > 0xffff {
				v = 0 // refused at ready time
			}
			q.Size = uint16(v)
		}
	case RegQueueReady:
		if q == nil {
			break
		}
		if v == 0 {
			q.ready = false
			break
		}
		if !q.Ready() {
			if err := q.Activate(d.mem); err != nil {
				d.fail(fmt.Errorf("queue %d: %w", d.queueSel, err))
			}
		}
	case RegInterruptACK:
		d.intStatus &^= v
	case RegStatus:
		d.writeStatus(v)
	case RegQueueDescLow, RegQueueDescHigh, RegQueueDriverLow, RegQueueDriverHigh,
		RegQueueDeviceLow, RegQueueDeviceHigh:
		if qw { // qw implies a selected queue
			setHalf(queueAddr(q, offset), offset, v)
		}
	case RegSHMSel:
		d.shmSel = v
	}
}

// queueAddr returns the queue address field a register half belongs to.
func queueAddr(q *Queue, reg uint64) *uint64 {
	switch reg {
	case RegQueueDescLow, RegQueueDescHigh:
		return &q.DescAddr
	case RegQueueDriverLow, RegQueueDriverHigh:
		return &q.AvailAddr
	}
	return &q.UsedAddr
}

// setHalf writes the low or high 32 bits of *p: the register pairs are
// laid out low then high, 4 bytes apart, starting at an 8-byte boundary.
func setHalf(p *uint64, reg uint64, v uint32) {
	if reg%8 == 0 {
		*p = *p&^0xffffffff | uint64(v)
	} else {
		*p = *p&0xffffffff | uint64(v)<<32
	}
}

// writeStatus handles the driver's status writes: 0 resets the device;
// FEATURES_OK sticks only when the driver's features are acceptable;
// DRIVER_OK starts the device.
func (d *MMIODevice) writeStatus(v uint32) {
	if v == 0 {
		d.reset()
		return
	}
	old := d.status
	if v&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		if d.drvFeatures&^d.devFeatures != 0 || d.drvFeatures&FeatureVersion1 == 0 {
			v &^= StatusFeaturesOK // refused: the driver reads it back clear
		}
	}
	// NEEDS_RESET is the device's to set; only a reset clears it.
	d.status = v&^StatusNeedsReset | old&StatusNeedsReset
	if d.status&StatusDriverOK != 0 && old&StatusDriverOK == 0 && d.running() {
		// Notifications sent before DRIVER_OK were ignored: look now.
		for i := range d.queues {
			d.processLocked(i)
		}
	}
}

// reset returns the device to its initial state.
func (d *MMIODevice) reset() {
	d.status, d.drvFeatures, d.devFeatSel, d.drvFeatSel = 0, 0, 0, 0
	d.queueSel, d.intStatus, d.shmSel = 0, 0, 0
	for _, q := range d.queues {
		q.Reset()
	}
	d.stats.Resets++
	if r, ok := d.backend.(Resetter); ok {
		r.Reset()
	}
}

// running reports whether the driver has set the device up and no error
// has stopped it.
func (d *MMIODevice) running() bool {
	const want = StatusDriverOK | StatusFeaturesOK
	return d.status&want == want && d.status&(StatusNeedsReset|StatusFailed) == 0
}

// Notify handles a notification for queue q: the driver made buffers
// available. The transport's QueueNotify register and ioeventfds call it.
func (d *MMIODevice) Notify(q int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Notifications++
	if q < 0 || q >= len(d.queues) || d.paused {
		return // a paused device looks at every queue when it resumes
	}
	if !d.running() {
		if d.status&StatusNeedsReset == 0 {
			d.stats.EarlyNotifications++
		}
		return
	}
	d.processLocked(q)
}

// processLocked pops and processes the chains of queue qi. It handles at
// most one queue's worth per call: chains made available while it runs
// come with their own notification, so a guest cannot keep it busy.
func (d *MMIODevice) processLocked(qi int) {
	q := d.queues[qi]
	if !q.Ready() {
		return
	}
	if d.kicker != nil && d.kicker.Kick(qi) {
		return
	}
	done := 0
	for budget := int(q.Size); budget > 0; budget-- {
		c, ok, err := q.Pop(d.mem)
		if err != nil {
			d.fail(fmt.Errorf("queue %d: %w", qi, err))
			break
		}
		if !ok {
			break
		}
		n, err := d.backend.Process(qi, c)
		if err != nil {
			d.fail(fmt.Errorf("queue %d: %w", qi, err))
			break
		}
		if err := q.PushUsed(c.Head, uint32(min(uint64(n), c.WriteLen))); err != nil {
			d.fail(fmt.Errorf("queue %d: %w", qi, err))
			break
		}
		done++
	}
	if done > 0 {
		d.stats.Chains += uint64(done)
		d.interrupt(IntUsedBuffer)
	}
}

// ErrNotRunning is returned by Fill when the driver has not started the
// device (or an error stopped it).
var ErrNotRunning = errors.New("virtio device not running")

// Fill lets a backend put data into queue qi on its own schedule (a
// received frame): it pops a chain, calls fill with it, returns the chain
// with the bytes fill wrote and raises an interrupt. ok is false when the
// driver has no buffer available. When fill fails the chain is given back
// unused and its error returned. ErrNotRunning means the device is not
// running.
func (d *MMIODevice) Fill(qi int, fill func(c *Chain) (written uint32, err error)) (ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if qi < 0 || qi >= len(d.queues) || d.paused || !d.running() || !d.queues[qi].Ready() {
		return false, ErrNotRunning
	}
	q := d.queues[qi]
	c, ok, err := q.Pop(d.mem)
	if err != nil {
		d.fail(fmt.Errorf("queue %d: %w", qi, err))
		return false, ErrNotRunning
	}
	if !ok {
		return false, nil
	}
	n, err := fill(c)
	if err != nil {
		q.Unpop()
		return false, err
	}
	if err := q.PushUsed(c.Head, uint32(min(uint64(n), c.WriteLen))); err != nil {
		d.fail(fmt.Errorf("queue %d: %w", qi, err))
		return false, ErrNotRunning
	}
	d.stats.Chains++
	d.interrupt(IntUsedBuffer)
	return true, nil
}

// fail stops the device after a protocol error: DEVICE_NEEDS_RESET and a
// configuration-change interrupt, as virtio 1.2, 2.1.2 asks.
func (d *MMIODevice) fail(err error) {
	d.stats.Errors++
	if d.loggedErrors < maxLoggedErrors {
		d.loggedErrors++
		d.log.Warn("virtio device needs reset", "device", d.backend.DeviceID().String(), "err", err)
	}
	if d.status&StatusNeedsReset != 0 {
		return
	}
	d.status |= StatusNeedsReset
	d.interrupt(IntConfigChange)
}

func (d *MMIODevice) interrupt(bit uint32) {
	d.intStatus |= bit
	if d.irq == nil {
		return
	}
	d.stats.Interrupts++
	if err := d.irq.Trigger(); err != nil && d.loggedErrors < maxLoggedErrors {
		d.loggedErrors++
		d.log.Warn("virtio interrupt failed", "device", d.backend.DeviceID().String(), "err", err)
	}
}

// MMIOState is what a snapshot keeps of a transport: the driver-written
// registers, the interrupt status and every queue. The device's offer
// (features, configuration space, queue sizes) comes from the backend.
type MMIOState struct {
	DriverFeatures  uint64       `json:"driver_features"`
	DeviceFeatSel   uint32       `json:"device_features_sel"`
	DriverFeatSel   uint32       `json:"driver_features_sel"`
	Status          uint32       `json:"status"`
	QueueSel        uint32       `json:"queue_sel"`
	InterruptStatus uint32       `json:"interrupt_status"`
	SHMSel          uint32       `json:"shm_sel"`
	Queues          []QueueState `json:"queues"`
}

// Pause holds off queue processing: once it returns, no chain is being
// processed and none will be until Resume, so guest memory and State
// agree (a snapshot). Notifications that come meanwhile are counted.
func (d *MMIODevice) Pause() {
	d.mu.Lock()
	d.paused = true
	d.mu.Unlock()
}

// Resume ends a Pause and, on a running device, processes every queue:
// the driver may have made buffers available while it was paused.
func (d *MMIODevice) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	if d.running() {
		for i := range d.queues {
			d.processLocked(i)
		}
	}
}

// State returns the transport's state.
func (d *MMIODevice) State() MMIOState {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := MMIOState{
		DriverFeatures: d.drvFeatures, DeviceFeatSel: d.devFeatSel, DriverFeatSel: d.drvFeatSel,
		Status: d.status, QueueSel: d.queueSel, InterruptStatus: d.intStatus, SHMSel: d.shmSel,
	}
	for _, q := range d.queues {
		s.Queues = append(s.Queues, q.State())
	}
	return s
}

// SetState gives a freshly made transport s (from a snapshot: untrusted)
// and leaves it paused: call Resume when the guest runs again. s must
// match the backend — as many queues, no queue over its maximum size, no
// feature the device does not offer — and every ready queue must lie in
// guest memory; otherwise the device is left reset and an error says why.
func (d *MMIODevice) SetState(s MMIOState) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = true
	err := d.setStateLocked(s)
	if err != nil {
		d.reset()
		d.stats = Stats{}
	}
	return err
}

func (d *MMIODevice) setStateLocked(s MMIOState) error {
	if len(s.Queues) != len(d.queues) {
		return fmt.Errorf("virtio %s: state has %d queues, the device %d", d.backend.DeviceID(), len(s.Queues), len(d.queues))
	}
	if s.DriverFeatures&^d.devFeatures != 0 {
		return fmt.Errorf("virtio %s: state accepts features %#x the device does not offer", d.backend.DeviceID(), s.DriverFeatures&^d.devFeatures)
	}
	for i, qs := range s.Queues {
		if err := d.queues[i].SetState(qs, d.mem); err != nil {
			return fmt.Errorf("virtio %s: queue %d: %w", d.backend.DeviceID(), i, err)
		}
	}
	d.drvFeatures, d.devFeatSel, d.drvFeatSel = s.DriverFeatures, s.DeviceFeatSel, s.DriverFeatSel
	d.status, d.queueSel, d.intStatus, d.shmSel = s.Status, s.QueueSel, s.InterruptStatus, s.SHMSel
	return nil
}
