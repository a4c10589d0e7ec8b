package libvirt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"
)

func TestStateWords(t *testing.T) {
	// The words virsh prints (virshDomainStateToString).
	tests := []struct {
		s      State
		word   string
		active bool
	}{
		{StateNoState, "no state", false},
		{StateRunning, "running", true},
		{StateBlocked, "idle", true},
		{StatePaused, "paused", true},
		{StateShutdown, "in shutdown", true},
		{StateShutoff, "shut off", false},
		{StateCrashed, "crashed", false},
		{StatePMSuspended, "pmsuspended", true},
		{State(99), "no state", false},
		{State(-1), "no state", false},
	}
	for _, tc := range tests {
		if got := tc.s.String(); got != tc.word {
			t.Errorf("State(%d).String() = %q, want %q", int(tc.s), got, tc.word)
		}
		if got := tc.s.Active(); got != tc.active {
			t.Errorf("State(%d).Active() = %v, want %v", int(tc.s), got, tc.active)
		}
		if int(tc.s) >= 0 && int(tc.s) <= 7 {
			back, err := ParseState(tc.word)
			if err != nil || back != tc.s {
				t.Errorf("ParseState(%q) = %v, %v; want %d", tc.word, back, err, int(tc.s))
			}
			b, err := json.Marshal(tc.s)
			if err != nil || string(b) != fmt.Sprintf("%q", tc.word) {
				t.Errorf("json.Marshal(State(%d)) = %s, %v", int(tc.s), b, err)
			}
			var u State
			if err := json.Unmarshal(b, &u); err != nil || u != tc.s {
				t.Errorf("json round trip of %s = %v, %v", b, u, err)
			}
		}
	}
	if _, err := ParseState("zombie"); err == nil {
		t.Error(`ParseState("zombie") did not fail`)
	}
}

func TestEventName(t *testing.T) {
	tests := []struct {
		ev, detail int32
		want       string
	}{
		{eventStarted, 0, "started"},
		{eventStopped, 0, "stopped (shutdown)"},
		{eventStopped, 1, "stopped (destroyed)"},
		{eventStopped, 5, "stopped (failed)"},
		{eventStopped, 42, "stopped"},
		{eventCrashed, 0, "crashed"},
		{77, 0, "event 77"},
	}
	for _, tc := range tests {
		if got := EventName(tc.ev, tc.detail); got != tc.want {
			t.Errorf("EventName(%d, %d) = %q, want %q", tc.ev, tc.detail, got, tc.want)
		}
	}
}

func TestSortDomains(t *testing.T) {
	in := []Domain{
		{ID: -1, Name: "zeta"},
		{ID: 12, Name: "b"},
		{ID: -1, Name: "Alpha"},
		{ID: 3, Name: "c"},
		{ID: -1, Name: "beta"},
		{ID: 1, Name: "z"},
		{ID: -1, Name: "alpha"},
	}
	SortDomains(in)
	var got []string
	for _, d := range in {
		got = append(got, d.IDString()+":"+d.Name)
	}
	want := "1:z 3:c 12:b -:Alpha -:alpha -:beta -:zeta"
	if strings.Join(got, " ") != want {
		t.Errorf("order = %v, want %s", got, want)
	}

	// Hosts keep their order; each host is sorted on its own.
	multi := []Domain{
		{Host: "h1", ID: -1, Name: "x"}, {Host: "h1", ID: 2, Name: "y"},
		{Host: "h2", ID: 9, Name: "p"}, {Host: "h2", ID: 1, Name: "q"},
	}
	SortDomains(multi)
	got = got[:0]
	for _, d := range multi {
		got = append(got, d.Host+":"+d.Name)
	}
	if strings.Join(got, " ") != "h1:y h1:x h2:q h2:p" {
		t.Errorf("multi-host order = %v", got)
	}
}

func TestFormatTable(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		rows   [][]string
		want   string
	}{
		{
			// virsh -c test:///default list --all (libvirt 9.0), byte for byte.
			name:   "virsh test driver",
			header: []string{"Id", "Name", "State"},
			rows:   [][]string{{"1", "test", "running"}},
			want:   " Id   Name   State\n----------------------\n 1    test   running\n",
		},
		{
			name:   "empty",
			header: []string{"Id", "Name", "State"},
			want:   " Id   Name   State\n--------------------\n",
		},
		{
			name:   "inactive and wide",
			header: []string{"Id", "Name", "State"},
			rows:   [][]string{{"12", "a-long-domain-name", "running"}, {"-", "x", "shut off"}},
			want: " Id   Name                 State\n" +
				"-------------------------------------\n" +
				" 12   a-long-domain-name   running\n" +
				" -    x                    shut off\n",
		},
		{
			name:   "control characters escaped like virsh",
			header: []string{"Id", "Name", "State"},
			rows:   [][]string{{"-", "a\tb", "shut off"}, {"-", `c\xd`, "shut off"}},
			want: " Id   Name      State\n" +
				"--------------------------\n" +
				" -    a\\x09b    shut off\n" +
				" -    c\\x5cxd   shut off\n",
		},
		{
			name:   "utf-8 counts runes",
			header: []string{"Id", "Name"},
			rows:   [][]string{{"1", "héllo"}},
			want:   " Id   Name\n-------------\n 1    héllo\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatTable(tc.header, tc.rows); got != tc.want {
				t.Errorf("FormatTable:\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestListRows(t *testing.T) {
	results := []HostResult{
		{URI: "qemu+tcp://a/system", Domains: []Domain{
			{ID: 1, Name: "vm1", State: StateRunning, VCPUs: 2, MemoryKiB: 512 << 10, CPUTime: 1500 * time.Millisecond},
			{ID: -1, Name: "vm2", State: StateShutoff, VCPUs: 1, MemoryKiB: 3 << 19},
		}},
		{URI: "qemu+tcp://b/system", Err: &Error{Op: "connect", URI: "qemu+tcp://b/system", Err: errors.New("cannot reach libvirtd\nat b")}},
	}
	h, rows := ListRows(results, ListFormat{Long: true, Host: true})
	if strings.Join(h, "|") != "Host|Id|Name|State|vCPUs|Memory|CPU time" {
		t.Errorf("header = %q", h)
	}
	want := [][]string{
		{"qemu+tcp://a/system", "1", "vm1", "running", "2", "512 MiB", "1.5s"},
		{"qemu+tcp://a/system", "-", "vm2", "shut off", "1", "1.5 GiB", "0.0s"},
		{"qemu+tcp://b/system", "-", "-", "error: connect: cannot reach libvirtd at b", "-", "-", "-"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows =\n%q\nwant\n%q", rows, want)
	}
	var buf bytes.Buffer
	if err := WriteList(&buf, results[:1], ListFormat{}); err != nil {
		t.Fatal(err)
	}
	if want := " Id   Name   State\n-----------------------\n 1    vm1    running\n -    vm2    shut off\n\n"; buf.String() != want {
		t.Errorf("WriteList = %q, want %q", buf.String(), want)
	}
}

func TestFormatKiB(t *testing.T) {
	for kib, want := range map[uint64]string{
		0: "0 KiB", 1000: "1000 KiB", 1024: "1 MiB", 262144: "256 MiB", 1536: "1.5 MiB",
		1 << 20: "1 GiB", 8388608: "8 GiB", 3 << 19: "1.5 GiB",
	} {
		if got := FormatKiB(kib); got != want {
			t.Errorf("FormatKiB(%d) = %q, want %q", kib, got, want)
		}
	}
}

func TestUUID(t *testing.T) {
	u, ok := parseUUID("6695eb01-f6a4-8304-79aa-97f2502e193f")
	if !ok {
		t.Fatal("parseUUID failed on a canonical UUID")
	}
	if got := formatUUID(u); got != "6695eb01-f6a4-8304-79aa-97f2502e193f" {
		t.Errorf("round trip = %s", got)
	}
	for _, s := range []string{"6695EB01F6A4830479AA97F2502E193F", "66-95eb01f6a4830479aa97f2502e193f"} {
		if v, ok := parseUUID(s); !ok || v != u {
			t.Errorf("parseUUID(%q) = %v, %v", s, formatUUID(v), ok)
		}
	}
	for _, s := range []string{"", "test", "1", "6695eb01-f6a4-8304-79aa-97f2502e193", "6695eb01-f6a4-8304-79aa-97f2502e193f00", "6695eb01-f6a4-8304-79aa-97f2502e193g", "6-695eb01f6a4830479aa97f2502e193f"} {
		if _, ok := parseUUID(s); ok {
			t.Errorf("parseUUID(%q) accepted", s)
		}
	}
}

func TestParseHostsFile(t *testing.T) {
	good := "# lab hosts\n\nqemu+tcp://h1/system\n  qemu+tcp://h2:16600/system   # rack 2\ntest:///default\n"
	uris, err := ParseHostsFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if want := "qemu+tcp://h1/system qemu+tcp://h2:16600/system test:///default"; strings.Join(uris, " ") != want {
		t.Errorf("uris = %q, want %s", uris, want)
	}
	bad := []struct{ in, part string }{
		{"qemu:///system\nfoo://h/x\n", "line 2"},
		{"qemu:///system\nqemu:///system\n", "already on line 1"},
		{"qemu+tcp:///system", "line 1"},
		{strings.Repeat("x", 70<<10), "line 1"},
	}
	for _, tc := range bad {
		if _, err := ParseHostsFile([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.part) {
			t.Errorf("ParseHostsFile(%.40q) error = %v, want one containing %q", tc.in, err, tc.part)
		}
	}
	if uris, err := ParseHostsFile(nil); err != nil || len(uris) != 0 {
		t.Errorf("empty file: %v, %v", uris, err)
	}
}

func FuzzParseHostsFile(f *testing.F) {
	f.Add([]byte("qemu+tcp://h1/system\n# c\ntest:///default # x\n"))
	f.Add([]byte("\x00\xff\n\r\nqemu:///system\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		uris, err := ParseHostsFile(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, u := range uris {
			if _, err := ParseURI(u); err != nil {
				t.Fatalf("accepted a bad URI %q: %v", u, err)
			}
			if seen[u] {
				t.Fatalf("accepted a duplicate %q", u)
			}
			seen[u] = true
		}
	})
}

func TestMarkerScanner(t *testing.T) {
	const marker = "microvm-init: ready"
	tests := []struct {
		name   string
		chunks []string
		found  bool
		last   string
	}{
		{"one write", []string{"boot\nmicrovm-init: ready\n"}, true, "microvm-init: ready"},
		{"split marker", []string{"[ 1.0] x\r\nmicrovm-in", "it: re", "ady\r\n[ 2.0] reboot: Power down\r\n"}, true, "[ 2.0] reboot: Power down"},
		{"byte by byte", strings.Split("..microvm-init: ready", ""), true, "..microvm-init: ready"},
		{"absent", []string{"microvm-init: rea", "dy?"[:1]}, false, "microvm-init: read"},
		{"near miss", []string{"microvm-init: READY\n"}, false, "microvm-init: READY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan time.Time, 1)
			m := newMarkerScanner(marker, ch)
			for _, c := range tc.chunks {
				if n, err := m.Write([]byte(c)); n != len(c) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			found := len(ch) == 1
			if found != tc.found {
				t.Errorf("found = %v, want %v", found, tc.found)
			}
			if got := m.lastLine(); got != tc.last {
				t.Errorf("lastLine = %q, want %q", got, tc.last)
			}
		})
	}
}

func FuzzMarkerScanner(f *testing.F) {
	f.Add([]byte("xxmicrovm-init: readyyy"), uint8(3))
	f.Add([]byte("microvm-init: rea\x00dy"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		const marker = "microvm-init: ready"
		ch := make(chan time.Time, 1)
		m := newMarkerScanner(marker, ch)
		n := int(step%32) + 1
		for i := 0; i < len(data); i += n {
			end := min(i+n, len(data))
			_, _ = m.Write(data[i:end])
		}
		if want := bytes.Contains(data, []byte(marker)); (len(ch) == 1) != want {
			t.Fatalf("found=%v, want %v for %q in chunks of %d", len(ch) == 1, want, data, n)
		}
		_ = m.lastLine()
	})
}

func TestDomainXML(t *testing.T) {
	spec := BootSpec{
		Name: "vm<&>", Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Cmdline: "quiet x='1'",
		MemoryMiB: 256, CPUs: 2, VirtType: VirtTCG, ConsoleLog: "/tmp/c.log",
	}
	s, err := DomainXML(spec)
	if err != nil {
		t.Fatal(err)
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(s); err != nil {
		t.Fatalf("generated XML does not parse: %v\n%s", err, s)
	}
	if d.Type != "qemu" || d.Name != "vm<&>" || d.VCPU == nil || d.VCPU.Value != 2 ||
		d.Memory == nil || d.Memory.Value != 256 || d.Memory.Unit != "MiB" {
		t.Errorf("round trip: %+v", d)
	}
	if d.OS == nil || d.OS.Kernel != "/k/vmlinuz" || d.OS.Initrd != "/k/initrd" || d.OS.Cmdline != BaseCmdline+" quiet x='1'" {
		t.Errorf("os: %+v", d.OS)
	}
	if d.Devices == nil || len(d.Devices.Serials) != 1 {
		t.Fatalf("devices: %+v", d.Devices)
	}
	if ser := d.Devices.Serials[0]; ser.Source == nil || ser.Source.Pty == nil || ser.Log == nil ||
		ser.Log.File != "/tmp/c.log" || ser.Log.Append != "off" {
		t.Errorf("serial: %+v", ser)
	}
	if d.OnPoweroff != "destroy" || d.OnReboot != "destroy" || d.OnCrash != "destroy" {
		t.Errorf("lifecycle actions: %s %s %s", d.OnPoweroff, d.OnReboot, d.OnCrash)
	}
	for _, bad := range []BootSpec{
		{Name: "x", Kernel: "/k", ConsoleLog: "/c", VirtType: "xen"},
		{Name: "", Kernel: "/k", ConsoleLog: "/c"},
		{Name: "x", Kernel: "", ConsoleLog: "/c"},
		{Name: "x", Kernel: "/k", ConsoleLog: "", VirtType: VirtKVM},
		{Name: "x", Kernel: "/k", ConsoleLog: "/c", MemoryMiB: -1},
	} {
		if _, err := DomainXML(bad); err == nil {
			t.Errorf("DomainXML(%+v) did not fail", bad)
		}
	}
}

// TestDomainXMLFields parses the XML DomainXML writes back with libvirtxml,
// checks every field BootKernel depends on, and validates the document
// against libvirt's own RELAX NG schema with virt-xml-validate.
func TestDomainXMLFields(t *testing.T) {
	validate, verr := exec.LookPath("virt-xml-validate")
	if verr == nil {
		if _, err := exec.LookPath("xmllint"); err != nil {
			verr = err
		}
	}
	tests := []struct {
		name string
		spec BootSpec
		// want: domain type, machine attribute, cmdline.
		virt, machine, cmdline string
	}{
		{
			name: "tcg with initrd",
			spec: BootSpec{Name: "vm1", Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd.img", Cmdline: "quiet",
				MemoryMiB: 256, CPUs: 2, VirtType: VirtTCG, ConsoleLog: "/tmp/vm1.console.log"},
			virt: "qemu", cmdline: "console=ttyS0 panic=-1 quiet",
		},
		{
			name: "kvm without initrd, machine type",
			spec: BootSpec{Name: "microvm-0a1b2c3d", Kernel: "/k/bzImage", MemoryMiB: 64, CPUs: 1,
				VirtType: VirtKVM, Machine: "pc-q35-7.2", ConsoleLog: "/var/log/libvirt/qemu/x.console.log"},
			virt: "kvm", machine: "pc-q35-7.2", cmdline: "console=ttyS0 panic=-1",
		},
		{
			name: "auto is TCG, cmdline spaces trimmed",
			spec: BootSpec{Name: "a b", Kernel: "/k", MemoryMiB: 4096, CPUs: 255, ConsoleLog: "/c.log",
				Cmdline: "  init=/bin/sh  "},
			virt: "qemu", cmdline: "console=ttyS0 panic=-1 init=/bin/sh",
		},
		{
			name: "characters XML escapes",
			spec: BootSpec{Name: "vm<&>'\"", Kernel: "/k/a&b", Initrd: "/k/<i>", MemoryMiB: 16, CPUs: 3,
				VirtType: VirtTCG, ConsoleLog: "/tmp/\"log\"", Cmdline: `x="<1>" y='&'`},
			virt: "qemu", cmdline: `console=ttyS0 panic=-1 x="<1>" y='&'`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := DomainXML(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(s); err != nil {
				t.Fatalf("libvirtxml cannot parse the generated XML: %v\n%s", err, s)
			}
			check := func(what string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("type", d.Type, tc.virt)
			check("name", d.Name, tc.spec.Name)
			check("description", d.Description, "booted by microvm libvirt boot")
			if d.Memory == nil || d.VCPU == nil || d.OS == nil || d.OS.Type == nil || d.Features == nil || d.Devices == nil {
				t.Fatalf("missing element in\n%s", s)
			}
			check("memory", d.Memory.Value, uint(tc.spec.MemoryMiB))
			check("memory unit", d.Memory.Unit, "MiB")
			check("vcpu", d.VCPU.Value, uint(tc.spec.CPUs))
			check("os type", d.OS.Type.Type, "hvm")
			check("arch", d.OS.Type.Arch, "x86_64")
			check("machine", d.OS.Type.Machine, tc.machine)
			check("kernel", d.OS.Kernel, tc.spec.Kernel)
			check("initrd", d.OS.Initrd, tc.spec.Initrd)
			check("cmdline", d.OS.Cmdline, tc.cmdline)
			check("acpi", d.Features.ACPI != nil, true)
			check("on_poweroff", d.OnPoweroff, "destroy")
			check("on_reboot", d.OnReboot, "destroy")
			check("on_crash", d.OnCrash, "destroy")
			dev := d.Devices
			check("disks", len(dev.Disks), 0)
			check("interfaces", len(dev.Interfaces), 0)
			if len(dev.Controllers) != 1 || dev.Controllers[0].Type != "usb" || dev.Controllers[0].Model != "none" {
				t.Errorf("controllers = %+v, want one usb controller of model none", dev.Controllers)
			}
			if dev.MemBalloon == nil || dev.MemBalloon.Model != "none" {
				t.Errorf("memballoon = %+v, want model none", dev.MemBalloon)
			}
			if len(dev.Serials) != 1 || len(dev.Consoles) != 1 {
				t.Fatalf("%d serials, %d consoles, want 1 each", len(dev.Serials), len(dev.Consoles))
			}
			ser, con := dev.Serials[0], dev.Consoles[0]
			check("serial is pty", ser.Source != nil && ser.Source.Pty != nil, true)
			if ser.Log == nil || ser.Log.File != tc.spec.ConsoleLog || ser.Log.Append != "off" {
				t.Errorf("serial log = %+v, want file %q, append off", ser.Log, tc.spec.ConsoleLog)
			}
			check("serial port 0", ser.Target != nil && ser.Target.Port != nil && *ser.Target.Port == 0, true)
			check("console is pty", con.Source != nil && con.Source.Pty != nil, true)
			check("console target", con.Target != nil && con.Target.Type == "serial" && con.Target.Port != nil && *con.Target.Port == 0, true)
			check("console log", con.Log == nil, true)

			// Marshalling what was parsed gives the same document.
			again, err := d.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			check("re-marshalled XML", again+"\n", s)

			t.Run("schema", func(t *testing.T) {
				if verr != nil {
					t.Skipf("SKIP (needs virt-xml-validate and xmllint; Debian: apt-get install libvirt-clients libxml2-utils): %v", verr)
				}
				f := filepath.Join(t.TempDir(), "domain.xml")
				if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command(validate, f, "domain").CombinedOutput(); err != nil {
					t.Errorf("virt-xml-validate: %v\n%s\n%s", err, out, s)
				}
				// The check can fail: the same document with an element the
				// schema does not know is rejected.
				bad := strings.Replace(s, "<memballoon", "<nosuchdevice/>\n    <memballoon", 1)
				if err := os.WriteFile(f, []byte(bad), 0o644); err != nil {
					t.Fatal(err)
				}
				if out, err := exec.Command(validate, f, "domain").CombinedOutput(); err == nil {
					t.Errorf("virt-xml-validate accepted an unknown device:\n%s", out)
				}
			})
		})
	}
}

func TestHostCPUFeatures(t *testing.T) {
	caps := `<capabilities><host><uuid>x</uuid><cpu><arch>x86_64</arch><model>kvm64</model>
<feature name='vme'/><feature name='svm'/><feature name='hypervisor'/></cpu></host>
<guest><arch name='x86_64'><domain type='kvm'/></arch></guest></capabilities>`
	f, err := hostCPUFeatures(caps)
	if err != nil {
		t.Fatal(err)
	}
	if !f["svm"] || !f["vme"] || f["vmx"] {
		t.Errorf("features = %v", f)
	}
	if _, err := hostCPUFeatures("<capabilities"); err == nil {
		t.Error("broken XML accepted")
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Op: "destroy domain", URI: "qemu:///system", Domain: "vm1", Code: 55, Err: errors.New("Requested operation is not valid: domain is not running")}
	if want := `qemu:///system: destroy domain "vm1": Requested operation is not valid: domain is not running`; e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
	if code, ok := ErrorCode(e); !ok || code != 55 {
		t.Errorf("ErrorCode = %d, %v", code, ok)
	}
	if !e.FromDaemon() {
		t.Error("FromDaemon() = false")
	}
	if IsNotFound(e) {
		t.Error("IsNotFound on code 55")
	}
}
