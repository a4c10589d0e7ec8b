package vmm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/microvm/microvm/devices"
	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/images/linux"
	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// Placement of virtio-mmio devices: device i (disks first, then network
// devices, then the entropy device, then the 9p shares, in Config order) has its register page
// at VirtioMMIOBase + i*VirtioMMIOSize and interrupt GSI VirtioFirstGSI+i.
const (
	VirtioMMIOBase = 0xd0000000
	VirtioMMIOSize = virtio.MMIOSize
	VirtioFirstGSI = 5
	// MaxVirtioDevices keeps every GSI at 15 or below, where both the PIC
	// and the IOAPIC reach it (a guest booted with noapic uses the PIC).
	MaxVirtioDevices = 16 - VirtioFirstGSI
)

// DiskConfig is a virtio-blk device backed by a raw image file.
type DiskConfig struct {
	// Path is the image file (or block device).
	Path string
	// ReadOnly opens it read-only and tells the guest so; writes fail.
	ReadOnly bool
	// File, when set, is the image already open (read-write unless
	// ReadOnly), e.g. opened before entering a jail; Path then only names
	// the device. The caller closes it.
	File *os.File
}

// NetConfig is a virtio-net device in front of a tap interface.
type NetConfig struct {
	// Tap names the tap interface. It is created when it does not exist
	// (and removed again when the machine closes), in the network
	// namespace of the thread that calls New.
	Tap string
	// MAC is the guest's address; nil derives a locally administered one
	// from Tap.
	MAC net.HardwareAddr
}

// ShareConfig is a virtio-9p device: a host directory the guest mounts
// with `mount -t 9p -o trans=virtio,version=9p2000.L TAG DIR`. The guest
// reaches nothing outside Path (devices/p9).
type ShareConfig struct {
	// Tag is the mount tag the guest names (1 to 31 bytes).
	Tag string
	// Path is the host directory.
	Path string
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
}

// VirtioDevice describes one virtio-mmio device of a machine.
type VirtioDevice struct {
	// Name is "blk0", "net0", "rng0", ...
	Name string `json:"name"`
	// Type is the virtio device type (1 net, 2 blk, 4 rng, 9 9p).
	Type virtio.DeviceID `json:"type"`
	// Base and Size are the device's MMIO register page.
	Base uint64 `json:"mmio_base"`
	Size uint64 `json:"mmio_size"`
	// GSI is the device's interrupt line.
	GSI uint32 `json:"gsi"`
	// IOEventFD reports whether queue notifications go through ioeventfds
	// (no exit to user space) rather than MMIO exits.
	IOEventFD bool `json:"ioeventfd"`
	// Stats are the transport's counters.
	Stats virtio.Stats `json:"stats"`
	// Device is the backend: *virtio.Blk, *virtio.Net, *virtio.RNG or
	// *virtio.P9.
	Device virtio.Backend `json:"-"`
}

// virtioDevice is a device the machine added.
type virtioDevice struct {
	VirtioDevice
	dev      *virtio.MMIODevice
	closer   io.Closer
	notify   []int // ioeventfds, one per queue
	closing  atomic.Bool
	irq      devices.IRQ
	serveRX  func() error
	services sync.WaitGroup
}

// addVirtio creates the configured virtio devices, maps them on the bus,
// registers an ioeventfd per queue where KVM can, wires interrupts through
// irqfds when there is an in-kernel irqchip, and starts their goroutines.
func (m *Machine) addVirtio() error {
	cfg := m.cfg
	count := len(cfg.Disks) + len(cfg.Nets) + len(cfg.Shares)
	if cfg.RNG {
		count++
	}
	if count > MaxVirtioDevices {
		return configErrorf("%d virtio devices requested; a machine has room for %d", count, MaxVirtioDevices)
	}
	if count == 0 {
		return nil
	}
	useEventFD := false
	if !cfg.VirtioNoIOEventFD {
		if n, err := m.vm.CheckExtension(kvm.CapIOEventFD); err == nil && n > 0 {
			useEventFD = true
		}
	}
	add := func(name string, b virtio.Backend, closer io.Closer) (*virtioDevice, error) {
		i := len(m.virtio)
		vd := &virtioDevice{
			VirtioDevice: VirtioDevice{
				Name: name, Type: b.DeviceID(), Base: VirtioMMIOBase + uint64(i)*VirtioMMIOSize,
				Size: VirtioMMIOSize, GSI: uint32(VirtioFirstGSI + i), Device: b,
			},
			closer: closer,
		}
		m.virtio = append(m.virtio, vd) // closed with the machine from here on
		if m.irqchip {
			l, err := m.newIRQLine(vd.GSI)
			if err != nil {
				return nil, fmt.Errorf("virtio %s: %w", name, err)
			}
			vd.irq = l
		}
		vd.dev = virtio.NewMMIODevice(b, m.mem, vd.irq, m.log.With("virtio", name))
		if err := m.bus.Add(devices.MMIO, vd.Base, vd.Size, "virtio-"+name, vd.dev); err != nil {
			return nil, err
		}
		if useEventFD {
			if err := vd.registerNotify(m.vm); err != nil {
				m.note("virtio %s: queue notifications exit to user space (ioeventfd failed: %v)", name, err)
			}
		}
		return vd, nil
	}
	for i, d := range cfg.Disks {
		var b *virtio.Blk
		var err error
		switch {
		case d.File != nil:
			b, err = virtio.BlkFromFile(d.File, filepath.Base(d.Path), d.ReadOnly)
		case d.Path == "":
			return configErrorf("disk %d: no path", i)
		default:
			b, err = virtio.OpenBlk(d.Path, d.ReadOnly)
		}
		if err != nil {
			return err
		}
		if _, err := add(fmt.Sprintf("blk%d", i), b, b); err != nil {
			return err
		}
	}
	for i, n := range cfg.Nets {
		if err := virtio.ValidTapName(n.Tap); err != nil {
			return configErrorf("net %d: %v", i, err)
		}
		mac := n.MAC
		if mac == nil {
			mac = virtio.DefaultMAC(n.Tap)
		}
		if len(mac) != 6 || mac[0]&1 != 0 {
			return configErrorf("net %d: MAC %v is not a 6-byte unicast address", i, mac)
		}
		tap, err := virtio.OpenTap(n.Tap)
		if err != nil {
			return err
		}
		b := virtio.NewNet(mac, tap)
		vd, err := add(fmt.Sprintf("net%d", i), b, b)
		if err != nil {
			b.Close()
			return err
		}
		vd.serveRX = func() error { return b.ServeRX(vd.dev) }
	}
	if cfg.RNG {
		if _, err := add("rng0", virtio.NewRNG(), nil); err != nil {
			return err
		}
	}
	for i, s := range cfg.Shares {
		b, err := virtio.NewP9(s.Tag, s.Path, s.ReadOnly)
		if err != nil {
			return configErrorf("share %d: %v", i, err)
		}
		if _, err := add(fmt.Sprintf("9p%d", i), b, b); err != nil {
			return err
		}
	}
	for _, vd := range m.virtio {
		vd.start(m)
	}
	return nil
}

// registerNotify gives each queue an eventfd that KVM signals on a write
// of the queue's index to QueueNotify, so notifications never leave the
// kernel; a goroutine per queue hands them to the device.
func (vd *virtioDevice) registerNotify(vm *kvm.VM) error {
	for q := 0; q < vd.dev.NumQueues(); q++ {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("eventfd: %w", err)
		}
		match := uint64(q)
		if err := vm.IOEventFD(efd, kvm.IOEvent{Addr: vd.Base + virtio.RegQueueNotify, Len: 4, DataMatch: &match}); err != nil {
			unix.Close(efd)
			return err
		}
		vd.notify = append(vd.notify, efd)
	}
	vd.IOEventFD = true
	return nil
}

// start runs the device's goroutines: one per ioeventfd, and the receive
// loop of a network device.
func (vd *virtioDevice) start(m *Machine) {
	for q, efd := range vd.notify {
		vd.services.Add(1)
		go func() {
			defer vd.services.Done()
			// A thread of its own blocked in read(2): the kernel wakes it
			// directly, without a trip through Go's poller.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var b [8]byte
			for {
				_, err := unix.Read(efd, b[:])
				if vd.closing.Load() {
					return
				}
				if err != nil && err != unix.EINTR {
					return
				}
				vd.dev.Notify(q)
			}
		}()
	}
	if vd.serveRX != nil {
		vd.services.Add(1)
		go func() {
			defer vd.services.Done()
			if err := vd.serveRX(); err != nil {
				m.log.Warn("virtio: receive stopped", "device", vd.Name, "err", err)
			}
		}()
	}
}

// closeVirtio stops the devices' goroutines and closes their files. It
// runs before guest memory is unmapped: no device touches it afterwards.
func (m *Machine) closeVirtio() error {
	var errs []error
	for _, vd := range m.virtio {
		vd.closing.Store(true)
		for _, efd := range vd.notify {
			wake(efd) // the reader sees closing and returns
		}
		if vd.serveRX != nil && vd.closer != nil {
			// Closing the tap ends the receive loop.
			errs = append(errs, vd.closer.Close())
		}
		vd.services.Wait()
		// No request is in flight any more: close the backend's files.
		if vd.serveRX == nil && vd.closer != nil {
			errs = append(errs, vd.closer.Close())
		}
		for _, efd := range vd.notify {
			errs = append(errs, unix.Close(efd))
		}
	}
	m.virtio = nil
	return errors.Join(errs...)
}

// wake signals an eventfd.
func wake(efd int) {
	var b [8]byte
	b[0] = 1
	unix.Write(efd, b[:])
}

// VirtioDevices describes the machine's virtio devices, with their
// counters as of now.
func (m *Machine) VirtioDevices() []VirtioDevice {
	out := make([]VirtioDevice, len(m.virtio))
	for i, vd := range m.virtio {
		out[i] = vd.VirtioDevice
		out[i].Stats = vd.dev.Stats()
	}
	return out
}

// virtioBootDevices is the device table of the tiny-guest boot info (ABI v2).
func (m *Machine) virtioBootDevices() []bootDevice {
	var t []bootDevice
	for _, vd := range m.virtio {
		t = append(t, bootDevice{typ: uint32(vd.Type), irq: vd.GSI, base: vd.Base, size: vd.Size})
	}
	return t
}

// acpiDevices lists the virtio-mmio transports for the guest's DSDT (how
// kernels with ACPI but without command-line devices find them).
func (m *Machine) acpiDevices() []linux.MMIODevice {
	var out []linux.MMIODevice
	for _, vd := range m.virtio {
		out = append(out, linux.MMIODevice{Base: vd.Base, Size: vd.Size, GSI: vd.GSI})
	}
	return out
}

// virtioCmdline returns the kernel command-line entries that tell Linux
// (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) where the devices are:
// "virtio_mmio.device=4K@0xd0000000:5 ...". Empty without devices.
func (m *Machine) virtioCmdline() string {
	var parts []string
	for _, vd := range m.virtio {
		parts = append(parts, fmt.Sprintf("virtio_mmio.device=%dK@%#x:%d", vd.Size>>10, vd.Base, vd.GSI))
	}
	return strings.Join(parts, " ")
}

// virtioStates describes the machine's virtio devices for a snapshot; the
// devices must be paused.
func (m *Machine) virtioStates() ([]VirtioState, error) {
	var out []VirtioState
	nDisks := len(m.cfg.Disks)
	if len(m.cfg.Shares) > 0 {
		return nil, errors.New("a machine with 9p shares cannot be snapshotted (the server's open files are not saved)")
	}
	for i, vd := range m.virtio {
		s := VirtioState{Name: vd.Name, Type: vd.Type, Transport: vd.dev.State()}
		switch {
		case i < nDisks:
			d := m.cfg.Disks[i]
			abs, err := filepath.Abs(d.Path)
			if err != nil {
				return nil, fmt.Errorf("virtio %s: %w", vd.Name, err)
			}
			s.Disk, s.ReadOnly = abs, d.ReadOnly
		case i < nDisks+len(m.cfg.Nets):
			n := m.cfg.Nets[i-nDisks]
			mac := n.MAC
			if mac == nil {
				mac = virtio.DefaultMAC(n.Tap)
			}
			s.Tap, s.MAC = n.Tap, mac.String()
		}
		out = append(out, s)
	}
	return out, nil
}

// restoreVirtioConfig sets cfg's virtio devices to a snapshot's: its
// disks (unless cfg.Disks lists as many, which replace them), its network
// devices (likewise cfg.Nets) and its entropy device.
func restoreVirtioConfig(cfg *Config, devs []VirtioState) error {
	var disks []DiskConfig
	var nets []NetConfig
	rng := false
	for _, d := range devs {
		switch d.Type {
		case virtio.DeviceBlock:
			disks = append(disks, DiskConfig{Path: d.Disk, ReadOnly: d.ReadOnly})
		case virtio.DeviceNet:
			mac, _ := net.ParseMAC(d.MAC) // checked by the parser
			nets = append(nets, NetConfig{Tap: d.Tap, MAC: mac})
		case virtio.DeviceRNG:
			rng = true
		}
	}
	if len(cfg.Disks) > 0 && len(cfg.Disks) != len(disks) {
		return fmt.Errorf("%w: snapshot has %d disks, the configuration gives %d", ErrSnapshotCorrupt, len(disks), len(cfg.Disks))
	}
	if len(cfg.Nets) > 0 && len(cfg.Nets) != len(nets) {
		return fmt.Errorf("%w: snapshot has %d network devices, the configuration gives %d", ErrSnapshotCorrupt, len(nets), len(cfg.Nets))
	}
	// Copies: the caller's slices stay as they were.
	cfg.Disks, cfg.Nets = slices.Clone(cfg.Disks), slices.Clone(cfg.Nets)
	for i := range cfg.Disks {
		cfg.Disks[i].ReadOnly = disks[i].ReadOnly // the guest was told
	}
	if len(cfg.Disks) == 0 {
		cfg.Disks = disks
	}
	for i := range cfg.Nets {
		cfg.Nets[i].MAC = nets[i].MAC // the guest knows its address
	}
	if len(cfg.Nets) == 0 {
		cfg.Nets = nets
	}
	cfg.RNG = rng
	return nil
}

// restoreVirtio gives the freshly made devices the snapshot's transport
// state (guest RAM is the snapshot's already); they stay paused until Run.
func (m *Machine) restoreVirtio(devs []VirtioState) error {
	if len(devs) != len(m.virtio) {
		return fmt.Errorf("%w: snapshot has %d virtio devices, the machine %d", ErrSnapshotCorrupt, len(devs), len(m.virtio))
	}
	for i, vd := range m.virtio {
		if devs[i].Type != vd.Type || devs[i].Name != vd.Name {
			return fmt.Errorf("%w: virtio device %d is %s in the snapshot, %s here", ErrSnapshotCorrupt, i, devs[i].Name, vd.Name)
		}
		if err := vd.dev.SetState(devs[i].Transport); err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
		}
	}
	return nil
}

// resumeVirtio lets restored devices process their queues again (Run
// calls it before the vCPUs resume).
func (m *Machine) resumeVirtio() {
	for _, vd := range m.virtio {
		vd.dev.Resume()
	}
}
