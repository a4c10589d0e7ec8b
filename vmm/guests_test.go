package vmm

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images"
)

// TestCPUIDMasksReachGuest boots the cpuid guest with the CPUID a Linux
// guest gets on this host and with the kvm_pvm masks (Host forced to
// HostPVM), and checks what microvm says (the note) against what the
// guest's own CPUID returned, bit by bit. On a hardware-assisted host the
// guest must also see exactly the unmasked bits KVM was given.
func TestCPUIDMasksReachGuest(t *testing.T) {
	sys := openKVM(t)
	host := DetectHost()
	for _, kind := range []HostKind{host, HostPVM} {
		t.Run(string(kind), func(t *testing.T) {
			r, err := ProbeCPUID(context.Background(), sys, kind)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []CPUIDKey{{0, 0}, {1, 0}, {0x80000000, 0}} {
				if _, ok := r.Seen[k]; !ok {
					t.Fatalf("dump lacks leaf %#x.%d:\n%s", k.Leaf, k.Sub, r.Console)
				}
			}
			note := r.Note()
			t.Logf("note: %s", note)
			for _, b := range r.Masked {
				seen := b.In(r.Seen[CPUIDKey{b.Leaf, b.Sub}])
				if b.In(r.Requested[CPUIDKey{b.Leaf, b.Sub}]) {
					t.Errorf("%s: asked to hide it, but KVM_SET_CPUID2 got it set", b.Name)
				}
				named := strings.Contains(note, " "+b.Name+",") || strings.Contains(note, " "+b.Name+":") || strings.Contains(note, " "+b.Name+";")
				switch {
				case seen && !strings.Contains(note, "not honoured"):
					t.Errorf("%s: the guest sees it, the note says the masks hold: %q", b.Name, note)
				case seen && !named:
					t.Errorf("%s: the guest sees it, the note does not name it: %q", b.Name, note)
				case !seen && named:
					t.Errorf("%s: hidden from the guest, the note names it as seen: %q", b.Name, note)
				}
			}
			if kind == HostPVM && len(r.Masked) == 0 {
				t.Error("no masked bits under HostPVM")
			}
			if !host.HardwareAssisted() {
				return
			}
			// Natively KVM's CPUID is the guest's: every unmasked bit
			// KVM was given reaches the guest as given (OSXSAVE and
			// the APIC ID fields follow the vCPU's state; skip them).
			for _, k := range []CPUIDKey{{1, 0}, {7, 0}, {0x80000001, 0}} {
				req, ok := r.Requested[k]
				if !ok {
					continue
				}
				seen := r.Seen[k]
				const osxsave = 1 << 27
				if k.Leaf == 1 {
					req.ECX &^= osxsave
					seen.ECX &^= osxsave
					req.EBX &= 0xffff
					seen.EBX &= 0xffff
				}
				if req.EBX != seen.EBX || req.ECX != seen.ECX || req.EDX != seen.EDX {
					t.Errorf("leaf %#x.%d: asked ebx=%#x ecx=%#x edx=%#x, the guest saw ebx=%#x ecx=%#x edx=%#x",
						k.Leaf, k.Sub, req.EBX, req.ECX, req.EDX, seen.EBX, seen.ECX, seen.EDX)
				}
			}
		})
	}
}

// TestCPUIDGuestInstructions runs the cpuid guest's instruction checks:
// stmxcsr/ldmxcsr with memory operands round-trip MXCSR, and xgetbv
// reports x87 at least where XSAVE is visible.
func TestCPUIDGuestInstructions(t *testing.T) {
	res, out := boot(t, Config{Image: guest(t, "cpuid"), Cmdline: "insns"}, 0)
	if res.Reason != ReasonExit || res.Status != 0 {
		t.Fatalf("%s\n%s", res.Summary(), out)
	}
	var before, loaded, after uint64
	if !scanLine(out, "mxcsr before=", func(s string) bool {
		return sscanHex(s, "mxcsr before=%x loaded=%x after=%x", &before, &loaded, &after)
	}) {
		t.Fatalf("no mxcsr line:\n%s", out)
	}
	if before != 0x1f80 || loaded != before|0x8000 || after != loaded {
		t.Errorf("mxcsr before=%#x loaded=%#x after=%#x: want 0x1f80, 0x9f80, 0x9f80", before, loaded, after)
	}
	if strings.Contains(out, "xcr0 skipped") {
		t.Logf("no XSAVE visible: xgetbv not run")
		return
	}
	var xcr0 uint64
	if !scanLine(out, "xcr0 ", func(s string) bool { return sscanHex(s, "xcr0 %x", &xcr0) }) {
		t.Fatalf("no xcr0 line:\n%s", out)
	}
	if xcr0&1 != 1 { // x87 is always on; XCR0 starts as 1 after reset
		t.Errorf("xcr0 %#x: x87 state must be enabled", xcr0)
	}
}

// TestQEMUConventionPorts: CMOS (UIP clears, the seconds register is BCD),
// fw_cfg (signature, CPU count) and isa-debug-exit (opt-in) from a guest.
func TestQEMUConventionPorts(t *testing.T) {
	b := func(v ...byte) []byte { return v }
	outWord := func(port, v uint16) []byte {
		return prog(movDX(port), b(0x66, 0xb8, byte(v), byte(v>>8), 0x66, 0xef))
	}
	// Wait for UIP to clear, then read the seconds (BCD) and exit with them.
	cmos := prog(b(0xb0, 0x0a, 0xe6, 0x70, 0xe4, 0x71, 0xa8, 0x80, 0x75, 0xf6),
		b(0xb0, 0x00, 0xe6, 0x70, 0xe4, 0x71), exitWithAL)
	// vCPUs but 0 halt (test rsi,rsi; jz +2; cli; hlt); vCPU 0 copies
	// fw_cfg's signature to COM1, then exits with NB_CPUS.
	fw := b(0x48, 0x85, 0xf6, 0x74, 0x02, 0xfa, 0xf4)
	fw = append(fw, outWord(0x510, 0)...)
	for range 4 {
		fw = append(fw, prog(movDX(0x511), inALDX, movDX(0x3f8), outDXAL)...)
	}
	fw = append(fw, prog(outWord(0x510, 5), movDX(0x511), inALDX, exitWithAL)...)
	debugExit := prog(b(0xb0, 0x10, 0xe6, 0xf4), movAL(7), exitWithAL)
	for _, tt := range []struct {
		name      string
		code      []byte
		debugExit bool
		check     func(t *testing.T, res *Result, out string)
	}{
		{"cmos seconds", cmos, false, func(t *testing.T, res *Result, out string) {
			if s := res.Status; s>>4 > 5 || s&0xf > 9 {
				t.Errorf("seconds register %#x is not BCD 00-59", s)
			}
		}},
		{"fw_cfg", fw, false, func(t *testing.T, res *Result, out string) {
			if out != "QEMU" || res.Status != 3 {
				t.Errorf("signature %q status %d, want QEMU and 3 CPUs", out, res.Status)
			}
		}},
		{"debug-exit on", debugExit, true, func(t *testing.T, res *Result, out string) {
			if res.Status != 0x10<<1|1 {
				t.Errorf("status %d, want %d", res.Status, 0x10<<1|1)
			}
		}},
		{"debug-exit off", debugExit, false, func(t *testing.T, res *Result, out string) {
			if res.Status != 7 {
				t.Errorf("status %d, want 7 (port 0xf4 unclaimed)", res.Status)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cpus := 1
			if tt.name == "fw_cfg" {
				cpus = 3
			}
			res, out := boot(t, Config{Image: tt.code, Format: images.FormatFlat, DebugExit: tt.debugExit, CPUs: cpus}, 0)
			if res.Reason != ReasonExit {
				t.Fatalf("%s", res.Summary())
			}
			tt.check(t, res, out)
		})
	}
}

// TestIRQChipTinyAP: with Config.IRQChip, vCPU 1 waits for INIT/SIPI.
// vCPU 0 writes a real-mode trampoline at 0x50000 (mov al,42; mov dx,0x501;
// out dx,al; hlt) and sends INIT and SIPI (vector 0x50) to all others
// through its local APIC; the AP then ends the VM with status 42. Without
// the SIPI the AP never runs (vCPU 0 would spin to the timeout).
func TestIRQChipTinyAP(t *testing.T) {
	le := binary.LittleEndian
	movRBX := func(v uint64) []byte { return le.AppendUint64([]byte{0x48, 0xbb}, v) }
	movRAX := func(v uint64) []byte { return le.AppendUint64([]byte{0x48, 0xb8}, v) }
	storeICR := func(v uint32) []byte { return prog(movRBX(0xfee00300), le.AppendUint32([]byte{0xc7, 0x03}, v)) }
	tramp := le.Uint64([]byte{0xb0, 42, 0xba, 0x01, 0x05, 0xee, 0xf4, 0x90})
	code := prog(
		// Only vCPU 0 gets here: the AP starts in real mode at SIPI.
		movRBX(0x50000), movRAX(tramp), []byte{0x48, 0x89, 0x03},
		storeICR(0x000c4500), // INIT, all excluding self
		storeICR(0x000c4650), // SIPI vector 0x50
		storeICR(0x000c4650), // the second SIPI of the MP spec
		spin)
	res, _ := boot(t, Config{Image: code, Format: images.FormatFlat, CPUs: 2, IRQChip: true}, 20*time.Second)
	if res.Reason != ReasonExit || res.Status != 42 {
		t.Fatalf("%s: want the AP's exit with 42", res.Summary())
	}
}

// sscanHex is fmt.Sscanf that wants every value.
func sscanHex(s, format string, p ...any) bool {
	n, err := fmt.Sscanf(s, format, p...)
	return err == nil && n == len(p)
}

// scanLine finds the line starting with prefix and hands it to parse.
func scanLine(out, prefix string, parse func(string) bool) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return parse(l)
		}
	}
	return false
}

func TestParseCPUIDDumpAndNote(t *testing.T) {
	dump := "cpuid 0.0 eax=d ebx=756e6547 ecx=6c65746e edx=49656e69\n" +
		"cpuid 1.0 eax=906ea ebx=800 ecx=80080203 edx=178bfbff\n" +
		"cpuid 7.0 eax=0 ebx=0 ecx=0 edx=0\n" +
		"cpuid 80000001.0 eax=0 ebx=0 ecx=21 edx=2c100800\ncpuid: done\n"
	seen, err := ParseCPUIDDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	if got := seen[CPUIDKey{1, 0}]; got.ECX != 0x80080203 || got.EDX != 0x178bfbff {
		t.Errorf("leaf 1 = %+v", got)
	}
	r := &CPUIDReport{Seen: seen, Masked: pvmMaskedBits()}
	note := r.Note()
	// 0x80080203: SSE3 (0), PCLMULQDQ (1), SSSE3 (9), SSE4.1 (19), hypervisor (31); not CX16 (13).
	for _, want := range []string{"not honoured", "leaf 0x1 ECX SSE3, PCLMULQDQ, SSSE3, SSE4.1", "leaf 0x80000001 ECX ABM"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q lacks %q", note, want)
		}
	}
	if strings.Contains(note, "CX16") || strings.Contains(note, "7.0") {
		t.Errorf("note %q names a hidden bit", note)
	}
	seen[CPUIDKey{1, 0}] = CPUIDRegs{}
	seen[CPUIDKey{0x80000001, 0}] = CPUIDRegs{}
	if note := r.Note(); strings.Contains(note, "not honoured") || !strings.Contains(note, "hidden") {
		t.Errorf("all hidden, note %q", note)
	}
	for _, bad := range []string{
		"cpuid 1.0 eax=1 ebx=2 ecx=3 edx=4\n",                    // no done line
		"cpuid 1 eax=1 ebx=2 ecx=3 edx=4\ncpuid: done",           // no subleaf
		"cpuid 1.0 eax=zz ebx=2 ecx=3 edx=4\ncpuid: done",        // not hex
		"cpuid 1.0 eax=1 ebx=2 edx=3 ecx=4\ncpuid: done",         // fields out of order
		"cpuid 1.0 eax=1 ebx=2 ecx=3 edx=100000000\ncpuid: done", // over 32 bits
	} {
		if _, err := ParseCPUIDDump(bad); err == nil {
			t.Errorf("ParseCPUIDDump(%q) accepted it", bad)
		}
	}
}

func FuzzParseCPUIDDump(f *testing.F) {
	f.Add("cpuid 1.0 eax=906ea ebx=800 ecx=fffa3203 edx=178bfbff\ncpuid: done\n")
	f.Add("cpuid 7.0 eax=0 ebx=0 ecx=0 edx=0\n")
	f.Fuzz(func(t *testing.T, s string) {
		seen, err := ParseCPUIDDump(s)
		if err != nil {
			return
		}
		r := &CPUIDReport{Seen: seen, Masked: pvmMaskedBits()}
		if r.Note() == "" {
			t.Fatal("empty note")
		}
	})
}
