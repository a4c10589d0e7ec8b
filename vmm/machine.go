// Package vmm builds and runs a micro-VM on KVM: guest memory, the CPU
// state a guest starts in, one goroutine per vCPU locked to its OS thread,
// exits dispatched to a device bus, and a lifecycle with a result.
//
//	m, err := vmm.New(vmm.Config{Image: elf})
//	if err != nil { ... }
//	defer m.Close()
//	res, err := m.Run(ctx)
package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/microvm/microvm/devices"
	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/linux"
	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// Machine is a built VM, ready to Run once.
type Machine struct {
	cfg      Config
	log      *slog.Logger
	launched time.Time

	sys     *kvm.System
	ownSys  bool
	vm      *kvm.VM
	mem     *Memory
	cpus    []*vcpu
	host    HostKind
	linux   bool        // booting a Linux kernel (else a tiny guest)
	irqchip bool        // an in-kernel irqchip exists (something can wake a halted vCPU)
	kernel  *KernelInfo // what was booted, for a Linux guest
	irqs    []*irqLine
	virtio  []*virtioDevice // vmm/virtio.go

	bus     devices.Bus
	serial  *devices.Serial
	com2    *devices.Serial // nil unless Config.COM2
	console *console
	notes   []string

	ranOnce   atomic.Bool
	readyNS   atomic.Int64 // launch→ready in ns, 0 until ready
	running   sync.WaitGroup
	done      chan struct{} // closed by end
	endOnce   sync.Once
	end       Result // written once, under endOnce
	endedAt   time.Duration
	setupTime time.Duration
	halts     atomic.Int32 // vCPUs that halted for good
	panicLine atomic.Pointer[string]

	mu      sync.Mutex // guards notes and assists
	assists map[string]uint64

	probeCPUID []kvm.CPUIDEntry // vCPU 0's CPUID as set (cpuidprobe.go)
}

// New builds a machine from cfg: opens KVM (unless cfg.System is given),
// creates the VM and its memory, loads the image and sets up the vCPUs.
// The launch clock that Result timings count from starts here.
func New(cfg Config) (*Machine, error) {
	launched := time.Now()
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, log: cfg.Logger, launched: launched, done: make(chan struct{})}
	if err := m.build(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// build does New's work; on error the caller closes what was made.
func (m *Machine) build() (err error) {
	cfg := m.cfg
	format := cfg.Format
	if cfg.restore != nil {
		// Restore (vmm/snapshot_machine.go): the snapshot's memory and
		// state replace a boot; no image is read.
		m.linux, format = cfg.restore.state.Linux, images.FormatUnknown
	} else if format == images.FormatUnknown {
		if format, err = images.Detect(cfg.Image); err != nil {
			return err
		}
	}
	if cfg.restore == nil {
		m.linux = format == images.FormatBzImage || format == images.FormatVmlinux
	}
	pvhGuest := format == images.FormatPVH // vmm/pvh.go
	m.host = cfg.Host
	if m.host == "" {
		m.host = DetectHost()
	}
	m.sys = cfg.System
	if m.sys == nil {
		if m.sys, err = kvm.Open(cfg.DevicePath); err != nil {
			return err
		}
		m.ownSys = true
		primeCPUID(m.sys, cfg.DevicePath, cfg.CPUIDCacheDir)
	}
	if m.vm, err = m.sys.CreateVM(); err != nil {
		return err
	}
	if err = m.checkCPUs(); err != nil {
		return err
	}
	if m.mem, err = NewMemory(cfg.MemoryBytes); err != nil {
		return err
	}
	for i, r := range m.mem.regions {
		if err = m.vm.SetUserMemoryRegion(uint32(i), r.Start, r.host); err != nil {
			return err
		}
	}
	// Intel hosts need a TSS and an identity-map page somewhere outside RAM.
	if err = m.vm.SetTSSAddr(tssAddr); err != nil {
		return err
	}
	// A tiny guest asks for the irqchip (Config.IRQChip) to bring up its
	// own APs: with an in-kernel local APIC, KVM holds every vCPU but 0 in
	// KVM_MP_STATE_UNINITIALIZED until the guest's INIT/SIPI.
	if m.linux || pvhGuest || cfg.IRQChip {
		if err = m.vm.SetIdentityMapAddr(identityMapAddr); err != nil {
			return err
		}
		if err = m.vm.CreateIRQChip(); err != nil {
			return err
		}
		if err = m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
			return err
		}
		m.irqchip = true
	}
	m.console = &console{w: cfg.Console}
	if m.linux {
		m.console.onLine = m.watchLinuxConsole
	}
	if err = m.addDevices(); err != nil {
		return err
	}
	if err = m.addVirtio(); err != nil {
		return err
	}
	for i := 0; i < cfg.CPUs; i++ {
		c, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.cpus = append(m.cpus, &vcpu{VCPU: c, m: m})
	}
	if cfg.restore != nil {
		return m.restore(cfg.restore) // vmm/snapshot_machine.go
	}
	if m.linux {
		return m.bootLinux()
	}
	if format == images.FormatMultiboot {
		return m.bootMultiboot() // vmm/multiboot.go
	}
	if pvhGuest {
		return m.bootPVH() // vmm/pvh.go
	}
	return m.loadTiny(format)
}

// tssAddr is where KVM_SET_TSS_ADDR puts its three pages: in the MMIO gap,
// clear of the IOAPIC (0xfec00000) and the local APIC (0xfee00000).
const tssAddr = 0xfffbd000

func (m *Machine) checkCPUs() error {
	n := m.cfg.CPUs
	limit := TinyMaxCPUs
	if m.linux {
		limit = linux.MaxCPUs
	}
	if max, err := m.vm.CheckExtension(kvm.CapMaxVCPUs); err == nil && max > 0 {
		limit = min(limit, max)
	}
	if n > limit {
		return configErrorf("cpus %d: this machine can have at most %d vCPUs", n, limit)
	}
	return nil
}

// uartIRQ is a UART's interrupt line: none without an in-kernel irqchip
// (the guest then polls).
func (m *Machine) uartIRQ(gsi uint32) (devices.IRQ, error) {
	if !m.irqchip {
		return nil, nil
	}
	return m.newIRQLine(gsi)
}

func (m *Machine) addDevices() error {
	com1, err := m.uartIRQ(devices.COM1IRQ)
	if err != nil {
		return err
	}
	m.serial = devices.NewSerial(m.console, com1)
	if m.cfg.COM2 {
		irq, err := m.uartIRQ(devices.COM2IRQ)
		if err != nil {
			return err
		}
		m.com2 = devices.NewSerial(nil, irq)
	}
	ctl := devices.NewControl(0, 1, m.onExit, m.onReady)
	mmioCtl := devices.NewControl(devices.ControlMMIOExit, devices.ControlMMIOReady, m.onExit, m.onReady)
	i8042 := devices.NewI8042(m.onReset)
	type placed struct {
		space      devices.Space
		base, size uint64
		name       string
		dev        devices.Device
	}
	list := []placed{
		{devices.PIO, devices.COM1Base, devices.SerialSize, "com1", m.serial},
		{devices.PIO, devices.ControlExitPort, 2, "control", ctl},
		{devices.MMIO, devices.ControlMMIOBase, devices.ControlMMIOSize, "control-mmio", mmioCtl},
		{devices.PIO, devices.I8042Base, devices.I8042Size, "i8042", i8042},
	}
	if m.com2 != nil {
		list = append(list, placed{devices.PIO, devices.COM2Base, devices.SerialSize, "com2", m.com2})
	}
	qemu, err := m.qemuDevices() // vmm/guests.go
	if err != nil {
		return err
	}
	for _, q := range qemu {
		list = append(list, placed{devices.PIO, q.port, q.size, q.name, q.dev})
	}
	for _, d := range list {
		if err := m.bus.Add(d.space, d.base, d.size, d.name, d.dev); err != nil {
			return err
		}
	}
	m.bus.OnUnknown = func(space devices.Space, addr uint64, write bool, data []byte) {
		if m.log.Enabled(context.Background(), slog.LevelDebug) {
			m.log.Debug("unclaimed access", "space", space.String(), "addr", fmt.Sprintf("%#x", addr),
				"write", write, "size", len(data), "data", fmt.Sprintf("% x", data))
		}
	}
	return nil
}

// onReset ends the machine when the guest pulses the reset line; after a
// kernel panic (panic=N reboots) that is the panic's end.
func (m *Machine) onReset() {
	if m.panicLine.Load() != nil {
		m.finish(Result{Reason: ReasonPanic, Detail: m.panicDetail()})
		return
	}
	m.finish(Result{Reason: ReasonReset, Detail: "i8042 reset"})
}

// loadTiny places a tiny guest per ABI v1 and sets every vCPU at its entry.
func (m *Machine) loadTiny(format images.Format) error {
	cmdline := joinCmdline(m.cfg.Cmdline, m.cfg.AppendCmdline)
	if len(cmdline) > TinyMaxCmdline {
		return configErrorf("cmdline is %d bytes; a tiny guest takes at most %d", len(cmdline), TinyMaxCmdline)
	}
	loaded, err := images.LoadTiny(m.mem, m.cfg.Image, format)
	if err != nil {
		return err
	}
	if err := writeTinyPageTables(m.mem); err != nil {
		return configErrorf("%v", err)
	}
	limit, err := writeGDT(m.mem, tinyGDTAddr, []uint64{0, gdtEntry(gdtCode64, gdtFlagsL), gdtEntry(gdtData, gdtFlagsD)})
	if err != nil {
		return err
	}
	if _, err := m.mem.WriteAt(append([]byte(cmdline), 0), tinyCmdlineAddr); err != nil {
		return err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	if m.cfg.linuxCPUID {
		supported = m.hostCPUID(supported)
	}
	lm := longMode{gdtBase: tinyGDTAddr, gdtLimit: limit, codeSel: tinyCodeSel, dataSel: tinyDataSel, cr3: tinyPML4Addr}
	var tscKHz uint64
	for i, c := range m.cpus {
		entries := vcpuCPUID(supported, i, len(m.cpus))
		if i == 0 {
			m.probeCPUID = entries
		}
		if err := c.setCPUID(entries); err != nil {
			return err
		}
		if err := lm.setSregs(c.VCPU); err != nil {
			return err
		}
		regs := kvm.Regs{
			RIP:    loaded.Entry,
			RFLAGS: 0x2,
			RDI:    tinyBootInfoAddr,
			RSI:    uint64(i),
			RSP:    tinyStackTop(i),
		}
		if err := c.SetRegs(&regs); err != nil {
			return err
		}
		if i == 0 {
			if tscKHz, err = c.TSCKHz(); err != nil {
				tscKHz = 0 // optional: the guest is told 0 when unknown
			}
		}
	}
	bi := bootInfo{
		cpus: uint32(len(m.cpus)), memSize: m.mem.Size(),
		cmdlineAddr: tinyCmdlineAddr, cmdlineLen: uint32(len(cmdline)), tscKHz: tscKHz,
		devices: m.virtioBootDevices(),
	}
	_, err = m.mem.WriteAt(bi.marshal(), tinyBootInfoAddr)
	return err
}

// Memory returns the guest's RAM.
func (m *Machine) Memory() *Memory { return m.mem }

// Serial returns the COM1 UART, e.g. to feed it input with Enqueue.
func (m *Machine) Serial() *devices.Serial { return m.serial }

// COM2 returns the second UART (Config.COM2), or nil.
func (m *Machine) COM2() *devices.Serial { return m.com2 }

// Run starts every vCPU and waits until the guest ends, ctx is done or
// Stop is called. It returns the result; an error means the host failed or
// Run was called twice. A guest crash is a Result, not an error.
//
// When GOMAXPROCS exceeds the number of vCPUs, each vCPU thread issues
// KVM_RUN as a raw system call and keeps its P while the guest runs: VM
// exits get much cheaper (no P hand-off). Otherwise (GOMAXPROCS defaults to
// 1 on a one-CPU host) the scheduler is told of every KVM_RUN. A program
// that runs VMs on small hosts raises GOMAXPROCS, as `microvm boot` does.
func (m *Machine) Run(ctx context.Context) (*Result, error) {
	if !m.ranOnce.CompareAndSwap(false, true) {
		return nil, errors.New("machine already ran: build a new one")
	}
	m.setupTime = time.Since(m.launched)
	if m.cfg.restore != nil {
		// A restored guest resumes right after its ready write; its
		// virtio devices look at their queues first.
		m.resumeVirtio()
		m.onReady()
	}
	// Raw KVM_RUN (cheaper exits) only while a P stays free for the
	// watcher, timers and device goroutines.
	raw := runtime.GOMAXPROCS(0) > len(m.cpus)
	for _, c := range m.cpus {
		c.SetRawRun(raw)
	}
	m.running.Add(len(m.cpus))
	for _, c := range m.cpus[1:] {
		go c.loop()
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-m.done:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				m.finish(Result{Reason: ReasonTimeout})
			} else {
				m.finish(Result{Reason: ReasonStopped, Detail: "cancelled"})
			}
		}
	}()
	// vCPU 0 runs on the caller's goroutine: no thread hand-off on the
	// path every boot takes.
	m.cpus[0].loop()
	m.running.Wait()
	<-watched
	return m.result(), nil
}

// Stop ends a running machine; Run then returns with ReasonStopped.
func (m *Machine) Stop() { m.finish(Result{Reason: ReasonStopped}) }

// Pause stops a running machine so that it can be snapshotted: every vCPU
// leaves the guest, Run returns with ReasonPaused, and Snapshot then saves
// the guest where it was (a restore resumes it there).
func (m *Machine) Pause() { m.finish(Result{Reason: ReasonPaused, Detail: "paused by request"}) }

// Done is closed once the machine has ended.
func (m *Machine) Done() <-chan struct{} { return m.done }

func (m *Machine) result() *Result {
	m.console.flush()
	r := m.end
	r.SetupTime = m.setupTime
	r.ExitAfter = m.endedAt
	if ns := m.readyNS.Load(); ns > 0 {
		r.Ready, r.ReadyAfter = true, time.Duration(ns)
	}
	r.Exits = map[string]uint64{}
	for _, c := range m.cpus {
		for reason, n := range c.exits {
			if n > 0 {
				r.Exits[kvm.ExitReason(reason).String()] += n
			}
		}
	}
	r.UnknownReads, r.UnknownWrites = m.bus.Unknown()
	r.CPUs, r.MemoryBytes = len(m.cpus), m.mem.Size()
	if r.LastConsoleLine == "" {
		r.LastConsoleLine = m.console.Last()
	}
	m.mu.Lock()
	r.Notes = append(r.Notes, m.notes...)
	for name, n := range m.assists {
		r.Exits["assist-"+name] = n
	}
	m.mu.Unlock()
	r.Kernel = m.kernel
	r.Host = m.host
	return &r
}

// finish ends the machine with r, once: later calls are ignored. It kicks
// every vCPU out of the guest.
func (m *Machine) finish(r Result) {
	m.endOnce.Do(func() {
		m.endedAt = time.Since(m.launched)
		if r.LastConsoleLine == "" && !r.Reason.Clean() {
			r.LastConsoleLine = m.console.Last()
		}
		m.end = r
		close(m.done)
		for _, c := range m.cpus {
			c.kick()
		}
	})
}

func (m *Machine) onExit(status uint64) {
	m.finish(Result{Reason: ReasonExit, Status: status})
}

func (m *Machine) onReady() {
	if !m.readyNS.CompareAndSwap(0, int64(time.Since(m.launched))) {
		return
	}
	if m.cfg.OnReady != nil {
		m.cfg.OnReady()
	}
	if m.cfg.PauseAtReady && m.cfg.restore == nil {
		// The ready write completes when its vCPU re-enters KVM_RUN
		// (Snapshot does that, with immediate_exit set by the kick).
		m.finish(Result{Reason: ReasonPaused})
	}
}

// PumpInput feeds r into the guest's serial receiver until r fails or the
// machine ends; run it in its own goroutine. It may return only when r's
// next Read returns, after the machine ended.
func (m *Machine) PumpInput(r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			k := m.serial.Enqueue(p)
			p = p[k:]
			if len(p) > 0 {
				select {
				case <-m.done:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
		if err != nil {
			return
		}
		select {
		case <-m.done:
			return
		default:
		}
	}
}

// Close releases the VM, its vCPUs and memory. Call it after Run returns
// (or instead of Run).
func (m *Machine) Close() error {
	errs := []error{m.closeVirtio()}
	for _, c := range m.cpus {
		errs = append(errs, c.Close())
	}
	m.cpus = nil
	for _, l := range m.irqs {
		errs = append(errs, l.close())
	}
	m.irqs = nil
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
		m.vm = nil
	}
	if m.mem != nil {
		errs = append(errs, m.mem.Close())
		m.mem = nil
	}
	if m.ownSys && m.sys != nil {
		errs = append(errs, m.sys.Close())
		m.sys = nil
	}
	return errors.Join(errs...)
}

// vcpu is one virtual CPU and the goroutine that runs it.
type vcpu struct {
	*kvm.VCPU
	m     *Machine
	tid   atomic.Int32     // OS thread running the vCPU, 0 when none
	exits [32]uint64       // by kvm.ExitReason; owned by the vCPU goroutine
	cpuid []kvm.CPUIDEntry // as set, for a snapshot
}

// setCPUID sets the vCPU's CPUID and keeps it for Snapshot.
func (c *vcpu) setCPUID(entries []kvm.CPUIDEntry) error {
	c.cpuid = entries
	return c.SetCPUID2(entries)
}

// kick makes the vCPU leave KVM_RUN now, or not enter it again.
func (c *vcpu) kick() {
	c.SetImmediateExit(true)
	// A thread kicking itself is not in KVM_RUN: immediate_exit suffices.
	if tid := c.tid.Load(); tid != 0 && int(tid) != unix.Gettid() {
		unix.Tgkill(os.Getpid(), int(tid), unix.SIGURG)
	}
}
