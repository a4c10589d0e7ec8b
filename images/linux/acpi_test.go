package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPkgLength(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{0x3e, []byte{0x3f}},
		{0x3f, []byte{0x41, 0x04}},          // 0x3f+2 = 0x41 in two bytes
		{0xffd, []byte{0x4f, 0xff}},         // 0xfff, the most two bytes hold
		{0xffe, []byte{0x81, 0x00, 0x01}},   // 0x1001 in three bytes
		{0xffffd, []byte{0xc1, 0, 0, 0x01}}, // 0x100001 in four bytes
	} {
		got, err := pkgLength(tc.n)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("pkgLength(%#x) = % x, %v; want % x", tc.n, got, err, tc.want)
		}
		// Decode it back: the encoded value counts its own bytes.
		v := int(got[0] & 0x3f)
		if len(got) > 1 {
			v = int(got[0] & 0x0f)
			for i := 1; i < len(got); i++ {
				v |= int(got[i]) << (4 + 8*(i-1))
			}
		}
		if v != tc.n+len(got) {
			t.Errorf("pkgLength(%#x) decodes to %#x, want %#x", tc.n, v, tc.n+len(got))
		}
	}
	if _, err := pkgLength(amlMaxPkgLength); err == nil {
		t.Error("pkgLength(2^28-1): want an error")
	}
}

func TestAMLNames(t *testing.T) {
	for _, bad := range []string{"", "ABC", "ABCDE", "1ABC", "ab_c", "A-BC"} {
		if _, err := nameSeg(bad); err == nil {
			t.Errorf("nameSeg(%q): want an error", bad)
		}
	}
	for _, ok := range []string{"_SB_", "V000", "COM1", "_HID"} {
		if _, err := nameSeg(ok); err != nil {
			t.Errorf("nameSeg(%q): %v", ok, err)
		}
	}
	if _, err := amlString("a\x00b"); err == nil {
		t.Error("amlString with NUL: want an error")
	}
	for v, want := range map[uint64][]byte{
		0: {0x00}, 1: {0x01}, 5: {0x0a, 5}, 0x1234: {0x0b, 0x34, 0x12},
		0xd0000000: {0x0c, 0, 0, 0, 0xd0}, 1 << 32: {0x0e, 0, 0, 0, 0, 1, 0, 0, 0},
	} {
		if got := amlInteger(v); !bytes.Equal(got, want) {
			t.Errorf("amlInteger(%#x) = % x, want % x", v, got, want)
		}
	}
}

// acpiTable finds a table by signature in the blob ACPITables returned,
// following RSDP → XSDT (→ FADT → DSDT), and checks its checksum.
func acpiTable(t *testing.T, blob []byte, base uint64, addr uint64, sig string) []byte {
	t.Helper()
	off := addr - base
	if addr < base || off+acpiHeaderSize > uint64(len(blob)) {
		t.Fatalf("%s at 0x%x: outside the blob [0x%x, +%d)", sig, addr, base, len(blob))
	}
	n := uint64(binary.LittleEndian.Uint32(blob[off+4:]))
	if off+n > uint64(len(blob)) || n < acpiHeaderSize {
		t.Fatalf("%s: length %d runs past the blob", sig, n)
	}
	tab := blob[off : off+n]
	if string(tab[:4]) != sig {
		t.Fatalf("table at 0x%x is %q, want %q", addr, tab[:4], sig)
	}
	if s := sum(tab); s != 0 {
		t.Errorf("%s: checksum: bytes sum to %#x, want 0", sig, s)
	}
	return tab
}

func TestACPITables(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cpus    int
		devices []MMIODevice
	}{
		{"1 cpu no devices", 1, nil},
		{"2 cpus 3 devices", 2, []MMIODevice{{0xd0000000, 0x1000, 5}, {0xd0001000, 0x1000, 6}, {0xd0002000, 0x1000, 7}}},
		{"254 cpus 64 devices", MaxCPUs, devs(MaxACPIDevices)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, err := ACPITables(ACPIAddr, tc.cpus, tc.devices)
			if err != nil {
				t.Fatal(err)
			}
			le := binary.LittleEndian
			if string(blob[:8]) != "RSD PTR " || sum(blob[:20]) != 0 || sum(blob[:rsdpSize]) != 0 || blob[15] != 2 {
				t.Fatalf("RSDP: % x", blob[:rsdpSize])
			}
			xsdt := acpiTable(t, blob, ACPIAddr, le.Uint64(blob[24:]), "XSDT")
			if n := (len(xsdt) - acpiHeaderSize) / 8; n != 2 {
				t.Fatalf("XSDT has %d entries, want 2 (FADT, MADT)", n)
			}
			fadt := acpiTable(t, blob, ACPIAddr, le.Uint64(xsdt[36:]), "FACP")
			madt := acpiTable(t, blob, ACPIAddr, le.Uint64(xsdt[44:]), "APIC")
			if len(fadt) != fadtSize || le.Uint32(fadt[112:])&fadtFlagHWReducedACPI == 0 {
				t.Errorf("FADT: length %d, flags %#x: want %d bytes, hardware-reduced", len(fadt), le.Uint32(fadt[112:]), fadtSize)
			}
			if le.Uint64(fadt[140:]) != uint64(le.Uint32(fadt[40:])) {
				t.Errorf("FADT: X_DSDT 0x%x != DSDT 0x%x", le.Uint64(fadt[140:]), le.Uint32(fadt[40:]))
			}
			dsdt := acpiTable(t, blob, ACPIAddr, le.Uint64(fadt[140:]), "DSDT")

			// MADT: one enabled local APIC per CPU (ids 0..n-1), one I/O APIC, one NMI entry.
			if le.Uint32(madt[36:]) != LAPICAddr {
				t.Errorf("MADT local APIC address 0x%x", le.Uint32(madt[36:]))
			}
			var lapics, ioapics, nmis int
			for e := madt[44:]; len(e) > 0; e = e[e[1]:] {
				if e[1] < 2 || int(e[1]) > len(e) {
					t.Fatalf("MADT entry type %d length %d: malformed", e[0], e[1])
				}
				switch e[0] {
				case madtLocalAPIC:
					if int(e[3]) != lapics || le.Uint32(e[4:]) != madtEnabled {
						t.Errorf("local APIC entry %d: % x", lapics, e[:8])
					}
					lapics++
				case madtIOAPIC:
					if le.Uint32(e[4:]) != IOAPICAddr || int(e[2]) != tc.cpus {
						t.Errorf("I/O APIC entry: % x", e[:12])
					}
					ioapics++
				case madtLocalAPICNMI:
					nmis++
				default:
					t.Errorf("unexpected MADT entry type %d", e[0])
				}
			}
			if lapics != tc.cpus || ioapics != 1 || nmis != 1 {
				t.Errorf("MADT: %d local APICs, %d I/O APICs, %d NMI entries; want %d, 1, 1", lapics, ioapics, nmis, tc.cpus)
			}
			// DSDT: COM1 and one LNRO0005 per device, each window and GSI encoded.
			if got := bytes.Count(dsdt, []byte("LNRO0005\x00")); got != len(tc.devices) {
				t.Errorf("DSDT has %d LNRO0005 devices, want %d", got, len(tc.devices))
			}
			for _, d := range tc.devices {
				if !bytes.Contains(dsdt, resMemory32(uint32(d.Base), uint32(d.Size))) || !bytes.Contains(dsdt, resInterrupt(d.GSI)) {
					t.Errorf("DSDT lacks the window or interrupt of %+v", d)
				}
			}
			if !bytes.Contains(dsdt, []byte("PNP0501\x00")) {
				t.Error("DSDT lacks COM1")
			}
			if len(blob) > ACPITablesSize {
				t.Errorf("%d bytes of tables; the area holds %d", len(blob), ACPITablesSize)
			}
		})
	}
}

func devs(n int) []MMIODevice {
	out := make([]MMIODevice, n)
	for i := range out {
		out[i] = MMIODevice{Base: 0xd0000000 + uint64(i)*0x1000, Size: 0x1000, GSI: uint32(5 + i%19)}
	}
	return out
}

func TestACPIBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cpus    int
		devices []MMIODevice
	}{
		{"0 cpus", 0, nil},
		{"255 cpus", MaxCPUs + 1, nil},
		{"too many devices", 1, devs(MaxACPIDevices + 1)},
		{"GSI past the I/O APIC", 1, []MMIODevice{{0xd0000000, 0x1000, 24}}},
		{"window above 4 GiB", 1, []MMIODevice{{0xfffff000, 0x2000, 5}}},
		{"empty window", 1, []MMIODevice{{0xd0000000, 0, 5}}},
		{"wrapping window", 1, []MMIODevice{{^uint64(0) - 0xfff, 0x2000, 5}}},
	} {
		if _, err := ACPITables(ACPIAddr, tc.cpus, tc.devices); err == nil {
			t.Errorf("%s: want an error", tc.name)
		}
	}
	// RAM that does not reach the ACPI area.
	mem := newFakeMemory(512 << 10)
	if err := WriteACPI(mem, 1, nil); !errors.Is(err, ErrDoesNotFit) {
		t.Errorf("WriteACPI into 512 KiB of RAM: %v, want ErrDoesNotFit", err)
	}
	mem = newFakeMemory(64 << 20)
	if err := WriteACPI(mem, 2, devs(2)); err != nil {
		t.Fatalf("WriteACPI: %v", err)
	}
	got := make([]byte, 8)
	if _, err := mem.ReadAt(got, ACPIAddr); err != nil || string(got) != "RSD PTR " {
		t.Errorf("RSDP not at 0x%x: %q %v", ACPIAddr, got, err)
	}
}

// TestACPIDisassemble hands the tables to ACPICA's iasl, the reference
// implementation: it must disassemble each without complaint and find
// the objects Linux looks for.
func TestACPIDisassemble(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("SKIP: iasl not found (apt-get install acpica-tools; `make test` installs it): the tables are not checked against ACPICA")
	}
	const cpus = 2
	devices := []MMIODevice{{0xd0000000, 0x1000, 5}, {0xd0001000, 0x1000, 6}}
	blob, err := ACPITables(ACPIAddr, cpus, devices)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	xsdt := acpiTable(t, blob, ACPIAddr, le.Uint64(blob[24:]), "XSDT")
	fadt := acpiTable(t, blob, ACPIAddr, le.Uint64(xsdt[36:]), "FACP")
	tables := map[string][]byte{
		"xsdt": xsdt, "facp": fadt,
		"apic": acpiTable(t, blob, ACPIAddr, le.Uint64(xsdt[44:]), "APIC"),
		"dsdt": acpiTable(t, blob, ACPIAddr, le.Uint64(fadt[140:]), "DSDT"),
	}
	want := map[string][]string{
		"dsdt": {
			`Scope (\_SB)`, `Device (COM1)`, `Name (_HID, "PNP0501"`, `IO (Decode16,`, `0x03F8,`,
			`Device (V000)`, `Device (V001)`, `Name (_HID, "LNRO0005")`, `Name (_CCA, One)`,
			`Memory32Fixed (ReadWrite,`, `0xD0001000,`, `0x00001000,`,
			`Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )`, `0x00000006,`,
		},
		"facp": {`Hardware Reduced (V5) : 1`, `FACP`},
		"apic": {`Local Apic Address : FEE00000`},
		"xsdt": {`XSDT`},
	}
	dir := t.TempDir()
	for name, tab := range tables {
		p := filepath.Join(dir, name+".dat")
		if err := os.WriteFile(p, tab, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(iasl, "-d", p)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("iasl -d %s: %v\n%s", name, err, out)
			continue
		}
		if bytes.Contains(bytes.ToLower(out), []byte("error")) || bytes.Contains(bytes.ToLower(out), []byte("warning")) {
			t.Errorf("iasl -d %s complains:\n%s", name, out)
		}
		dsl, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
		if err != nil {
			t.Errorf("iasl -d %s wrote no .dsl: %v\n%s", name, err, out)
			continue
		}
		text := string(dsl)
		for _, w := range want[name] {
			if !strings.Contains(text, w) {
				t.Errorf("%s.dsl lacks %q:\n%s", name, w, text)
			}
		}
		if strings.Contains(text, "**** ") || strings.Contains(text, "Invalid") {
			t.Errorf("%s.dsl flags a problem:\n%s", name, text)
		}
		if name == "apic" {
			if n := strings.Count(text, "Subtable Type : 00 [Processor Local APIC]"); n != cpus {
				t.Errorf("apic.dsl: %d local APICs, want %d:\n%s", n, cpus, text)
			}
			if !strings.Contains(text, "Subtable Type : 01 [I/O APIC]") || !strings.Contains(text, "Subtable Type : 04 [Local APIC NMI]") {
				t.Errorf("apic.dsl lacks the I/O APIC or the NMI entry:\n%s", text)
			}
		}
	}
}
