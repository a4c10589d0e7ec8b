package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/kvm"
)

func sampleSnapshotState() *SnapshotState {
	st := &SnapshotState{
		FormatVersion:  SnapshotFormatVersion,
		MicrovmVersion: "test",
		CPU:            CPUSignature{Vendor: "AuthenticAMD", Signature: 0xa00f11},
		MemSize:        4 * snapshotPageSize,
		VCPUs:          []VCPUState{{MSRs: []kvm.MSREntry{{Index: 0xc0000103, Data: 7}}, LAPIC: make([]byte, 1024), XSave: make([]byte, kvm.XSaveSize)}},
		VM:             VMState{IOAPIC: make([]byte, 512), Clock: 12345},
		Virtio: []VirtioState{
			{Name: "blk0", Type: virtio.DeviceBlock, Disk: "/var/lib/disk.img", ReadOnly: true,
				Transport: virtio.MMIOState{Status: 15, Queues: []virtio.QueueState{{Size: 8, Ready: true, LastAvail: 3, NextUsed: 3}}}},
			{Name: "net0", Type: virtio.DeviceNet, Tap: "tap0", MAC: "02:00:00:00:00:01"},
			{Name: "rng0", Type: virtio.DeviceRNG},
		},
	}
	st.VCPUs[0].Regs.RIP = 0x100123
	st.VCPUs[0].Regs.RBX = 0xfeedface
	return st
}

func TestSnapshotStateRoundTrip(t *testing.T) {
	st := sampleSnapshotState()
	b, err := EncodeSnapshotState(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSnapshotState(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.VCPUs[0].Regs != st.VCPUs[0].Regs || got.VM.Clock != 12345 || got.CPU != st.CPU ||
		got.VCPUs[0].MSRs[0] != st.VCPUs[0].MSRs[0] || len(got.VM.IOAPIC) != 512 ||
		len(got.Virtio) != 3 || got.Virtio[0].Transport.Queues[0] != st.Virtio[0].Transport.Queues[0] || got.Virtio[1].MAC != st.Virtio[1].MAC {
		t.Errorf("round trip changed the state: %+v", got)
	}
}

func TestSnapshotStateRefusals(t *testing.T) {
	good, err := EncodeSnapshotState(sampleSnapshotState())
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		return b
	}
	otherVersion := bytes.Clone(good)
	binary.LittleEndian.PutUint32(otherVersion[8:], 99)
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNotSnapshot},
		{"not a snapshot", []byte("#!/bin/sh\necho hi\n"), ErrNotSnapshot},
		{"magic only", []byte(snapshotMagic), ErrSnapshotCorrupt},
		{"truncated", good[:len(good)-1], ErrSnapshotCorrupt},
		{"truncated payload", good[:snapshotHeaderLen+10], ErrSnapshotCorrupt},
		{"trailing byte", append(bytes.Clone(good), 0), ErrSnapshotCorrupt},
		{"bit flip in payload", flip(snapshotHeaderLen + 5), ErrSnapshotCorrupt},
		{"bit flip in checksum", flip(len(good) - 1), ErrSnapshotCorrupt},
		{"bit flip in flags", flip(12), ErrSnapshotCorrupt},
		{"other format version", otherVersion, ErrSnapshotVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSnapshotState(tc.in)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseSnapshotState = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSnapshotStateInvalid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(*SnapshotState)
	}{
		{"no vCPUs", func(s *SnapshotState) { s.VCPUs = nil }},
		{"memory not page multiple", func(s *SnapshotState) { s.MemSize = 4097 }},
		{"zero memory", func(s *SnapshotState) { s.MemSize = 0 }},
		{"short xsave", func(s *SnapshotState) { s.VCPUs[0].XSave = make([]byte, 100) }},
		{"short lapic", func(s *SnapshotState) { s.VCPUs[0].LAPIC = make([]byte, 10) }},
		{"bad mp state", func(s *SnapshotState) { s.VCPUs[0].MPState = 9 }},
		{"bad ioapic", func(s *SnapshotState) { s.VM.IOAPIC = make([]byte, 3) }},
		{"too many xcrs", func(s *SnapshotState) { s.VCPUs[0].XCRs = &kvm.XCRs{N: 17} }},
		{"no version", func(s *SnapshotState) { s.MicrovmVersion = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := sampleSnapshotState()
			tc.break_(st)
			if _, err := EncodeSnapshotState(st); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Errorf("EncodeSnapshotState = %v, want ErrSnapshotCorrupt", err)
			}
		})
	}
}

func TestSnapshotCheckHost(t *testing.T) {
	st := sampleSnapshotState()
	for _, tc := range []struct {
		name    string
		version string
		cpu     CPUSignature
		mem     uint64
		want    error
	}{
		{"same", "test", st.CPU, 0, nil},
		{"same memory", "test", st.CPU, st.MemSize, nil},
		{"other microvm", "v9", st.CPU, 0, ErrSnapshotVersion},
		{"other model", "test", CPUSignature{Vendor: "AuthenticAMD", Signature: 1}, 0, ErrSnapshotHost},
		{"other vendor", "test", CPUSignature{Vendor: "GenuineIntel", Signature: st.CPU.Signature}, 0, ErrSnapshotHost},
		{"other memory", "test", st.CPU, 2 * st.MemSize, ErrSnapshotMemory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := st.CheckHost(tc.version, tc.cpu, tc.mem); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("CheckHost = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCPUSignatureOf(t *testing.T) {
	// "AuthenticAMD": EBX "Auth", EDX "enti", ECX "cAMD".
	le := func(s string) uint32 { return binary.LittleEndian.Uint32([]byte(s)) }
	got := CPUSignatureOf([]kvm.CPUIDEntry{
		{Function: 0, EBX: le("Auth"), EDX: le("enti"), ECX: le("cAMD")},
		{Function: 1, EAX: 0xa00f11},
	})
	if got != (CPUSignature{Vendor: "AuthenticAMD", Signature: 0xa00f11}) {
		t.Errorf("CPUSignatureOf = %+v", got)
	}
}

func TestWriteSnapshotSparse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	st := sampleSnapshotState()
	st.MemSize = 256 * snapshotPageSize
	mem := make([]byte, st.MemSize)
	mem[5] = 1
	mem[200*snapshotPageSize+7] = 2
	if err := WriteSnapshot(dir, st, mem); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSnapshotState(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenSnapshotMemory(dir, got)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	back := make([]byte, len(mem))
	if _, err := f.ReadAt(back, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, mem) {
		t.Error("memory file differs from guest RAM")
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if blocks := statBlocks(fi); blocks >= 0 && blocks*512 > 64*snapshotPageSize {
		t.Errorf("memory file uses %d bytes of disk for 2 touched pages: not sparse", blocks*512)
	}

	// A memory file shorter than the RAM, a missing one, a file instead
	// of a directory, a directory without state.
	if err := os.Truncate(filepath.Join(dir, SnapshotMemoryFile), int64(st.MemSize-1)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSnapshotMemory(dir, got); !errors.Is(err, ErrSnapshotMemory) {
		t.Errorf("short memory file: %v, want ErrSnapshotMemory", err)
	}
	os.Remove(filepath.Join(dir, SnapshotMemoryFile))
	if _, err := OpenSnapshotMemory(dir, got); !errors.Is(err, ErrSnapshotMemory) {
		t.Errorf("missing memory file: %v, want ErrSnapshotMemory", err)
	}
	if _, err := ReadSnapshotState(filepath.Join(dir, SnapshotStateFile)); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("a file as the directory: %v, want ErrNotSnapshot", err)
	}
	if _, err := ReadSnapshotState(t.TempDir()); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("empty directory: %v, want ErrNotSnapshot", err)
	}
	if err := WriteSnapshot(dir, st, mem[:10]); err == nil {
		t.Error("WriteSnapshot accepted memory of the wrong size")
	}
}

// FuzzSnapshotState feeds the state parser arbitrary bytes: it must never
// panic, and whatever it accepts must encode again and parse to the same.
func FuzzSnapshotState(f *testing.F) {
	good, err := EncodeSnapshotState(sampleSnapshotState())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSnapshotState(b)
		if err != nil {
			if !errors.Is(err, ErrNotSnapshot) && !errors.Is(err, ErrSnapshotCorrupt) && !errors.Is(err, ErrSnapshotVersion) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		again, err := EncodeSnapshotState(st)
		if err != nil {
			t.Fatalf("accepted state does not encode: %v", err)
		}
		if _, err := ParseSnapshotState(again); err != nil {
			t.Fatalf("re-encoded state does not parse: %v", err)
		}
	})
}

// TestSnapshotVirtioRefusals: the device list of a state must be one
// microvm could have made.
func TestSnapshotVirtioRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]VirtioState) []VirtioState
	}{
		{"unknown type", func(d []VirtioState) []VirtioState { d[2].Type = 9; return d }},
		{"out of order", func(d []VirtioState) []VirtioState { return []VirtioState{d[1], d[0]} }},
		{"misnamed", func(d []VirtioState) []VirtioState { d[0].Name = "blk1"; return d }},
		{"two entropy devices", func(d []VirtioState) []VirtioState {
			return append(d, VirtioState{Name: "rng1", Type: virtio.DeviceRNG})
		}},
		{"relative disk", func(d []VirtioState) []VirtioState { d[0].Disk = "disk.img"; return d }},
		{"bad tap", func(d []VirtioState) []VirtioState { d[1].Tap = "../x"; return d }},
		{"bad MAC", func(d []VirtioState) []VirtioState { d[1].MAC = "nope"; return d }},
		{"too many queues", func(d []VirtioState) []VirtioState {
			d[0].Transport.Queues = make([]virtio.QueueState, maxSnapshotQueues+1)
			return d
		}},
		{"too many devices", func(d []VirtioState) []VirtioState {
			var out []VirtioState
			for i := 0; i <= MaxVirtioDevices; i++ {
				out = append(out, VirtioState{Name: fmt.Sprintf("blk%d", i), Type: virtio.DeviceBlock, Disk: "/d"})
			}
			return out
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := sampleSnapshotState()
			st.Virtio = tc.edit(st.Virtio)
			if _, err := EncodeSnapshotState(st); !errors.Is(err, ErrSnapshotCorrupt) {
				t.Errorf("%v, want ErrSnapshotCorrupt", err)
			}
		})
	}
}
