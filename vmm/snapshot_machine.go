package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"

	"github.com/microvm/microvm/devices"
	"github.com/microvm/microvm/kvm"
)

// snapshotVersion names the microvm build that takes or restores a
// snapshot: the main module's version and VCS revision as the Go toolchain
// recorded them. A snapshot restores only into the same build.
func snapshotVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "devel"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += "+" + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += "-dirty"
			}
		}
	}
	return v
}

// hostCPUSignature is the CPU model this machine's KVM reports.
func (m *Machine) hostCPUSignature() (CPUSignature, error) {
	entries, err := m.sys.SupportedCPUID()
	if err != nil {
		return CPUSignature{}, err
	}
	return CPUSignatureOf(entries), nil
}

// Snapshot writes the machine's complete state and guest RAM into dir
// (created if missing; docs/snapshot.md). The machine must not be running:
// call it on a machine that has not run yet or that has ended — after
// ReasonPaused (Config.PauseAtReady, Pause) the restored guest resumes
// where it was paused.
func (m *Machine) Snapshot(dir string) error {
	files, err := CreateSnapshotFiles(dir)
	if err != nil {
		return err
	}
	return files.Write(m)
}

// SnapshotFiles are a snapshot's two files opened for writing ahead of
// time, so that a VMM under a seccomp filter that allows no open can still
// write its snapshot (SnapshotFiles.Write needs ftruncate, pwrite64 and
// write).
type SnapshotFiles struct {
	Dir        string
	State, Mem *os.File
}

// CreateSnapshotFiles creates dir and truncates (or creates) its state
// and memory files. An empty state file is no snapshot (ErrNotSnapshot
// when read), so a snapshot that fails half-way is never mistaken for one.
func CreateSnapshotFiles(dir string) (*SnapshotFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	st, err := os.OpenFile(filepath.Join(dir, SnapshotStateFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	mem, err := os.OpenFile(filepath.Join(dir, SnapshotMemoryFile), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &SnapshotFiles{Dir: dir, State: st, Mem: mem}, nil
}

// Close closes both files.
func (f *SnapshotFiles) Close() error {
	return errors.Join(f.Mem.Close(), f.State.Close())
}

// Write captures m's state and writes memory (sparse) then state into the
// files, and closes them.
func (f *SnapshotFiles) Write(m *Machine) error {
	defer f.Close()
	if m.vm == nil {
		return errors.New("snapshot: machine is closed")
	}
	if m.ranOnce.Load() {
		select {
		case <-m.done:
			m.running.Wait() // every vCPU thread out of its loop
		default:
			return errors.New("snapshot: machine is running; pause it first (Config.PauseAtReady, Pause)")
		}
	}
	// No chain in flight from here on: device state and memory agree.
	for _, vd := range m.virtio {
		vd.dev.Pause()
		defer vd.dev.Resume()
	}
	st, err := m.captureState()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	state, err := EncodeSnapshotState(st)
	if err != nil {
		return err
	}
	if err := writeSparse(f.Mem, m.mem.host); err != nil {
		return err
	}
	for off := 0; off < len(state); {
		n, err := f.State.Write(state[off:])
		if err != nil {
			return fmt.Errorf("snapshot state: %w", err)
		}
		off += n
	}
	return f.Close()
}

// captureState reads every vCPU's and the VM's in-kernel state.
func (m *Machine) captureState() (*SnapshotState, error) {
	cpu, err := m.hostCPUSignature()
	if err != nil {
		return nil, err
	}
	st := &SnapshotState{
		FormatVersion:  SnapshotFormatVersion,
		MicrovmVersion: snapshotVersion(),
		CPU:            cpu,
		MemSize:        m.mem.Size(),
		Linux:          m.linux,
	}
	msrIndex, err := m.sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	xsaveSize := 0
	if n, _ := m.vm.CheckExtension(kvm.CapXSave); n > 0 {
		xsaveSize = kvm.XSaveSize
		if n2, _ := m.vm.CheckExtension(kvm.CapXSave2); n2 > kvm.XSaveSize {
			xsaveSize = n2
		}
	}
	hasXCRs, _ := m.vm.CheckExtension(kvm.CapXCRs)
	for _, c := range m.cpus {
		// An exit to user space (the ready write) completes only when the
		// vCPU re-enters KVM_RUN: with immediate_exit set it does so and
		// returns at once, before any further guest instruction.
		if m.ranOnce.Load() {
			c.SetImmediateExit(true)
			if err := c.Run(); err != nil && !errors.Is(err, kvm.ErrInterrupted) {
				return nil, fmt.Errorf("vCPU %d: complete the last exit: %w", c.ID(), err)
			}
		}
		s := VCPUState{CPUID: c.cpuid}
		if s.Regs, err = c.Regs(); err != nil {
			return nil, err
		}
		if s.Sregs, err = c.Sregs(); err != nil {
			return nil, err
		}
		if s.FPU, err = c.FPU(); err != nil {
			return nil, err
		}
		if xsaveSize > 0 {
			x, err := c.XSave(xsaveSize)
			if err != nil {
				return nil, err
			}
			s.XSave = x.Region
		}
		if hasXCRs > 0 {
			x, err := c.XCRs()
			if err != nil {
				return nil, err
			}
			s.XCRs = &x
		}
		if s.MSRs, err = c.AllMSRs(msrIndex); err != nil {
			return nil, err
		}
		if m.irqchip {
			l, err := c.LAPIC()
			if err != nil {
				return nil, err
			}
			s.LAPIC = append([]byte(nil), l.Regs[:]...)
		}
		if s.Events, err = c.VCPUEvents(); err != nil {
			return nil, err
		}
		if s.MPState, err = c.MPState(); err != nil {
			return nil, err
		}
		if s.DebugRegs, err = c.DebugRegs(); err != nil {
			return nil, err
		}
		st.VCPUs = append(st.VCPUs, s)
	}
	if m.irqchip {
		for _, chip := range []struct {
			id  uint32
			dst *[]byte
		}{{kvm.IRQChipPICMaster, &st.VM.PICMaster}, {kvm.IRQChipPICSlave, &st.VM.PICSlave}, {kvm.IRQChipIOAPIC, &st.VM.IOAPIC}} {
			c, err := m.vm.IRQChip(chip.id)
			if err != nil {
				return nil, err
			}
			*chip.dst = append([]byte(nil), c.Chip[:]...)
		}
		p, err := m.vm.PIT2()
		if err != nil {
			return nil, err
		}
		st.VM.PIT = &p
	}
	clk, err := m.vm.Clock()
	if err != nil {
		return nil, err
	}
	st.VM.Clock = clk.Clock
	serial, err := json.Marshal(m.serial.State())
	if err != nil {
		return nil, err
	}
	st.Devices = map[string]json.RawMessage{"serial": serial}
	if m.com2 != nil {
		if st.Devices["com2"], err = json.Marshal(m.com2.State()); err != nil {
			return nil, err
		}
	}
	st.DebugExit, st.COM2 = m.cfg.DebugExit, m.cfg.COM2
	if st.Virtio, err = m.virtioStates(); err != nil {
		return nil, err
	}
	return st, nil
}

// snapshotSource is a snapshot being restored: its parsed state and its
// open memory file.
type snapshotSource struct {
	state *SnapshotState
	mem   *os.File
}

// Restore builds a machine from the snapshot in dir: guest RAM is a
// copy-on-write private mapping of dir/memory (pages fault in lazily;
// restores of one snapshot share its clean pages in the page cache), and
// every vCPU, the in-kernel irqchip, PIT and clock, the UART and the
// virtio transports get the snapshot's state. No image is read: cfg gives
// the host side (System, Console, Logger, OnReady, CPUIDCacheDir, Host);
// Image and Format are ignored, and MemoryBytes and CPUs, when set, must
// match the snapshot's. The virtio devices are the snapshot's, on the
// disk images and taps it names; cfg.Disks, when given, must list as many
// disks and replaces their paths (or open files), and cfg.Nets their taps.
// Run resumes the guest where the snapshot stopped it and counts it ready
// at once. Every refusal wraps ErrNotSnapshot or one of the ErrSnapshot*
// errors.
func Restore(dir string, cfg Config) (*Machine, error) {
	st, err := ReadSnapshotState(dir)
	if err != nil {
		return nil, err
	}
	if cfg.MemoryBytes != 0 && cfg.MemoryBytes != st.MemSize {
		return nil, fmt.Errorf("%w: snapshot has %d bytes of RAM, the configuration asks for %d", ErrSnapshotMemory, st.MemSize, cfg.MemoryBytes)
	}
	if cfg.CPUs != 0 && cfg.CPUs != len(st.VCPUs) {
		return nil, fmt.Errorf("%w: snapshot has %d vCPUs, the configuration asks for %d", ErrSnapshotCorrupt, len(st.VCPUs), cfg.CPUs)
	}
	mem, err := OpenSnapshotMemory(dir, st)
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	if err := restoreVirtioConfig(&cfg, st.Virtio); err != nil {
		return nil, err
	}
	cfg.MemoryBytes, cfg.CPUs = st.MemSize, len(st.VCPUs)
	cfg.IRQChip, cfg.DebugExit, cfg.COM2 = len(st.VM.IOAPIC) != 0, st.DebugExit, st.COM2
	cfg.Image, cfg.Format, cfg.PauseAtReady = nil, 0, false
	cfg.restore = &snapshotSource{state: st, mem: mem}
	return New(cfg)
}

// restore replaces the freshly built machine's RAM and state with the
// snapshot's (build's last step when Config.restore is set).
func (m *Machine) restore(src *snapshotSource) error {
	st := src.state
	cpu, err := m.hostCPUSignature()
	if err != nil {
		return err
	}
	if err := st.CheckHost(snapshotVersion(), cpu, m.mem.Size()); err != nil {
		return err
	}
	// Mapping over the same host range keeps the KVM memory slots valid.
	if err := mapPrivateFixed(m.mem.host, int(src.mem.Fd())); err != nil {
		return fmt.Errorf("map %s copy-on-write: %w", src.mem.Name(), err)
	}
	if m.irqchip {
		for _, chip := range []struct {
			id  uint32
			src []byte
		}{{kvm.IRQChipPICMaster, st.VM.PICMaster}, {kvm.IRQChipPICSlave, st.VM.PICSlave}, {kvm.IRQChipIOAPIC, st.VM.IOAPIC}} {
			c := kvm.IRQChip{ChipID: chip.id}
			copy(c.Chip[:], chip.src)
			if err := m.vm.SetIRQChip(&c); err != nil {
				return err
			}
		}
		if st.VM.PIT != nil {
			if err := m.vm.SetPIT2(st.VM.PIT); err != nil {
				return err
			}
		}
	}
	if err := m.vm.SetClock(&kvm.ClockData{Clock: st.VM.Clock}); err != nil {
		return err
	}
	for name, dev := range map[string]*devices.Serial{"serial": m.serial, "com2": m.com2} {
		raw, ok := st.Devices[name]
		if !ok || dev == nil {
			continue
		}
		var s devices.SerialState
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("%w: %s state: %v", ErrSnapshotCorrupt, name, err)
		}
		dev.SetState(s)
	}
	if err := m.restoreVirtio(st.Virtio); err != nil {
		return err
	}
	for i, c := range m.cpus {
		if len(st.VCPUs[i].CPUID) > 0 {
			if err := c.setCPUID(st.VCPUs[i].CPUID); err != nil {
				return fmt.Errorf("restore vCPU %d: %w", i, err)
			}
		}
		if err := applyVCPUState(c.VCPU, &st.VCPUs[i], m.irqchip); err != nil {
			return fmt.Errorf("restore vCPU %d: %w", i, err)
		}
	}
	return nil
}

// applyVCPUState sets s on c, in Firecracker's order: MP state, registers,
// XSAVE/XCRs, debug registers, LAPIC, MSRs, and pending events last.
func applyVCPUState(c *kvm.VCPU, s *VCPUState, irqchip bool) error {
	if err := c.SetMPState(s.MPState); err != nil {
		return err
	}
	if err := c.SetRegs(&s.Regs); err != nil {
		return err
	}
	if err := c.SetSregs(&s.Sregs); err != nil {
		return err
	}
	if err := c.SetFPU(&s.FPU); err != nil {
		return err
	}
	if len(s.XSave) > 0 {
		if err := c.SetXSave(kvm.XSave{Region: s.XSave}); err != nil {
			return err
		}
	}
	if s.XCRs != nil {
		if err := c.SetXCRs(s.XCRs); err != nil {
			return err
		}
	}
	if err := c.SetDebugRegs(&s.DebugRegs); err != nil {
		return err
	}
	if irqchip && len(s.LAPIC) > 0 {
		var l kvm.LAPICState
		copy(l.Regs[:], s.LAPIC)
		if err := c.SetLAPIC(&l); err != nil {
			return err
		}
	}
	if err := setSnapshotMSRs(c, s.MSRs); err != nil {
		return err
	}
	return c.SetVCPUEvents(&s.Events)
}

// setSnapshotMSRs sets a snapshot's MSRs. KVM lists MSRs in
// KVM_GET_MSR_INDEX_LIST that it refuses to set in some configurations
// (MSR_KVM_ASYNC_PF_INT without an in-kernel LAPIC, say); one that the
// snapshot records as 0 is skipped — a fresh vCPU of the same
// configuration holds the same 0 — and any other refusal is an error.
func setSnapshotMSRs(c *kvm.VCPU, entries []kvm.MSREntry) error {
	for len(entries) > 0 {
		err := c.SetAllMSRs(entries)
		var refused *kvm.MSRRefusedError
		if err == nil || !errors.As(err, &refused) {
			return err
		}
		i := slices.IndexFunc(entries, func(e kvm.MSREntry) bool { return e.Index == refused.Index })
		if i < 0 || entries[i].Data != 0 {
			return err
		}
		entries = entries[i+1:]
	}
	return nil
}
