package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/images"
)

// snapshotProgram exits with [slot] + CL and stores that sum at slot+8
// first, so a run shows both whether memory and registers came back and
// whether its write stayed private.
func snapshotProgram(slot uint64) []byte {
	addALCL := []byte{0x00, 0xc8} // add al, cl
	return prog(movFromAbs(slot), addALCL, movToAbs(slot+8), movDX(0x501), outDXAL, cli, hlt)
}

func runMachine(t *testing.T, m *Machine) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// TestSnapshotRestoreRegistersAndMemory snapshots a tiny guest after the
// VMM set a register and a memory byte that the guest's code does not
// set itself, restores the snapshot three times, and checks that each
// restored guest saw both (exit status 42) and that its memory write did
// not reach the snapshot's memory file.
func TestSnapshotRestoreRegistersAndMemory(t *testing.T) {
	sys := openKVM(t)
	const slot = 0x200000
	cfg := Config{Image: snapshotProgram(slot), Format: images.FormatFlat, System: sys, MemoryBytes: 4 << 20}

	// Without the snapshot the guest exits with 0 + CL = 0: the test can fail.
	fresh, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res := runMachine(t, fresh); res.Reason != ReasonExit || res.Status == 42 {
		t.Fatalf("fresh guest: %v status %d; want an exit other than 42", res.Reason, res.Status)
	}
	fresh.Close()

	orig, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if _, err := orig.Memory().WriteAt([]byte{40}, slot); err != nil {
		t.Fatal(err)
	}
	regs, err := orig.cpus[0].Regs()
	if err != nil {
		t.Fatal(err)
	}
	regs.RCX = 2
	if err := orig.cpus[0].SetRegs(&regs); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := orig.Snapshot(dir); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 3; i++ {
		m, err := Restore(dir, cfg)
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		res := runMachine(t, m)
		if res.Reason != ReasonExit || res.Status != 42 {
			t.Errorf("restore %d: %v status %d, want exit 42", i, res.Reason, res.Status)
		}
		if b, err := m.Memory().Slice(slot+8, 1); err != nil || b[0] != 42 {
			t.Errorf("restore %d: guest's own write not in its memory: %v %v", i, b, err)
		}
		m.Close()
	}
	file, err := os.ReadFile(filepath.Join(dir, SnapshotMemoryFile))
	if err != nil {
		t.Fatal(err)
	}
	if file[slot] != 40 || file[slot+8] != 0 {
		t.Errorf("memory file [slot]=%d [slot+8]=%d, want 40 and 0 (copy-on-write)", file[slot], file[slot+8])
	}
}

// TestRestoreRefusals needs no KVM: each bad snapshot is refused before
// a VM is made.
func TestRestoreRefusals(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snap")
	st := sampleSnapshotState()
	if err := WriteSnapshot(dir, st, make([]byte, st.MemSize)); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Image: exitWithAL, Format: images.FormatFlat}
	if _, err := Restore(t.TempDir(), cfg); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("empty dir: %v, want ErrNotSnapshot", err)
	}
	bad := cfg
	bad.MemoryBytes = 2 * st.MemSize
	if _, err := Restore(dir, bad); !errors.Is(err, ErrSnapshotMemory) {
		t.Errorf("other memory size: %v, want ErrSnapshotMemory", err)
	}
	bad = cfg
	bad.CPUs = 2
	if _, err := Restore(dir, bad); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Errorf("other vCPU count: %v, want ErrSnapshotCorrupt", err)
	}
	p := filepath.Join(dir, SnapshotStateFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(dir, cfg); !errors.Is(err, ErrSnapshotCorrupt) {
		t.Errorf("bit flip: %v, want ErrSnapshotCorrupt", err)
	}
}

// readyCheckGuest sets RBX and a memory word before its ready write and,
// after it, checks both, bumps a counter in memory, prints "R" on COM1 and
// exits with 40 + the counter (41 on a cold run and on every restore of a
// snapshot taken at ready, whose copy-on-write memory the counter bump
// never reaches), or with 1 when a check fails.
func readyCheckGuest() []byte {
	const magic = 0x1122334455667788
	le := binary.LittleEndian
	slot := []byte{0x04, 0x25, 0x00, 0x00, 0x20, 0x00} // [0x200000] (SIB, disp32)
	ctr := []byte{0x04, 0x25, 0x04, 0x00, 0x20, 0x00}  // [0x200004]
	before := prog(
		le.AppendUint64([]byte{0x48, 0xbb}, magic),                    // mov rbx, magic
		append(append([]byte{0xc7}, slot...), 0xee, 0xff, 0xc0, 0x00), // mov dword [slot], 0xc0ffee
		movDX(0x502), outDXAL, // ready
	)
	bad := prog(movAL(1), exitWithAL)
	tail := prog(
		append([]byte{0xff}, ctr...),     // inc dword [ctr]
		append([]byte{0x8b}, ctr...),     // mov eax, [ctr]
		[]byte{0x04, 40},                 // add al, 40
		movDX(0x3f8), []byte{0x88, 0xc1}, // mov cl, al
		[]byte{0xb0, 'R'}, outDXAL, // out 'R'
		[]byte{0x88, 0xc8}, // mov al, cl
		exitWithAL,
	)
	check2 := prog(append(append([]byte{0x81, 0x3c}, slot[1:]...), 0xee, 0xff, 0xc0, 0x00)) // cmp dword [slot], 0xc0ffee
	jne := func(skip int) []byte { return []byte{0x75, byte(skip)} }
	after := prog(
		le.AppendUint64([]byte{0x48, 0xb8}, magic), // mov rax, magic
		[]byte{0x48, 0x39, 0xc3},                   // cmp rbx, rax
		jne(len(check2)+2+len(tail)),
		check2,
		jne(len(tail)),
		tail,
		bad,
	)
	return prog(before, after)
}

// TestSnapshotAtReadyRestoredThreeTimes pauses the ready-check guest at
// its ready write (Config.PauseAtReady), snapshots it, and restores the
// snapshot three times: each restored guest must find its registers and
// memory as they were, resume right after the ready write (console "R",
// exit status 41), and leave the snapshot's memory file unchanged.
func TestSnapshotAtReadyRestoredThreeTimes(t *testing.T) {
	sys := openKVM(t)
	img := readyCheckGuest()
	cold, out := boot(t, Config{Image: img, Format: images.FormatFlat, MemoryBytes: 4 << 20}, 0)
	if cold.Reason != ReasonExit || cold.Status != 41 || out != "R" {
		t.Fatalf("cold run: %s, console %q; want exit 41 and R (the guest itself is wrong)", cold.Summary(), out)
	}
	m, err := New(Config{Image: img, Format: images.FormatFlat, MemoryBytes: 4 << 20, System: sys, PauseAtReady: true})
	if err != nil {
		t.Fatal(err)
	}
	res := runMachine(t, m)
	if res.Reason != ReasonPaused || !res.Ready {
		t.Fatalf("%s (ready %v), want paused at ready", res.Summary(), res.Ready)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := m.Snapshot(dir); err != nil {
		t.Fatal(err)
	}
	m.Close()
	memPath := filepath.Join(dir, SnapshotMemoryFile)
	fi, err := os.Stat(memPath)
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		t.Logf("memory file: %d bytes, %d KiB on disk", fi.Size(), st.Blocks/2)
		if st.Blocks*512 >= fi.Size()/2 {
			t.Errorf("memory file takes %d bytes of disk for %d bytes of mostly untouched RAM: not sparse", st.Blocks*512, fi.Size())
		}
	}
	before, err := os.ReadFile(memPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		var console bytes.Buffer
		r, err := Restore(dir, Config{System: sys, Console: &console})
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		res := runMachine(t, r)
		r.Close()
		if res.Reason != ReasonExit || res.Status != 41 || console.String() != "R" || !res.Ready {
			t.Errorf("restore %d: %s, console %q, ready %v; want exit 41 after R", i, res.Summary(), console.String(), res.Ready)
		}
		t.Logf("restore %d: restore→ready %v, →exit %v", i, res.ReadyAfter, res.ExitAfter)
	}
	after, err := os.ReadFile(memPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("restored guests' writes reached the snapshot's memory file")
	}

	// The memory does come from the file: change the word the guest
	// checks and a restore must see it (exit 1).
	if err := os.WriteFile(memPath, append(append(before[:0x200000:0x200000], 0), before[0x200001:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(dir, Config{System: sys})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if res := runMachine(t, r); res.Reason != ReasonExit || res.Status != 1 {
		t.Errorf("restore of altered memory: %s, want exit 1 (the check fails)", res.Summary())
	}
}

// TestSnapshotVirtioBlkMidRun pauses the virtio guest in the middle of
// its random disk reads (bench=N: one request in the queue at a time,
// polled), snapshots it with its queue live, and restores it three times:
// each restored guest must finish the remaining reads through the
// restored queue — the device picking up exactly where the snapshot left
// it, N minus the used index the snapshot holds — and exit 0.
func TestSnapshotVirtioBlkMidRun(t *testing.T) {
	sys := openKVM(t)
	disk, _ := randomDisk(t, 8<<20/512)
	const reads = 4000
	m, err := New(Config{Image: guest(t, "virtio"), Cmdline: fmt.Sprintf("bench=%d", reads), System: sys,
		Disks: []DiskConfig{{Path: disk, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	go func() {
		for m.VirtioDevices()[0].Stats.Chains < 20 {
			select {
			case <-m.Done():
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
		m.Pause()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != ReasonPaused {
		t.Fatalf("%s; want paused mid-run (the guest did %d reads first)", res.Summary(), m.VirtioDevices()[0].Stats.Chains)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := m.Snapshot(dir); err != nil {
		t.Fatal(err)
	}
	m.Close()
	st, err := ReadSnapshotState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Virtio) != 1 || st.Virtio[0].Disk != disk || !st.Virtio[0].ReadOnly || len(st.Virtio[0].Transport.Queues) != 1 {
		t.Fatalf("snapshot's virtio devices: %+v", st.Virtio)
	}
	q := st.Virtio[0].Transport.Queues[0]
	if !q.Ready || q.NextUsed == 0 || q.NextUsed >= reads || st.Virtio[0].Transport.Status&virtio.StatusDriverOK == 0 {
		t.Fatalf("snapshot's queue %+v, status %#x: want a live queue part-way through %d reads", q, st.Virtio[0].Transport.Status, reads)
	}
	t.Logf("snapshot after %d of %d reads (queue %+v)", q.NextUsed, reads, q)
	for i := 0; i < 3; i++ {
		r, err := Restore(dir, Config{System: sys})
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		res, err := r.Run(ctx)
		devs := r.VirtioDevices()
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != ReasonExit || res.Status != 0 {
			t.Fatalf("restore %d: %s; want exit 0 (status 41: a read failed)", i, res.Summary())
		}
		if want := uint64(reads - int(q.NextUsed)); len(devs) != 1 || devs[0].Stats.Chains != want {
			t.Errorf("restore %d: the restored disk answered %d requests, want %d (the reads left)", i, devs[0].Stats.Chains, want)
		}
		t.Logf("restore %d: %d reads to exit in %v", i, devs[0].Stats.Chains, res.ExitAfter)
	}
}

// TestRestoreVirtioBadState: a snapshot whose queue lies outside guest
// RAM, or whose disk is gone, is refused with a snapshot error.
func TestRestoreVirtioBadState(t *testing.T) {
	sys := openKVM(t)
	disk, _ := randomDisk(t, 64)
	m, err := New(Config{Image: guest(t, "virtio"), Cmdline: "bench=0", System: sys, PauseAtReady: true,
		Disks: []DiskConfig{{Path: disk, ReadOnly: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if res := runMachine(t, m); res.Reason != ReasonPaused {
		t.Fatalf("%s, want paused at ready", res.Summary())
	}
	dir := t.TempDir()
	if err := m.Snapshot(dir); err != nil {
		t.Fatal(err)
	}
	st, err := ReadSnapshotState(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*SnapshotState)
		want error
	}{
		{"queue outside RAM", func(s *SnapshotState) { s.Virtio[0].Transport.Queues[0].DescAddr = 1 << 40 }, ErrSnapshotCorrupt},
		{"features not offered", func(s *SnapshotState) { s.Virtio[0].Transport.DriverFeatures |= 1 << 60 }, ErrSnapshotCorrupt},
		{"disk gone", func(s *SnapshotState) { s.Virtio[0].Disk = filepath.Join(dir, "nosuch") }, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := *st
			bad.Virtio = append([]VirtioState(nil), st.Virtio...)
			bad.Virtio[0].Transport.Queues = append([]virtio.QueueState(nil), st.Virtio[0].Transport.Queues...)
			tc.edit(&bad)
			b, err := EncodeSnapshotState(&bad)
			if err != nil {
				t.Fatal(err)
			}
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, SnapshotStateFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(filepath.Join(dir, SnapshotMemoryFile), filepath.Join(d, SnapshotMemoryFile)); err != nil {
				t.Fatal(err)
			}
			r, err := Restore(d, Config{System: sys})
			if err == nil {
				r.Close()
				t.Fatal("restored")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%v, want %v", err, tc.want)
			}
		})
	}
}

// TestSnapshotLinuxAtReady boots the lean kernel with PauseAtReady: its
// init writes the ready register before it runs the command, so the
// restored kernel must run the command and exit with its status.
func TestSnapshotLinuxAtReady(t *testing.T) {
	kernel, initrd := os.Getenv("MICROVM_KERNEL_VMLINUX"), os.Getenv("MICROVM_INITRAMFS")
	if kernel == "" || initrd == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX and MICROVM_INITRAMFS are not set; `make test` builds them")
	}
	if DetectHost() == HostPVM {
		t.Skip("SKIP: kvm_pvm: Linux user space cannot run, so init never writes ready")
	}
	sys := openKVM(t)
	img, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	m, err := New(Config{Image: img, Initrd: rd, MemoryBytes: 256 << 20, System: sys, Console: &out, PauseAtReady: true,
		AppendCmdline: `microvm.cmd="echo restored-$((40+2)); exit 7"`})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != ReasonPaused {
		t.Fatalf("%s, want paused at init's ready write; console tail:\n%s", res.Summary(), tail(out.String(), 2000))
	}
	if strings.Contains(out.String(), "restored-42") {
		t.Fatal("the command ran before the ready write")
	}
	cold := res.ReadyAfter
	dir := filepath.Join(t.TempDir(), "linux")
	if err := m.Snapshot(dir); err != nil {
		t.Fatal(err)
	}
	m.Close()
	for i := 0; i < 2; i++ {
		var console bytes.Buffer
		r, err := Restore(dir, Config{System: sys, Console: &console})
		if err != nil {
			t.Fatalf("restore %d: %v", i, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		res, err := r.Run(ctx)
		cancel()
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != ReasonExit || res.Status != 7 || !strings.Contains(console.String(), "restored-42") {
			t.Fatalf("restore %d: %s; want exit 7 after the command's output; console:\n%s", i, res.Summary(), tail(console.String(), 2000))
		}
		t.Logf("restore %d: command output and exit %v after restore began (cold boot reached ready after %v)", i, res.ExitAfter, cold)
	}
}

// BenchmarkColdReady and BenchmarkRestoreReady time, in process, a cold
// vmm.New → ready of the ready-check guest and a vmm.Restore → ready of a
// snapshot taken at its ready write (docs/snapshot.md):
//
//	go test -run '^$' -bench 'ColdReady|RestoreReady' -count 5 ./vmm/
func BenchmarkColdReady(b *testing.B) {
	sys := openKVM(b)
	cfg := Config{Image: readyCheckGuest(), Format: images.FormatFlat, MemoryBytes: 128 << 20, System: sys}
	benchReady(b, func() (*Machine, error) { return New(cfg) })
}

func BenchmarkRestoreReady(b *testing.B) {
	sys := openKVM(b)
	m, err := New(Config{Image: readyCheckGuest(), Format: images.FormatFlat, MemoryBytes: 128 << 20, System: sys, PauseAtReady: true})
	if err != nil {
		b.Fatal(err)
	}
	if res, err := m.Run(context.Background()); err != nil || res.Reason != ReasonPaused {
		b.Fatalf("%v %v", res, err)
	}
	dir := filepath.Join(b.TempDir(), "snap")
	if err := m.Snapshot(dir); err != nil {
		b.Fatal(err)
	}
	m.Close()
	benchReady(b, func() (*Machine, error) { return Restore(dir, Config{System: sys}) })
}

// benchReady builds and runs machines; it reports the mean time from the
// start of build to ready (ready-ns/op) beside the whole cycle.
func benchReady(b *testing.B, build func() (*Machine, error)) {
	var ready time.Duration
	for i := 0; i < b.N; i++ {
		m, err := build()
		if err != nil {
			b.Fatal(err)
		}
		res, err := m.Run(context.Background())
		m.Close()
		if err != nil || res.Reason != ReasonExit || res.Status != 41 {
			b.Fatalf("%v %v", res, err)
		}
		ready += res.ReadyAfter
	}
	b.ReportMetric(float64(ready.Nanoseconds())/float64(b.N), "ready-ns/op")
}
