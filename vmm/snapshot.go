package vmm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// A snapshot is a directory holding two files (docs/snapshot.md):
//
//   - state: an envelope (magic, format version, payload length) around a
//     JSON payload (SnapshotState), followed by the SHA-256 of everything
//     before it.
//   - memory: guest RAM, byte for byte, as a sparse file: only pages that
//     hold a non-zero byte are written, so untouched RAM costs no disk.
const (
	// SnapshotStateFile and SnapshotMemoryFile name the two files.
	SnapshotStateFile  = "state"
	SnapshotMemoryFile = "memory"

	// SnapshotFormatVersion is the version of the state file's layout.
	SnapshotFormatVersion = 1

	snapshotMagic     = "MVMSNAP\x00"
	snapshotHeaderLen = 8 + 4 + 4 + 8 // magic, version, flags, payload length
	snapshotSumLen    = sha256.Size

	// Limits of the strict parser.
	maxSnapshotPayload = 64 << 20
	maxSnapshotVCPUs   = 256
	maxSnapshotMSRs    = 1024
	maxSnapshotXSave   = 1 << 20
	maxSnapshotMemory  = 1 << 40
	snapshotPageSize   = 4096
)

// Errors a snapshot is refused with. Each wraps the details; test with
// errors.Is. The CLI gives each its own exit status.
var (
	// ErrNotSnapshot: the directory holds no snapshot state file, or the
	// file does not start with the snapshot magic.
	ErrNotSnapshot = errors.New("not a microvm snapshot")
	// ErrSnapshotCorrupt: truncated, trailing bytes, bad checksum, or a
	// payload that does not parse or breaks a limit.
	ErrSnapshotCorrupt = errors.New("corrupt snapshot")
	// ErrSnapshotVersion: another format version or microvm version.
	ErrSnapshotVersion = errors.New("snapshot from another version")
	// ErrSnapshotHost: the snapshot was taken on another CPU model.
	ErrSnapshotHost = errors.New("snapshot from another CPU")
	// ErrSnapshotMemory: the memory file is missing or does not match the
	// recorded memory size, or the configuration asks for another size.
	ErrSnapshotMemory = errors.New("snapshot memory mismatch")
)

// CPUSignature identifies the host CPU model a snapshot was taken on: the
// CPUID leaf 0 vendor and the leaf 1 family/model/stepping signature (EAX).
type CPUSignature struct {
	Vendor    string `json:"vendor"`
	Signature uint32 `json:"signature"`
}

// CPUSignatureOf derives the signature from CPUID entries (the host's
// KVM_GET_SUPPORTED_CPUID answer).
func CPUSignatureOf(entries []kvm.CPUIDEntry) CPUSignature {
	var s CPUSignature
	for _, e := range entries {
		switch e.Function {
		case 0:
			var b [12]byte
			binary.LittleEndian.PutUint32(b[0:], e.EBX)
			binary.LittleEndian.PutUint32(b[4:], e.EDX)
			binary.LittleEndian.PutUint32(b[8:], e.ECX)
			s.Vendor = string(bytes.TrimRight(b[:], "\x00"))
		case 1:
			s.Signature = e.EAX
		}
	}
	return s
}

// VCPUState is everything KVM holds for one vCPU.
type VCPUState struct {
	CPUID     []kvm.CPUIDEntry `json:"cpuid,omitempty"` // as the VMM set it
	Regs      kvm.Regs         `json:"regs"`
	Sregs     kvm.Sregs        `json:"sregs"`
	FPU       kvm.FPU          `json:"fpu"`
	XSave     []byte           `json:"xsave,omitempty"` // empty without KVM_CAP_XSAVE
	XCRs      *kvm.XCRs        `json:"xcrs,omitempty"`
	MSRs      []kvm.MSREntry   `json:"msrs"`
	LAPIC     []byte           `json:"lapic,omitempty"` // 1024 bytes with an irqchip
	Events    kvm.VCPUEvents   `json:"events"`
	MPState   uint32           `json:"mp_state"`
	DebugRegs kvm.DebugRegs    `json:"debug_regs"`
}

// VMState is the VM-wide in-kernel state: irqchip, PIT and kvmclock.
type VMState struct {
	PICMaster []byte         `json:"pic_master,omitempty"` // 512-byte kvm_irqchip unions
	PICSlave  []byte         `json:"pic_slave,omitempty"`
	IOAPIC    []byte         `json:"ioapic,omitempty"`
	PIT       *kvm.PITState2 `json:"pit,omitempty"`
	Clock     uint64         `json:"clock"`
}

// SnapshotState is the parsed state file.
type SnapshotState struct {
	FormatVersion  uint32       `json:"format_version"`
	MicrovmVersion string       `json:"microvm_version"`
	CPU            CPUSignature `json:"cpu"`
	MemSize        uint64       `json:"mem_size"`
	Linux          bool         `json:"linux"`
	DebugExit      bool         `json:"debug_exit,omitempty"`
	COM2           bool         `json:"com2,omitempty"`
	VCPUs          []VCPUState  `json:"vcpus"`
	VM             VMState      `json:"vm"`
	// Devices holds each device's state by name ("serial"); the device's
	// own State type defines the JSON.
	Devices map[string]json.RawMessage `json:"devices,omitempty"`
	// Virtio lists the virtio-mmio devices in placement order: disks,
	// then network devices, then the entropy device.
	Virtio []VirtioState `json:"virtio,omitempty"`
}

// VirtioState is one virtio-mmio device of a snapshot: what it is, the
// host resource behind it, and its transport's state.
type VirtioState struct {
	Name string          `json:"name"` // blk0, net0, rng0, ...
	Type virtio.DeviceID `json:"type"`
	// Disk and ReadOnly are a blk device's image (an absolute path).
	Disk     string `json:"disk,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Tap and MAC are a net device's tap interface and guest address.
	Tap       string           `json:"tap,omitempty"`
	MAC       string           `json:"mac,omitempty"`
	Transport virtio.MMIOState `json:"transport"`
}

// EncodeSnapshotState serializes st into the state file format.
func EncodeSnapshotState(st *SnapshotState) ([]byte, error) {
	if err := st.validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	if len(payload) > maxSnapshotPayload {
		return nil, fmt.Errorf("snapshot state: payload of %d bytes over the %d-byte limit", len(payload), maxSnapshotPayload)
	}
	b := make([]byte, snapshotHeaderLen, snapshotHeaderLen+len(payload)+snapshotSumLen)
	copy(b, snapshotMagic)
	binary.LittleEndian.PutUint32(b[8:], SnapshotFormatVersion)
	binary.LittleEndian.PutUint64(b[16:], uint64(len(payload)))
	b = append(b, payload...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// ParseSnapshotState parses and checks a state file. It never panics;
// every refusal wraps one of the ErrSnapshot* errors or ErrNotSnapshot.
func ParseSnapshotState(b []byte) (*SnapshotState, error) {
	if len(b) < len(snapshotMagic) || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: no snapshot magic", ErrNotSnapshot)
	}
	if len(b) < snapshotHeaderLen+snapshotSumLen {
		return nil, fmt.Errorf("%w: state file truncated at %d bytes", ErrSnapshotCorrupt, len(b))
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != SnapshotFormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this microvm reads %d", ErrSnapshotVersion, v, SnapshotFormatVersion)
	}
	if f := binary.LittleEndian.Uint32(b[12:]); f != 0 {
		return nil, fmt.Errorf("%w: unknown header flags %#x", ErrSnapshotCorrupt, f)
	}
	n := binary.LittleEndian.Uint64(b[16:])
	if want := uint64(len(b) - snapshotHeaderLen - snapshotSumLen); n != want {
		return nil, fmt.Errorf("%w: payload length %d, file holds %d (truncated or trailing bytes)", ErrSnapshotCorrupt, n, want)
	}
	body := b[:len(b)-snapshotSumLen]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return nil, fmt.Errorf("%w: SHA-256 checksum mismatch", ErrSnapshotCorrupt)
	}
	dec := json.NewDecoder(bytes.NewReader(body[snapshotHeaderLen:]))
	dec.DisallowUnknownFields()
	var st SnapshotState
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrSnapshotCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: payload: trailing data", ErrSnapshotCorrupt)
	}
	if err := st.validate(); err != nil {
		return nil, err
	}
	return &st, nil
}

// validate enforces the limits and invariants of a state.
func (st *SnapshotState) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrSnapshotCorrupt, fmt.Sprintf(format, args...))
	}
	if st.FormatVersion != SnapshotFormatVersion {
		return fmt.Errorf("%w: payload format version %d, want %d", ErrSnapshotVersion, st.FormatVersion, SnapshotFormatVersion)
	}
	if st.MicrovmVersion == "" {
		return bad("no microvm version")
	}
	if st.MemSize == 0 || st.MemSize%snapshotPageSize != 0 || st.MemSize > maxSnapshotMemory {
		return bad("memory size %d not a page multiple in (0, %d]", st.MemSize, uint64(maxSnapshotMemory))
	}
	if len(st.VCPUs) == 0 || len(st.VCPUs) > maxSnapshotVCPUs {
		return bad("%d vCPUs, want 1..%d", len(st.VCPUs), maxSnapshotVCPUs)
	}
	for i, c := range st.VCPUs {
		switch {
		case len(c.XSave) != 0 && (len(c.XSave) < kvm.XSaveSize || len(c.XSave) > maxSnapshotXSave || len(c.XSave)%64 != 0):
			return bad("vCPU %d: XSAVE area of %d bytes", i, len(c.XSave))
		case c.XCRs != nil && c.XCRs.N > kvm.MaxXCRs:
			return bad("vCPU %d: %d XCRs, at most %d", i, c.XCRs.N, kvm.MaxXCRs)
		case len(c.MSRs) > maxSnapshotMSRs:
			return bad("vCPU %d: %d MSRs, at most %d", i, len(c.MSRs), maxSnapshotMSRs)
		case len(c.LAPIC) != 0 && len(c.LAPIC) != len(kvm.LAPICState{}.Regs):
			return bad("vCPU %d: LAPIC page of %d bytes", i, len(c.LAPIC))
		case c.MPState > kvm.MPStateSIPIReceived:
			return bad("vCPU %d: MP state %d", i, c.MPState)
		}
	}
	if err := validateVirtio(st.Virtio); err != nil {
		return bad("%v", err)
	}
	for name, chip := range map[string][]byte{"pic_master": st.VM.PICMaster, "pic_slave": st.VM.PICSlave, "ioapic": st.VM.IOAPIC} {
		if len(chip) != 0 && len(chip) != len(kvm.IRQChip{}.Chip) {
			return bad("%s state of %d bytes", name, len(chip))
		}
	}
	return nil
}

// maxSnapshotQueues bounds the queues of one virtio device in a state.
const maxSnapshotQueues = 16

// validateVirtio checks a snapshot's device list: at most
// MaxVirtioDevices, disks then network devices then at most one entropy
// device, each named by its kind and index, with what its kind needs.
func validateVirtio(devs []VirtioState) error {
	if len(devs) > MaxVirtioDevices {
		return fmt.Errorf("%d virtio devices, at most %d", len(devs), MaxVirtioDevices)
	}
	rank := map[virtio.DeviceID]int{virtio.DeviceBlock: 0, virtio.DeviceNet: 1, virtio.DeviceRNG: 2}
	prefix := map[virtio.DeviceID]string{virtio.DeviceBlock: "blk", virtio.DeviceNet: "net", virtio.DeviceRNG: "rng"}
	count := map[virtio.DeviceID]int{}
	last := 0
	for i, d := range devs {
		r, ok := rank[d.Type]
		switch {
		case !ok:
			return fmt.Errorf("virtio device %d: type %d is not one microvm makes", i, d.Type)
		case r < last:
			return fmt.Errorf("virtio device %d (%s): out of placement order", i, d.Name)
		case d.Name != fmt.Sprintf("%s%d", prefix[d.Type], count[d.Type]):
			return fmt.Errorf("virtio device %d: name %q, want %s%d", i, d.Name, prefix[d.Type], count[d.Type])
		case d.Type == virtio.DeviceRNG && count[d.Type] > 0:
			return fmt.Errorf("virtio device %d: a second entropy device", i)
		case d.Type == virtio.DeviceBlock && !filepath.IsAbs(d.Disk):
			return fmt.Errorf("virtio %s: disk path %q is not absolute", d.Name, d.Disk)
		case d.Type == virtio.DeviceNet && virtio.ValidTapName(d.Tap) != nil:
			return fmt.Errorf("virtio %s: tap %q: %v", d.Name, d.Tap, virtio.ValidTapName(d.Tap))
		case len(d.Transport.Queues) > maxSnapshotQueues:
			return fmt.Errorf("virtio %s: %d queues, at most %d", d.Name, len(d.Transport.Queues), maxSnapshotQueues)
		}
		if d.Type == virtio.DeviceNet {
			if mac, err := net.ParseMAC(d.MAC); err != nil || len(mac) != 6 {
				return fmt.Errorf("virtio %s: MAC %q is not a 6-byte address", d.Name, d.MAC)
			}
		}
		count[d.Type]++
		last = r
	}
	return nil
}

// CheckHost refuses a snapshot that this microvm version, this CPU model
// or this memory size (memSize; 0 = take the snapshot's) cannot restore.
func (st *SnapshotState) CheckHost(version string, cpu CPUSignature, memSize uint64) error {
	if st.MicrovmVersion != version {
		return fmt.Errorf("%w: taken by microvm %q, this is %q", ErrSnapshotVersion, st.MicrovmVersion, version)
	}
	if st.CPU != cpu {
		return fmt.Errorf("%w: taken on %s signature %#x, this host is %s %#x", ErrSnapshotHost,
			st.CPU.Vendor, st.CPU.Signature, cpu.Vendor, cpu.Signature)
	}
	if memSize != 0 && memSize != st.MemSize {
		return fmt.Errorf("%w: snapshot has %d bytes of RAM, the configuration asks for %d", ErrSnapshotMemory, st.MemSize, memSize)
	}
	return nil
}

// ReadSnapshotState reads and parses dir/state.
func ReadSnapshotState(dir string) (*SnapshotState, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSnapshot, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrNotSnapshot, dir)
	}
	p := filepath.Join(dir, SnapshotStateFile)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSnapshot, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, snapshotHeaderLen+maxSnapshotPayload+snapshotSumLen+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	st, err := ParseSnapshotState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return st, nil
}

// OpenSnapshotMemory opens dir/memory for reading and checks that it
// holds exactly st.MemSize bytes.
func OpenSnapshotMemory(dir string, st *SnapshotState) (*os.File, error) {
	p := filepath.Join(dir, SnapshotMemoryFile)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotMemory, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() || uint64(fi.Size()) != st.MemSize {
		f.Close()
		return nil, fmt.Errorf("%w: %s holds %d bytes, the state records %d", ErrSnapshotMemory, p, fi.Size(), st.MemSize)
	}
	return f, nil
}

// WriteSnapshot writes a snapshot of st and guest RAM mem into dir
// (created if missing): memory first, sparse, then the state file.
func WriteSnapshot(dir string, st *SnapshotState, mem []byte) error {
	if uint64(len(mem)) != st.MemSize {
		return fmt.Errorf("snapshot: %d bytes of memory, state records %d", len(mem), st.MemSize)
	}
	state, err := EncodeSnapshotState(st)
	if err != nil {
		return err
	}
	f, err := CreateSnapshotFiles(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeSparse(f.Mem, mem); err != nil {
		return err
	}
	if _, err := f.State.Write(state); err != nil {
		return fmt.Errorf("snapshot state: %w", err)
	}
	return f.Close()
}

// writeSparse writes mem to f (empty, open for writing), leaving all-zero
// pages as holes: only pages with a non-zero byte cost disk.
func writeSparse(f *os.File, mem []byte) error {
	if err := f.Truncate(int64(len(mem))); err != nil {
		return fmt.Errorf("snapshot memory: %w", err)
	}
	fd := int(f.Fd())
	for off := 0; off < len(mem); {
		if pageZero(mem[off:min(off+snapshotPageSize, len(mem))]) {
			off += snapshotPageSize
			continue
		}
		end := off + snapshotPageSize
		for end < len(mem) && !pageZero(mem[end:min(end+snapshotPageSize, len(mem))]) {
			end += snapshotPageSize
		}
		end = min(end, len(mem))
		for done := off; done < end; {
			n, err := unix.Pwrite(fd, mem[done:end], int64(done))
			if err != nil {
				return fmt.Errorf("snapshot memory at %#x: %w", done, err)
			}
			done += n
		}
		off = end
	}
	return nil
}

func pageZero(p []byte) bool {
	for len(p) >= 8 {
		if binary.LittleEndian.Uint64(p) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
