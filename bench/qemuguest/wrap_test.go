package qemuguest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/guests"
)

// TestStubMatchesSource rebuilds stub.bin from stub.S with the commands in
// stub.S and checks the committed blob matches.
func TestStubMatchesSource(t *testing.T) {
	gcc, err1 := exec.LookPath("gcc")
	ld, err2 := exec.LookPath("ld")
	if err1 != nil || err2 != nil {
		t.Skip("SKIPPED LOUDLY: gcc and ld are needed to rebuild stub.S")
	}
	dir := t.TempDir()
	obj, bin := filepath.Join(dir, "stub.o"), filepath.Join(dir, "stub.bin")
	if out, err := exec.Command(gcc, "-c", "-o", obj, "stub.S").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if out, err := exec.Command(ld, "-m", "elf_x86_64", "-N", "-Ttext=0x1000000", "--oformat", "binary", "-o", bin, obj).CombinedOutput(); err != nil {
		t.Fatalf("ld: %v\n%s", err, out)
	}
	got, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stub) {
		t.Fatal("stub.bin differs from a rebuild of stub.S: rebuild it with the commands in stub.S")
	}
}

func TestWrapStructure(t *testing.T) {
	g, err := guests.Get("ready")
	if err != nil {
		t.Fatal(err)
	}
	img, err := Wrap(g, 128<<20, "hello")
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("wrapped image is no ELF: %v", err)
	}
	gf, _ := elf.NewFile(bytes.NewReader(g))
	var loads []*elf.Prog
	var note []byte
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			loads = append(loads, p)
		case elf.PT_NOTE:
			note, _ = io.ReadAll(p.Open())
		}
	}
	if len(note) != 20 || string(note[12:16]) != "Xen\x00" || binary.LittleEndian.Uint32(note[8:]) != 18 {
		t.Fatalf("PVH note %x", note)
	}
	if entry := binary.LittleEndian.Uint32(note[16:]); entry != StubBase+stubPVHEntry {
		t.Errorf("PVH entry %#x", entry)
	}
	// The guest's segments are there, byte for byte, at their addresses.
	var gl []*elf.Prog
	for _, p := range gf.Progs {
		if p.Type == elf.PT_LOAD && p.Memsz > 0 {
			gl = append(gl, p)
		}
	}
	if len(loads) != len(gl)+1 {
		t.Fatalf("%d loads, want %d", len(loads), len(gl)+1)
	}
	for i, p := range gl {
		a, _ := io.ReadAll(p.Open())
		b, _ := io.ReadAll(loads[i].Open())
		if loads[i].Paddr != p.Paddr || !bytes.Equal(a, b) || loads[i].Memsz != p.Memsz {
			t.Errorf("segment %d differs from the guest's", i)
		}
	}
	st, _ := io.ReadAll(loads[len(loads)-1].Open())
	if binary.LittleEndian.Uint64(st[stubEntrySlot:]) != gf.Entry {
		t.Error("stub does not jump to the guest's entry")
	}
	if string(st[stubBootInfo:stubBootInfo+8]) != "MVMBOOT1" || binary.LittleEndian.Uint64(st[stubBootInfo+16:]) != 128<<20 {
		t.Error("boot info not filled in")
	}
	if n := binary.LittleEndian.Uint32(st[stubBootInfo+32:]); n != 5 || string(st[stubBootInfo+0x100:stubBootInfo+0x105]) != "hello" {
		t.Error("cmdline not in boot info")
	}
}

func TestWrapRejects(t *testing.T) {
	g, _ := guests.Get("ready")
	overlap := bytes.Clone(g)
	// Move the guest's first segment onto the stub.
	f, _ := elf.NewFile(bytes.NewReader(g))
	phoff := binary.LittleEndian.Uint64(g[32:])
	for i, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			off := phoff + uint64(i)*56
			binary.LittleEndian.PutUint64(overlap[off+16:], StubBase)
			binary.LittleEndian.PutUint64(overlap[off+24:], StubBase)
			break
		}
	}
	for _, tc := range []struct {
		name  string
		img   []byte
		mem   uint64
		cmd   string
		wants string
	}{
		{"not elf", []byte("hello"), 128 << 20, "", "not an ELF"},
		{"tiny memory", g, 8 << 20, "", "do not reach"},
		{"overlap", overlap, 128 << 20, "", "overlaps the stub"},
		{"long cmdline", g, 128 << 20, strings.Repeat("x", 5000), "longer"},
	} {
		_, err := Wrap(tc.img, tc.mem, tc.cmd)
		if err == nil || !strings.Contains(err.Error(), tc.wants) {
			t.Errorf("%s: Wrap = %v, want %q", tc.name, err, tc.wants)
		}
	}
}

func FuzzWrap(f *testing.F) {
	for _, n := range []string{"ready", "hello", "exit"} {
		if g, err := guests.Get(n); err == nil {
			f.Add(g)
		}
	}
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Wrap(data, 64<<20, "x")
		if err != nil {
			return
		}
		if _, err := elf.NewFile(bytes.NewReader(img)); err != nil {
			t.Fatalf("Wrap made an unparsable ELF: %v", err)
		}
	})
}

// bootQEMU boots a wrapped guest in real QEMU (microvm machine, KVM) and
// returns QEMU's exit status, what the guest wrote to port 0x502 and the
// serial console.
func bootQEMU(t *testing.T, name, cmdline string) (int, []byte, string) {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: qemu-system-x86_64 missing (make deps installs qemu-system-x86)")
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("SKIPPED LOUDLY: no usable /dev/kvm: %v", err)
	} else {
		f.Close()
	}
	g, err := guests.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Wrap(g, 128<<20, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kernel, ready, serial := filepath.Join(dir, "g.elf"), filepath.Join(dir, "ready"), filepath.Join(dir, "serial")
	if err := os.WriteFile(kernel, img, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm,x-option-roms=off,pit=off,pic=off,rtc=off",
		"-accel", "kvm", "-cpu", "host,-arch-capabilities", "-m", "128M", "-nodefaults", "-no-user-config",
		"-nographic", "-no-reboot", "-kernel", kernel, "-serial", "file:"+serial,
		"-chardev", "file,id=rdy,path="+ready, "-device", "isa-debugcon,iobase=0x502,chardev=rdy",
		"-device", "isa-debug-exit,iobase=0x501,iosize=1")
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("qemu: %v", err)
	}
	if len(out) > 0 {
		t.Logf("qemu said: %s", out)
	}
	rb, _ := os.ReadFile(ready)
	sb, _ := os.ReadFile(serial)
	return code, rb, string(sb)
}

// TestQEMUBootsGuestsUnchanged boots embedded guests in QEMU through the
// stub: the ready guest signals ready and exits 0; the exit guest's status
// from its command line comes back through isa-debug-exit; hello prints
// its boot info on the serial console.
func TestQEMUBootsGuestsUnchanged(t *testing.T) {
	code, ready, _ := bootQEMU(t, "ready", "")
	if code != 1 || len(ready) == 0 {
		t.Errorf("ready guest: qemu status %d (want 1 = guest status 0), ready bytes %q", code, ready)
	}
	code, _, _ = bootQEMU(t, "exit", "42")
	if code != 42<<1|1 {
		t.Errorf("exit guest with cmdline 42: qemu status %d, want %d", code, 42<<1|1)
	}
	code, _, serial := bootQEMU(t, "hello", "greetings")
	if !strings.Contains(serial, "greetings") {
		t.Errorf("hello guest: status %d, console %q lacks its cmdline", code, serial)
	}
}
