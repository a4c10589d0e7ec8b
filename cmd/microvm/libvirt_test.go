package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm/microvm/libvirt"
	"github.com/microvm/microvm/libvirt/libvirttest"
)

// lvRun runs microvm in process and returns its status and output.
func lvRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	code := a.run(args)
	return code, out.String(), errb.String()
}

// lvRows parses a virsh-style table into "cell|cell|..." rows.
func lvRows(t *testing.T, table string) []string {
	t.Helper()
	_, rows, err := libvirttest.ParseTable(table)
	if err != nil {
		t.Fatal(err)
	}
	var res []string
	for _, r := range rows {
		res = append(res, strings.Join(r, "|"))
	}
	return res
}

func lvVirsh(t *testing.T, args ...string) string {
	t.Helper()
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		t.Skip("SKIP (needs virsh for the cross-check; Debian: apt-get install libvirt-clients)")
	}
	out, err := exec.Command(virsh, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %v: %v\n%s", args, err, out)
	}
	return string(out)
}

const lvTestDomain = `<domain type='test'>
  <name>NAME</name>
  <memory unit='MiB'>64</memory>
  <os><type>hvm</type></os>
</domain>`

// TestLibvirtCLI runs `microvm libvirt` against a private libvirtd and
// compares its list with virsh list on the same daemon.
func TestLibvirtCLI(t *testing.T) {
	d := libvirttest.Start(t, libvirttest.Options{})
	remote := libvirttest.Start(t, libvirttest.Options{TCP: true})
	uri := d.URI("test:///default")
	dir := t.TempDir()
	xmlFile := func(name string) string {
		p := filepath.Join(dir, name+".xml")
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(lvTestDomain, "NAME", name)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// test:///default keeps its state only while a connection is open.
	keep, err := libvirt.Dial(context.Background(), uri, libvirt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keep.Close() })

	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := lvRun(t, append([]string{"libvirt", "-c", uri}, args...)...)
		if code != 0 {
			t.Fatalf("microvm libvirt %v: status %d\n%s%s", args, code, out, errs)
		}
		return out
	}
	ok("define", xmlFile("web"))
	ok("define", xmlFile("Db"))
	ok("define", xmlFile("cache"))
	ok("start", "cache", "--wait")
	ok("start", "web")

	t.Run("list matches virsh", func(t *testing.T) {
		for _, flags := range [][]string{{"--all"}, nil, {"--inactive"}} {
			ours := ok(append([]string{"list"}, flags...)...)
			theirs := lvVirsh(t, append([]string{"-c", d.VirshURI("test:///default"), "list"}, flags...)...)
			if got, want := lvRows(t, ours), lvRows(t, theirs); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("list %v:\nmicrovm:\n%s\nvirsh:\n%s", flags, ours, theirs)
			}
		}
		// Byte for byte, too: same layout.
		ours := ok("list", "--all")
		theirs := lvVirsh(t, "-c", d.VirshURI("test:///default"), "list", "--all")
		if ours != theirs {
			t.Errorf("layout differs:\n%q\n%q", ours, theirs)
		}
		names := ok("list", "--all", "--name")
		vnames := lvVirsh(t, "-c", d.VirshURI("test:///default"), "list", "--all", "--name")
		if names != vnames {
			t.Errorf("--name: %q, virsh %q", names, vnames)
		}
		uuids := ok("list", "--all", "--uuid")
		vuuids := lvVirsh(t, "-c", d.VirshURI("test:///default"), "list", "--all", "--uuid")
		if uuids != vuuids {
			t.Errorf("--uuid: %q, virsh %q", uuids, vuuids)
		}
	})

	t.Run("json", func(t *testing.T) {
		var rows []map[string]any
		if err := json.Unmarshal([]byte(ok("list", "--all", "--json")), &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 4 || rows[0]["name"] != "test" || rows[0]["state"] != "running" || rows[3]["state"] != "shut off" || rows[3]["id"] != float64(-1) {
			t.Errorf("list --json: %v", rows)
		}
		var info map[string]any
		if err := json.Unmarshal([]byte(ok("info", "web", "--json")), &info); err != nil {
			t.Fatal(err)
		}
		if info["name"] != "web" || info["persistent"] != true || info["max_memory_kib"] != float64(64<<10) {
			t.Errorf("info --json: %v", info)
		}
	})

	t.Run("long", func(t *testing.T) {
		out := ok("list", "--all", "--long")
		h, rows, err := libvirttest.ParseTable(out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(h, "|") != "Id|Name|State|vCPUs|Memory|CPU time" || len(rows) != 4 {
			t.Fatalf("list --long:\n%s", out)
		}
		for _, r := range rows {
			if r[1] == "Db" && (r[3] != "1" || r[4] != "64 MiB") {
				t.Errorf("Db row %q", r)
			}
		}
	})

	t.Run("default URI from the environment", func(t *testing.T) {
		t.Setenv("LIBVIRT_DEFAULT_URI", uri)
		code, out, errs := lvRun(t, "libvirt", "list", "--name")
		if code != 0 || !strings.Contains(out, "cache") {
			t.Errorf("status %d, out %q, err %q", code, out, errs)
		}
	})

	t.Run("several hosts", func(t *testing.T) {
		hosts := filepath.Join(dir, "hosts")
		content := "# lab\n" + remote.TCPURI("test", "/default") + "\nqemu+tcp://127.0.0.1:1/system  # down\n"
		if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errs := lvRun(t, "libvirt", "-c", uri, "--hosts", hosts, "list", "--all")
		if code != 0 {
			t.Fatalf("status %d: %s%s", code, out, errs)
		}
		h, rows, err := libvirttest.ParseTable(out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(h, "|") != "Host|Id|Name|State" {
			t.Errorf("header %q", h)
		}
		var hostsSeen []string
		for _, r := range rows {
			hostsSeen = append(hostsSeen, r[0])
		}
		if len(rows) != 6 || rows[0][0] != uri || rows[4][0] != remote.TCPURI("test", "/default") ||
			rows[5][0] != "qemu+tcp://127.0.0.1:1/system" || !strings.HasPrefix(rows[5][3], "error: connect: cannot reach libvirtd") {
			t.Errorf("rows:\n%s", out)
		}
		// Every host down: the command fails.
		code, _, errs = lvRun(t, "libvirt", "-c", "qemu+tcp://127.0.0.1:1/system", "-c", "test:///default?socket=/nonexistent", "list")
		if code != exitLibvirt || !strings.Contains(errs, "no host could be listed") {
			t.Errorf("all hosts down: status %d, %q", code, errs)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		tests := []struct {
			args []string
			code int
			text string
		}{
			{[]string{"libvirt", "-c", "bogus:///system", "list"}, exitUsage, `unknown driver "bogus"`},
			{[]string{"libvirt", "-c", "qemu+tcp:///system", "list"}, exitUsage, "needs a host"},
			{[]string{"libvirt", "-c", "qemu:///system?socket=/nonexistent/sock", "list"}, exitLibvirt, "cannot reach libvirtd"},
			{[]string{"libvirt", "-c", uri, "info", "nosuch"}, exitLibvirt, "Domain not found"},
			{[]string{"libvirt", "-c", uri, "destroy", "nosuch"}, exitLibvirt, "Domain not found"},
			{[]string{"libvirt", "-c", uri, "define", xmlFile("web")}, exitLibvirt, "domain already exists"},
			{[]string{"libvirt", "-c", uri, "destroy", "Db"}, exitLibvirt, "domain is not running"},
			{[]string{"libvirt", "-c", uri, "start", "web"}, exitLibvirt, "already running"},
			{[]string{"libvirt", "-c", uri, "define", filepath.Join(dir, "missing.xml")}, exitUsage, "no such file"},
			{[]string{"libvirt", "-c", uri, "info"}, exitUsage, "exactly 1 argument"},
			{[]string{"libvirt", "-c", uri, "-c", uri + "&x=1", "info", "web"}, exitUsage, "works on one host"},
			{[]string{"libvirt", "-c", uri, "list", "--name", "--json"}, exitUsage, "do not go with"},
			{[]string{"libvirt", "-c", uri, "boot", "/k", "--type", "xen"}, exitUsage, "--type"},
			{[]string{"libvirt", "-c", uri, "list", "--bogus-flag"}, exitUsage, "unknown flag"},
		}
		for _, tc := range tests {
			code, out, errs := lvRun(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.text) {
				t.Errorf("microvm %v: status %d (want %d), stderr %q (want %q), stdout %q", tc.args, code, tc.code, errs, tc.text, out)
			}
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		ok("shutdown", "web", "--wait", "--timeout", "10s")
		if out := ok("info", "web"); !strings.Contains(out, "shut off") {
			t.Errorf("after shutdown: %s", out)
		}
		ok("undefine", "web")
		code, _, errs := lvRun(t, "libvirt", "-c", uri, "undefine", "web")
		if code != exitLibvirt || !strings.Contains(errs, "Domain not found") {
			t.Errorf("undefine twice: %d %q", code, errs)
		}
		if out := ok("dumpxml", "cache"); !strings.Contains(out, "<name>cache</name>") {
			t.Errorf("dumpxml: %s", out)
		}
	})
}

// TestLibvirtCLIBoot boots the Debian kernel with `microvm libvirt boot`
// through a private libvirtd's qemu:///system, under TCG.
func TestLibvirtCLIBoot(t *testing.T) {
	libvirttest.HaveQEMU(t)
	kernel := libvirttest.DebianKernel(t)
	d := libvirttest.Start(t, libvirttest.Options{})
	dir := t.TempDir()
	initrd := libvirttest.Initrd(t, dir)
	uri := d.URI("qemu:///system")

	code, out, errs := lvRun(t, "libvirt", "-c", uri, "boot", kernel, "--initrd", initrd, "--transient",
		"--type", "qemu", "--json", "--console-log", filepath.Join(dir, "console.log"), "--timeout", "90s")
	if code != 0 {
		t.Fatalf("boot: status %d\n%s\n%s", code, out, errs)
	}
	var res struct {
		Ready      bool    `json:"ready"`
		ReadyNS    float64 `json:"ready_ns"`
		Exited     bool    `json:"exited"`
		ExitNS     float64 `json:"exit_ns"`
		VirtType   string  `json:"virt_type"`
		ExitReason string  `json:"exit_reason"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("boot --json: %v\n%s", err, out)
	}
	t.Logf("microvm libvirt boot: ready %.0f ms, stopped %.0f ms", res.ReadyNS/1e6, res.ExitNS/1e6)
	if !res.Ready || !res.Exited || res.VirtType != "qemu" || res.ExitReason != "shutdown" || res.ExitNS < res.ReadyNS {
		t.Errorf("boot result %+v", res)
	}

	// A kernel libvirtd cannot read: libvirt's error, status 127.
	code, out, errs = lvRun(t, "libvirt", "-c", uri, "boot", "/nonexistent/vmlinuz", "--type", "qemu", "--transient")
	if code != exitLibvirt || !strings.Contains(errs, "/nonexistent/vmlinuz") {
		t.Errorf("unreadable kernel: status %d\n%s%s", code, out, errs)
	}

	// Persistent, left running (--detach), then seen by list and virsh,
	// then removed.
	code, _, errs = lvRun(t, "libvirt", "-c", uri, "boot", kernel, "--initrd", initrd, "--name", "kept",
		"--cmdline", "quiet microvm.hold", "--type", "qemu", "--detach", "--console-log", filepath.Join(dir, "kept.log"))
	if code != 0 {
		t.Fatalf("boot --detach: %d %s", code, errs)
	}
	_, list, _ := lvRun(t, "libvirt", "-c", uri, "list", "--all")
	virsh := lvVirsh(t, "-c", d.VirshURI("qemu:///system"), "list", "--all")
	if got, want := lvRows(t, list), lvRows(t, virsh); strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) != 1 || !strings.HasSuffix(got[0], "|kept|running") {
		t.Errorf("list:\n%s\nvirsh:\n%s", list, virsh)
	}
	code, console, errs := lvRun(t, "libvirt", "-c", uri, "console", "kept", "--timeout", "3s")
	if code != 0 || !strings.Contains(console, "microvm-init: alive") {
		t.Errorf("console: status %d, %q %q", code, console, errs)
	}
	for _, args := range [][]string{{"destroy", "kept"}, {"undefine", "kept"}} {
		if code, out, errs := lvRun(t, append([]string{"libvirt", "-c", uri}, args...)...); code != 0 {
			t.Errorf("%v: %d %s%s", args, code, out, errs)
		}
	}
}
