package rig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpioEntry is one entry of a newc archive, as readCPIO parses it.
type cpioEntry struct {
	name string
	mode uint32
	data string
}

// readCPIO parses newc archives (concatenated ones too) for the tests.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; off < len(b); {
		if b[off] == 0 { // padding after a trailer
			off++
			continue
		}
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d at %d: %v", i, off, err)
			}
			return int(v)
		}
		mode, size, namesize := uint32(field(1)), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		dataOff := align(off + 110 + namesize)
		data := string(b[dataOff : dataOff+size])
		off = align(dataOff + size)
		if name == "TRAILER!!!" {
			continue
		}
		out = append(out, cpioEntry{name, mode, data})
	}
	return out
}

func TestRunArchive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho hi\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a := newRunArchive(&buf)
	steps := []error{
		a.files(map[string]string{"/usr/local/bin/prog": src, "/usr/bin/viaLink": link}),
		a.bytes("/rig/env", 0o644, []byte("X=1\n")),
		a.bytes("rig/cmd/000", 0o755, []byte("true\n")),
		a.close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{"usr", 0o040755, ""},
		{"usr/bin", 0o040755, ""},
		{"usr/bin/viaLink", 0o100750, "#!/bin/sh\necho hi\n"},
		{"usr/local", 0o040755, ""},
		{"usr/local/bin", 0o040755, ""},
		{"usr/local/bin/prog", 0o100750, "#!/bin/sh\necho hi\n"},
		{"rig", 0o040755, ""},
		{"rig/env", 0o100644, "X=1\n"},
		{"rig/cmd", 0o040755, ""},
		{"rig/cmd/000", 0o100755, "true\n"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("archive:\n got %v\nwant %v", got, want)
	}
	// The system's cpio must read it too.
	if cpio, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command(cpio, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -t: %v", err)
		}
		if n := len(strings.Fields(string(out))); n != len(want) {
			t.Errorf("cpio -t lists %d entries, want %d:\n%s", n, len(want), out)
		}
	}
}

func TestRunArchiveErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		files map[string]string
	}{
		{"missing source", map[string]string{"/x": filepath.Join(dir, "nope")}},
		{"directory source", map[string]string{"/x": dir}},
		{"climbs out", map[string]string{"../x": "/bin/sh"}},
		{"root", map[string]string{"/": "/bin/sh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := newRunArchive(&bytes.Buffer{}).files(tt.files); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestParser(t *testing.T) {
	const nonce = "n0nce"
	t0 := time.Unix(1000, 0)
	lines := []string{
		"\x00junk before init",
		"RIG:n0nce HELLO 1.50",
		"RIG:n0nce KVM ok 2.00",
		"RIG:n0nce BEGIN a 2.01",
		"RIG:n0nce O first\r",
		"RIG:n0nce O ",
		"RIG:other END a 0 1",
		"",
		"RIG:n0nce END a 0 2.50",
		"\xffRIG:n0nce BEGIN b 2.60",
		"RIG:n0nce O partial",
		"RIG:n0nce BEGIN c 2.70", // b never ended
		"RIG:n0nce END c notanumber",
		"RIG:n0nce END c 7 2.80",
		"RIG:n0nce O outside",
		"RIG:n0nce BOGUS",
		"RIG:n0nce DONE 3.00",
	}
	res := &Result{}
	p := newParser(nonce, t0, res)
	for i, l := range lines {
		p.line(l, t0.Add(time.Duration(i)*time.Second))
	}
	p.finish(t0.Add(time.Minute))
	if !res.Complete || !res.KVM || !res.KVMChecked {
		t.Errorf("complete=%v kvm=%v checked=%v", res.Complete, res.KVM, res.KVMChecked)
	}
	if res.Hello != time.Second || res.ScriptStart != 2*time.Second || res.L1Uptime.Hello != 1500*time.Millisecond {
		t.Errorf("times: hello %v start %v uptime %v", res.Hello, res.ScriptStart, res.L1Uptime.Hello)
	}
	want := []CommandResult{
		{Name: "a", Status: 0, Done: true, Output: "first\n\n", Elapsed: 5 * time.Second},
		{Name: "b", Status: -1, Done: false, Output: "partial\n", Elapsed: 2 * time.Second},
		{Name: "c", Status: 7, Done: true, Output: "", Elapsed: 2 * time.Second},
	}
	if fmt.Sprint(res.Commands) != fmt.Sprint(want) {
		t.Errorf("commands:\n got %+v\nwant %+v", res.Commands, want)
	}
	wantStray := []string{"\x00junk before init", "RIG:other END a 0 1", "RIG:n0nce END c notanumber", "RIG:n0nce O outside", "RIG:n0nce BOGUS"}
	if fmt.Sprintf("%q", res.Stray) != fmt.Sprintf("%q", wantStray) {
		t.Errorf("stray:\n got %q\nwant %q", res.Stray, wantStray)
	}
}

func TestParserKVMFail(t *testing.T) {
	res := &Result{}
	p := newParser("x", time.Now(), res)
	p.line("RIG:x KVM fail 2.10 insmod kvm-amd: no such device;", time.Now())
	if !res.KVMChecked || res.KVM || res.KVMDetail != "insmod kvm-amd: no such device;" {
		t.Errorf("%+v", res)
	}
}

func TestParserBoundsOutput(t *testing.T) {
	res := &Result{}
	p := newParser("x", time.Now(), res)
	p.line("RIG:x BEGIN big 1", time.Now())
	chunk := strings.Repeat("y", 1<<20)
	for i := 0; i < 20; i++ {
		p.line("RIG:x O "+chunk, time.Now())
	}
	p.line("RIG:x END big 0 2", time.Now())
	c := res.Command("big")
	if !c.Truncated || len(c.Output) > maxOutput {
		t.Errorf("truncated=%v len=%d", c.Truncated, len(c.Output))
	}
	for i := 0; i < 2*maxStrayLines; i++ {
		p.line("noise", time.Now())
	}
	if len(res.Stray) != maxStrayLines {
		t.Errorf("%d stray lines kept", len(res.Stray))
	}
}

// FuzzParser feeds arbitrary results-port bytes to the parser: it must not
// panic, and what it reports must stay consistent.
func FuzzParser(f *testing.F) {
	f.Add("RIG:n HELLO 1\nRIG:n KVM ok 2\nRIG:n BEGIN a 3\nRIG:n O x\nRIG:n END a 0 4\nRIG:n DONE 5\n")
	f.Add("RIG:n BEGIN\nRIG:n END\nRIG:n KVM\nRIG:n HELLO -1e999\nRIG:n DONE NaN\n")
	f.Add("RIG:n BEGIN a\nRIG:n BEGIN a\nRIG:n END a 99999999999999999999 1\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		res := &Result{}
		now := time.Unix(0, 0)
		p := newParser("n", now, res)
		for _, l := range strings.Split(in, "\n") {
			now = now.Add(time.Millisecond)
			p.line(l, now)
		}
		p.finish(now)
		for _, c := range res.Commands {
			if !c.Done && c.Status != -1 {
				t.Fatalf("unfinished command with status: %+v", c)
			}
			if c.Elapsed < 0 || len(c.Output) > maxOutput {
				t.Fatalf("bad command %+v", c)
			}
		}
		if len(res.Stray) > maxStrayLines {
			t.Fatalf("%d stray lines", len(res.Stray))
		}
	})
}

func TestConfigValidation(t *testing.T) {
	good := Config{Kernel: "k", Modules: "m", QEMU: "/bin/true", Busybox: "/bin/true"}
	tests := []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"no kernel", func(c *Config) { c.Kernel = "" }, "Kernel"},
		{"no modules", func(c *Config) { c.Modules = "" }, "Modules"},
		{"small memory", func(c *Config) { c.MemoryMiB = 64 }, "too small"},
		{"cpus", func(c *Config) { c.CPUs = -1 }, "out of range"},
		{"bad name", func(c *Config) { c.Commands = []Command{{Name: "a b", Run: "true"}} }, "command name"},
		{"empty name", func(c *Config) { c.Commands = []Command{{Run: "true"}} }, "command name"},
		{"duplicate", func(c *Config) { c.Script = "true"; c.Commands = []Command{{Name: "script", Run: "true"}} }, "twice"},
		{"negative timeout", func(c *Config) { c.Commands = []Command{{Name: "a", Timeout: -time.Second}} }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			_, err := c.withDefaults()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
	c, err := good.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryMiB != DefaultMemoryMiB || c.CPUs != 1 || c.Timeout != DefaultTimeout || c.CPU != DefaultCPU {
		t.Errorf("defaults not applied: %+v", c)
	}
	if _, err := Run(t.Context(), Config{Kernel: "/nonexistent", Modules: t.TempDir(), QEMU: "/bin/true"}); err == nil {
		t.Error("Run with a missing kernel: no error")
	}
}

func TestFindModules(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"kernel/virt/lib/irqbypass.ko", "kernel/arch/x86/kvm/kvm.ko", "kernel/drivers/net/tun.ko"} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := findModules(dir); err == nil || !strings.Contains(err.Error(), "kvm-amd.ko not found") {
		t.Fatalf("want kvm-amd.ko not found, got %v", err)
	}
	full := filepath.Join(dir, "kernel/arch/x86/kvm/kvm-amd.ko")
	if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := findModules(dir)
	if err != nil || m["kvm-amd.ko"] != full {
		t.Fatalf("%v %v", m, err)
	}
}

func TestAddBinary(t *testing.T) {
	// A dynamically linked system binary: the loader and libc come along.
	files := map[string]string{}
	if err := AddBinary(files, "/bin/ls"); err != nil {
		t.Fatal(err)
	}
	var interp, libc bool
	for dst, src := range files {
		if dst != src {
			t.Errorf("%s -> %s: libraries keep their paths", dst, src)
		}
		interp = interp || strings.HasPrefix(filepath.Base(dst), "ld-linux")
		libc = libc || filepath.Base(dst) == "libc.so.6"
	}
	if !interp || !libc {
		t.Errorf("loader or libc missing: %v", files)
	}
	// A static binary is just itself.
	if fileExists("/bin/busybox") {
		files = map[string]string{}
		if err := AddBinary(files, "/bin/busybox"); err != nil {
			t.Fatal(err)
		}
		if len(files) != 1 {
			t.Errorf("static busybox pulled in %v", files)
		}
	}
	if err := AddBinary(map[string]string{}, "/nonexistent/prog"); err == nil {
		t.Error("missing binary: no error")
	}
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := AddBinary(map[string]string{}, notELF); err == nil {
		t.Error("non-ELF: no error")
	}
}

func TestBaseInitramfsCached(t *testing.T) {
	if !fileExists("/bin/busybox") {
		t.Skip("SKIP: /bin/busybox missing (apt-get install busybox-static)")
	}
	mods := t.TempDir()
	for _, m := range modules {
		if err := os.WriteFile(filepath.Join(mods, m+".ko"), []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Busybox: "/bin/busybox", Modules: mods, CacheDir: t.TempDir()}
	p1, err := baseInitramfs(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, err := baseInitramfs(&cfg)
	if err != nil || p2 != p1 {
		t.Fatalf("second call: %q %v, want %q", p2, err, p1)
	}
	st2, _ := os.Stat(p2)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("cached base initramfs was rewritten")
	}
	// A changed module changes the key.
	if err := os.WriteFile(filepath.Join(mods, "kvm.ko"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	p3, err := baseInitramfs(&cfg)
	if err != nil || p3 == p1 {
		t.Fatalf("changed input: %q %v", p3, err)
	}
	if fileExists(p1) {
		t.Errorf("stale base archive %s kept", p1)
	}
	b, err := os.ReadFile(p3)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, e := range readCPIO(t, b) {
		names[e.name] = e.data
	}
	if names["lib/modules/kvm.ko"] != "other" || names["init"] != string(initScript) ||
		names["etc/microvm/modules"] != "irqbypass.ko\nkvm.ko\nkvm-amd.ko\ntun.ko\n" {
		t.Errorf("base archive content wrong: %d entries, modules list %q", len(names), names["etc/microvm/modules"])
	}
}

// TestRunFrozen stands a script in for QEMU that starts a command and then
// goes silent, like an L1 that froze: run must stop it once the command is
// freezeGrace past its timeout and say so with errFrozen.
func TestRunFrozen(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu")
	script := "#!/bin/sh\necho 'RIG:n1 HELLO 1.0'\necho 'RIG:n1 KVM ok 1.1'\necho 'RIG:n1 BEGIN quick 1.2'\necho 'RIG:n1 END quick 0 1.3'\necho 'RIG:n1 BEGIN stuck 1.4'\nexec sleep 600\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{QEMU: fake, Timeout: time.Minute, freezeGrace: time.Second,
		Commands: []Command{{Name: "quick", Timeout: time.Second}, {Name: "stuck", Timeout: time.Second}}}
	res := &Result{Console: filepath.Join(dir, "console.log"), Results: filepath.Join(dir, "results.log"), QEMULog: filepath.Join(dir, "qemu.log")}
	start := time.Now()
	err := run(context.Background(), &cfg, filepath.Join(dir, "initrd"), "n1", res)
	if !isFrozen(err) || !strings.Contains(err.Error(), `L1 froze: no end of command "stuck"`) {
		t.Fatalf("run: %v, want a frozenError naming the stuck command", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("freeze noticed after %v, want about 2 s", took)
	}
	if q := res.Command("quick"); q == nil || !q.Done {
		t.Errorf("the finished command is lost: %+v", res.Commands)
	}
	if s := res.Command("stuck"); s == nil || s.Done {
		t.Errorf("the stuck command: %+v", s)
	}
}

// TestRunRestartsFrozenL1 runs Run against a script standing in for QEMU:
// its first "L1" finishes one command and goes silent in the second; Run
// must boot a second one for the commands left — the frozen one first, not
// the finished one — and merge the results.
func TestRunRestartsFrozenL1(t *testing.T) {
	busybox := "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("SKIP: needs busybox-static at /bin/busybox for the base initramfs")
	}
	dir := t.TempDir()
	mods := filepath.Join(dir, "modules")
	if err := os.Mkdir(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range modules {
		if err := os.WriteFile(filepath.Join(mods, m+".ko"), []byte("not a module"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	boots := filepath.Join(dir, "boots")
	fake := filepath.Join(dir, "qemu")
	script := `#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = -initrd ] && rd=$2; shift; done
n=$(grep -ao 'RIG_NONCE=[0-9a-f]*' "$rd" | head -n1 | cut -d= -f2)
echo boot >>` + boots + `
if [ "$(wc -l <` + boots + `)" -eq 1 ]; then
	printf 'RIG:%s HELLO 1\nRIG:%s KVM ok 1\nRIG:%s BEGIN first-cmd 1\nRIG:%s END first-cmd 0 1\nRIG:%s BEGIN frozen-cmd 1\n' $n $n $n $n $n
	exec sleep 600
fi
grep -c first-cmd "$rd" >` + filepath.Join(dir, "second-has-first") + `
printf 'RIG:%s HELLO 1\nRIG:%s KVM ok 1\nRIG:%s BEGIN frozen-cmd 1\nRIG:%s END frozen-cmd 0 1\nRIG:%s BEGIN last-cmd 1\nRIG:%s END last-cmd 3 1\nRIG:%s DONE 1\n' $n $n $n $n $n $n $n
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Kernel: kernel, Modules: mods, Busybox: busybox, QEMU: fake,
		CacheDir: filepath.Join(dir, "cache"), WorkDir: filepath.Join(dir, "work"),
		Timeout: time.Minute, freezeGrace: time.Second,
		Commands: []Command{{Name: "first-cmd", Timeout: time.Second}, {Name: "frozen-cmd", Timeout: time.Second}, {Name: "last-cmd", Timeout: time.Second}}}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Freezes != 1 || !res.Complete {
		t.Errorf("Freezes %d, Complete %v; want 1, true", res.Freezes, res.Complete)
	}
	for name, status := range map[string]int{"first-cmd": 0, "frozen-cmd": 0, "last-cmd": 3} {
		if c := res.Command(name); c == nil || !c.Done || c.Status != status {
			t.Errorf("%s: %+v, want done with status %d", name, c, status)
		}
	}
	if len(res.Commands) != 3 {
		t.Errorf("%d command results, want 3: %+v", len(res.Commands), res.Commands)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "second-has-first")); err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Errorf("the second L1 was given the finished command again (grep -c: %q, %v)", b, err)
	}
}
