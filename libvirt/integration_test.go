package libvirt_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/microvm/microvm/libvirt"
	"github.com/microvm/microvm/libvirt/libvirttest"
)

// testDomainXML is a domain of libvirt's test driver: it "runs" nothing.
func testDomainXML(name string) string {
	return fmt.Sprintf(`<domain type='test'>
  <name>%s</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>`, name)
}

func dial(t *testing.T, uri string) *libvirt.Conn {
	t.Helper()
	c, err := libvirt.Dial(context.Background(), uri, libvirt.Options{ConnectTimeout: 10 * time.Second, CallTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("Dial(%s): %v", uri, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// virshRows runs virsh list --all against uri and returns its rows as
// "id|name|state".
func virshRows(t *testing.T, uri string) []string {
	t.Helper()
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		t.Skip("SKIP (needs virsh for the cross-check; Debian: apt-get install libvirt-clients)")
	}
	out, err := exec.Command(virsh, "-c", uri, "list", "--all").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh list --all: %v\n%s", err, out)
	}
	h, rows, err := libvirttest.ParseTable(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(h, "|") != "Id|Name|State" {
		t.Fatalf("virsh header %q", h)
	}
	var res []string
	for _, r := range rows {
		res = append(res, strings.Join(r, "|"))
	}
	return res
}

func ourRows(ds []libvirt.Domain) []string {
	var res []string
	for _, d := range ds {
		res = append(res, d.IDString()+"|"+d.Name+"|"+d.State.String())
	}
	return res
}

func sameRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: microvm rows\n  %s\nvirsh rows\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func mustCode(t *testing.T, err error, code golibvirt.ErrorNumber, text string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want libvirt error %d (%s)", code, text)
	}
	got, ok := libvirt.ErrorCode(err)
	if !ok || got != int(code) {
		t.Errorf("error %v: code %d (%v), want %d", err, got, ok, code)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("error %q does not contain libvirt's text %q", err, text)
	}
	var e *libvirt.Error
	if !errors.As(err, &e) || !e.FromDaemon() {
		t.Errorf("error %v is not an *Error from the daemon", err)
	}
}

// TestTestDriver exercises the API against the test:///default driver of a
// private libvirtd and compares List with virsh list --all on it.
func TestTestDriver(t *testing.T) {
	d := libvirttest.Start(t, libvirttest.Options{})
	ctx := context.Background()
	uri := d.URI("test:///default")
	c := dial(t, uri)

	// Domains in every state virsh distinguishes here: running (with Ids
	// that are not in name order), paused, shut off.
	for _, n := range []string{"zz-run", "Aa-off", "mm-run", "bb-off", "pp-paused"} {
		if _, err := c.Define(ctx, testDomainXML(n), libvirt.DefineOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"zz-run", "mm-run", "pp-paused"} {
		if _, err := c.Start(ctx, n, libvirt.WaitOptions{Wait: true, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("virsh", "-c", d.VirshURI("test:///default"), "suspend", "pp-paused").CombinedOutput(); err != nil {
		t.Logf("virsh suspend (for a paused domain): %v %s", err, out)
	}

	t.Run("list matches virsh", func(t *testing.T) {
		ds, err := c.List(ctx, libvirt.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		sameRows(t, "list --all", ourRows(ds), virshRows(t, d.VirshURI("test:///default")))
		if len(ds) != 6 {
			t.Errorf("%d domains, want 6 (test + 5 defined)", len(ds))
		}
		active, err := c.List(ctx, libvirt.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range active {
			if a.ID < 0 || !a.State.Active() {
				t.Errorf("list without All returned %+v", a)
			}
		}
		inactive, err := c.List(ctx, libvirt.ListOptions{InactiveOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(active)+len(inactive) != len(ds) {
			t.Errorf("active %d + inactive %d != all %d", len(active), len(inactive), len(ds))
		}
	})

	t.Run("lookup by name, uuid and id", func(t *testing.T) {
		byName, err := c.Lookup(ctx, "mm-run")
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{byName.UUID, byName.IDString(), strings.ReplaceAll(byName.UUID, "-", "")} {
			got, err := c.Lookup(ctx, ref)
			if err != nil || got.Name != "mm-run" {
				t.Errorf("Lookup(%q) = %v, %v", ref, got.Name, err)
			}
		}
		info, err := c.Info(ctx, "mm-run")
		if err != nil {
			t.Fatal(err)
		}
		if !info.Persistent || info.OSType == "" || info.State != libvirt.StateRunning || info.MaxMemoryKiB != 128<<10 {
			t.Errorf("Info = %+v", info)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		_, err := c.Info(ctx, "no-such-domain")
		mustCode(t, err, golibvirt.ErrNoDomain, "Domain not found")
		if !libvirt.IsNotFound(err) {
			t.Errorf("IsNotFound(%v) = false", err)
		}
		_, err = c.Define(ctx, testDomainXML("zz-run"), libvirt.DefineOptions{})
		if !errors.Is(err, libvirt.ErrExists) {
			t.Errorf("defining zz-run twice: %v, want ErrExists", err)
		}
		// Without our check libvirt itself refuses a second domain of the
		// same name (the XML has no UUID, so it would be a new one).
		_, err = c.Define(ctx, testDomainXML("zz-run"), libvirt.DefineOptions{Update: true})
		mustCode(t, err, golibvirt.ErrOperationFailed, "already exists")
		err = c.Destroy(ctx, "bb-off")
		mustCode(t, err, golibvirt.ErrOperationInvalid, "domain is not running")
		_, err = c.Define(ctx, "<domain type='test'><name>x</name>", libvirt.DefineOptions{})
		if err == nil {
			t.Error("broken XML accepted")
		}
		_, err = c.Define(ctx, "<domain type='nonsense'><name>x</name><memory>1024</memory><os><type>hvm</type></os></domain>", libvirt.DefineOptions{})
		if _, ok := libvirt.ErrorCode(err); !ok {
			t.Errorf("bad domain type: %v, want a libvirt error", err)
		}
	})

	t.Run("lifecycle with events", func(t *testing.T) {
		if _, err := c.Define(ctx, testDomainXML("life"), libvirt.DefineOptions{}); err != nil {
			t.Fatal(err)
		}
		dom, err := c.Start(ctx, "life", libvirt.WaitOptions{Wait: true, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if dom.State != libvirt.StateRunning || dom.ID < 0 {
			t.Errorf("after start: %+v", dom)
		}
		if _, err := c.Start(ctx, "life", libvirt.WaitOptions{}); err == nil {
			t.Error("starting a running domain did not fail")
		}
		if _, err := c.Shutdown(ctx, "life", libvirt.WaitOptions{Wait: true, Timeout: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
		got, err := c.Lookup(ctx, "life")
		if err != nil || got.State != libvirt.StateShutoff || got.ID != -1 {
			t.Errorf("after shutdown: %+v, %v", got, err)
		}
		if err := c.Undefine(ctx, "life"); err != nil {
			t.Fatal(err)
		}
		_, err = c.Lookup(ctx, "life")
		if !libvirt.IsNotFound(err) {
			t.Errorf("after undefine: %v, want not found", err)
		}
		err = c.Undefine(ctx, "life")
		mustCode(t, err, golibvirt.ErrNoDomain, "Domain not found")
	})

	t.Run("waits come and go while events flow", func(t *testing.T) {
		// Every Start/Shutdown with Wait watches lifecycle events; another
		// connection keeps events coming all the while. go-libvirt loses
		// its connection for good if a subscription is torn down while an
		// event arrives, so the connection must still answer at the end.
		for _, n := range []string{"flap", "waiter"} {
			if _, err := c.Define(ctx, testDomainXML(n), libvirt.DefineOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		c2 := dial(t, uri)
		stop := make(chan struct{})
		flapped := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					flapped <- nil
					return
				default:
				}
				if _, err := c2.Start(ctx, "flap", libvirt.WaitOptions{}); err != nil {
					flapped <- err
					return
				}
				if err := c2.Destroy(ctx, "flap"); err != nil {
					flapped <- err
					return
				}
			}
		}()
		fast, err := libvirt.Dial(ctx, uri, libvirt.Options{CallTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer fast.Close()
		for i := 0; i < 30; i++ {
			if _, err := fast.Start(ctx, "waiter", libvirt.WaitOptions{Wait: true, Timeout: 5 * time.Second}); err != nil {
				t.Fatalf("round %d: start: %v", i, err)
			}
			if _, err := fast.Shutdown(ctx, "waiter", libvirt.WaitOptions{Wait: true, Timeout: 5 * time.Second}); err != nil {
				t.Fatalf("round %d: shutdown: %v", i, err)
			}
		}
		close(stop)
		if err := <-flapped; err != nil {
			t.Fatalf("flapping: %v", err)
		}
		if _, err := fast.List(ctx, libvirt.ListOptions{All: true}); err != nil {
			t.Errorf("connection after many waits: %v", err)
		}
	})

	t.Run("events stream", func(t *testing.T) {
		if _, err := c.Define(ctx, testDomainXML("evt"), libvirt.DefineOptions{}); err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithCancel(ctx)
		seen := make(chan string, 16)
		seenAny := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- c.Events(ectx, func(ev libvirt.LifecycleEvent) {
				switch {
				case ev.Domain == "evt":
					seen <- libvirt.EventName(ev.Event, ev.Detail)
				case strings.HasPrefix(ev.Domain, "probe") && ev.Event == 0:
					select {
					case seenAny <- ev.Domain:
					default:
					}
				}
			})
		}()
		// A second connection does the lifecycle so the first one only
		// listens. Events subscribes on its goroutine: wait until it sees
		// a probe domain being defined.
		c2 := dial(t, uri)
	probe:
		for i := 0; ; i++ {
			if i == 100 {
				t.Fatal("Events never delivered a probe's defined event")
			}
			if _, err := c2.Define(ctx, testDomainXML(fmt.Sprintf("probe%d", i)), libvirt.DefineOptions{}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-seenAny:
				break probe
			case <-time.After(200 * time.Millisecond):
			}
		}
		if _, err := c2.Start(ctx, "evt", libvirt.WaitOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c2.Destroy(ctx, "evt"); err != nil {
			t.Fatal(err)
		}
		var got []string
		timeout := time.After(10 * time.Second)
		for len(got) < 2 {
			select {
			case s := <-seen:
				got = append(got, s)
			case <-timeout:
				t.Fatalf("events seen: %v, want started and stopped", got)
			}
		}
		if got[0] != "started" || got[1] != "stopped (destroyed)" {
			t.Errorf("events = %v", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Events: %v", err)
		}
	})
}

// TestQEMU defines and boots real domains (Debian's cloud kernel under TCG)
// through qemu:///system of a private libvirtd.
func TestQEMU(t *testing.T) {
	libvirttest.HaveQEMU(t)
	kernel := libvirttest.DebianKernel(t)
	d := libvirttest.Start(t, libvirttest.Options{TCP: true})
	tmp := t.TempDir()
	initrd := libvirttest.Initrd(t, tmp)
	ctx := context.Background()
	c := dial(t, d.URI("qemu:///system"))

	t.Run("virt type", func(t *testing.T) {
		virt, reason, err := c.ChooseVirtType(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("auto: %s (%s)", virt, reason)
		if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && virt != libvirt.VirtTCG {
			t.Errorf("on a kvm_pvm host auto chose %q, want TCG", virt)
		}
	})

	t.Run("boot transient to ready and exit", func(t *testing.T) {
		res, err := c.BootKernel(ctx, libvirt.BootSpec{
			Kernel: kernel, Initrd: initrd, Cmdline: "quiet", VirtType: libvirt.VirtTCG,
			Transient: true, WaitExit: true, ConsoleLog: filepath.Join(tmp, "transient.log"),
			Timeout: 90 * time.Second,
		})
		if err != nil {
			t.Fatalf("BootKernel: %v", err)
		}
		t.Cleanup(func() { res.Cleanup(context.Background()) })
		t.Logf("launch→ready %s, launch→stopped %s (%s), start call %s", res.ReadyAfter, res.ExitAfter, res.ExitReason, res.StartTook)
		if !res.Ready || !res.Exited || res.ExitReason != "shutdown" || res.ConsoleVia != "file" {
			t.Errorf("result %+v", res)
		}
		if res.ReadyAfter <= 0 || res.ExitAfter < res.ReadyAfter {
			t.Errorf("ready after %s, exit after %s", res.ReadyAfter, res.ExitAfter)
		}
		log, err := os.ReadFile(res.ConsoleLog)
		if err != nil || !strings.Contains(string(log), libvirt.DefaultReadyMarker) {
			t.Errorf("console log %s: %v\n%s", res.ConsoleLog, err, log)
		}
		// A transient domain is gone once it stopped.
		if _, err := c.Lookup(ctx, res.Name); !libvirt.IsNotFound(err) {
			t.Errorf("transient domain still there: %v", err)
		}
	})

	t.Run("boot over tcp with the console streamed", func(t *testing.T) {
		// As for a remote host: the console log is on the daemon's side
		// (here its private /var/log), so ready is seen on the console
		// stream.
		rc := dial(t, d.TCPURI("qemu", "/system"))
		res, err := rc.BootKernel(ctx, libvirt.BootSpec{
			Kernel: kernel, Initrd: initrd, Cmdline: "quiet", VirtType: libvirt.VirtTCG,
			Transient: true, WaitExit: true, Timeout: 90 * time.Second,
		})
		if err != nil {
			t.Fatalf("BootKernel over tcp: %v", err)
		}
		t.Logf("launch→ready %s, launch→stopped %s", res.ReadyAfter, res.ExitAfter)
		if res.ConsoleVia != "stream" || !res.Ready || !res.Exited || !strings.HasPrefix(res.ConsoleLog, "/var/log/libvirt/qemu/") {
			t.Errorf("result %+v", res)
		}
		if _, err := os.Stat(filepath.Join(d.Dir, "var", "log", "libvirt", "qemu", filepath.Base(res.ConsoleLog))); err != nil {
			t.Errorf("console log on the daemon's side: %v", err)
		}
	})

	t.Run("persistent domain lifecycle", func(t *testing.T) {
		const name = "held"
		res, err := c.BootKernel(ctx, libvirt.BootSpec{
			Name: name, Kernel: kernel, Initrd: initrd, Cmdline: "quiet microvm.hold",
			VirtType: libvirt.VirtTCG, ConsoleLog: filepath.Join(tmp, "held.log"), Timeout: 90 * time.Second,
		})
		if err != nil {
			t.Fatalf("BootKernel: %v", err)
		}
		t.Cleanup(func() {
			if err := res.Cleanup(context.Background()); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
		})
		if !res.Ready || res.Exited || res.DefineTook <= 0 {
			t.Errorf("result %+v", res)
		}
		qemuURI := d.VirshURI("qemu:///system")
		ds, err := c.List(ctx, libvirt.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		sameRows(t, "running", ourRows(ds), virshRows(t, qemuURI))
		if len(ds) != 1 || ds[0].State != libvirt.StateRunning || ds[0].VCPUs != 1 || ds[0].MemoryKiB != 256<<10 {
			t.Errorf("list: %+v", ds)
		}

		// The console stream shows the guest's heartbeat.
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var out syncBuffer
		out.stop, out.want = cancel, "microvm-init: alive"
		err = c.Console(cctx, name, &out)
		cancel()
		if err != nil || !strings.Contains(out.String(), "microvm-init: alive") {
			t.Errorf("console: %v, output %q", err, out.String())
		}

		// The guest ignores ACPI: shutdown --wait runs out of time.
		_, err = c.Shutdown(ctx, name, libvirt.WaitOptions{Wait: true, Timeout: 2 * time.Second})
		if !errors.Is(err, libvirt.ErrTimeout) {
			t.Errorf("shutdown of a guest that ignores it: %v, want ErrTimeout", err)
		}
		if err := c.Destroy(ctx, name); err != nil {
			t.Fatal(err)
		}
		mustCode(t, c.Destroy(ctx, name), golibvirt.ErrOperationInvalid, "domain is not running")
		ds, err = c.List(ctx, libvirt.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		sameRows(t, "shut off", ourRows(ds), virshRows(t, qemuURI))
		if len(ds) != 1 || ds[0].IDString() != "-" || ds[0].State != libvirt.StateShutoff {
			t.Errorf("after destroy: %+v", ds)
		}
		if err := c.Console(ctx, name, &out); err == nil || !strings.Contains(err.Error(), "not running") {
			t.Errorf("console of a shut off domain: %v", err)
		}
		// Start again, waiting for the lifecycle event.
		dom, err := c.Start(ctx, name, libvirt.WaitOptions{Wait: true, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if dom.State != libvirt.StateRunning {
			t.Errorf("after start: %+v", dom)
		}
		ds, _ = c.List(ctx, libvirt.ListOptions{All: true})
		sameRows(t, "restarted", ourRows(ds), virshRows(t, qemuURI))
		if _, err := c.Define(ctx, res.XML, libvirt.DefineOptions{}); !errors.Is(err, libvirt.ErrExists) {
			t.Errorf("define twice: %v, want ErrExists", err)
		}
	})

	t.Run("kernel libvirtd cannot read", func(t *testing.T) {
		for _, transient := range []bool{true, false} {
			res, err := c.BootKernel(ctx, libvirt.BootSpec{
				Kernel: "/nonexistent/vmlinuz", VirtType: libvirt.VirtTCG, Transient: transient,
				ConsoleLog: filepath.Join(tmp, "bad.log"), Timeout: 30 * time.Second,
			})
			if res != nil {
				res.Cleanup(ctx)
			}
			code, ok := libvirt.ErrorCode(err)
			if !ok || !strings.Contains(err.Error(), "/nonexistent/vmlinuz") {
				t.Errorf("transient=%v: %v (code %d), want libvirt's error naming the kernel", transient, err, code)
			}
		}
		ds, err := c.List(ctx, libvirt.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ds {
			if x.Name != "held" {
				t.Errorf("left behind: %+v", x)
			}
		}
	})

	t.Run("domain that never gets ready", func(t *testing.T) {
		// No initrd: the kernel panics (panic=-1 reboots, on_reboot destroys).
		res, err := c.BootKernel(ctx, libvirt.BootSpec{
			Kernel: kernel, VirtType: libvirt.VirtTCG, Transient: true,
			ConsoleLog: filepath.Join(tmp, "panic.log"), Timeout: 90 * time.Second,
		})
		if !errors.Is(err, libvirt.ErrNotReady) {
			t.Fatalf("BootKernel without initrd: %v, want ErrNotReady", err)
		}
		t.Logf("%v", err)
		if res == nil || res.Ready || !res.Exited || res.LastLine == "" {
			t.Errorf("result %+v", res)
		}
	})

	t.Run("timeout destroys the domain", func(t *testing.T) {
		res, err := c.BootKernel(ctx, libvirt.BootSpec{
			Kernel: kernel, Initrd: initrd, VirtType: libvirt.VirtTCG, Transient: true,
			ReadyMarker: "a marker that never comes", ConsoleLog: filepath.Join(tmp, "never.log"),
			Timeout: 1500 * time.Millisecond,
		})
		if !errors.Is(err, libvirt.ErrTimeout) {
			t.Fatalf("BootKernel: %v, want ErrTimeout", err)
		}
		if res == nil {
			t.Fatal("no result")
		}
		if _, err := c.Lookup(ctx, res.Name); !libvirt.IsNotFound(err) {
			t.Errorf("domain %s still there after the timeout: %v", res.Name, err)
		}
	})
}

// syncBuffer collects console output and ends the stream once want shows.
type syncBuffer struct {
	mu   chan struct{}
	b    strings.Builder
	want string
	stop func()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	if s.mu == nil {
		s.mu = make(chan struct{}, 1)
	}
	s.mu <- struct{}{}
	s.b.Write(p)
	done := s.want != "" && strings.Contains(s.b.String(), s.want)
	<-s.mu
	if done && s.stop != nil {
		s.stop()
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	if s.mu == nil {
		s.mu = make(chan struct{}, 1)
	}
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

// TestListHosts lists a local daemon and one on loopback TCP (standing in
// for a remote host) at once, plus two hosts that cannot be reached.
func TestListHosts(t *testing.T) {
	local := libvirttest.Start(t, libvirttest.Options{})
	remote := libvirttest.Start(t, libvirttest.Options{TCP: true})
	ctx := context.Background()
	rc := dial(t, remote.TCPURI("test", "/default"))
	if _, err := rc.Define(ctx, testDomainXML("remote-only"), libvirt.DefineOptions{}); err != nil {
		t.Fatal(err)
	}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	uris := []string{
		local.URI("test:///default"),
		remote.TCPURI("test", "/default"),
		"qemu+tcp://" + deadAddr + "/system",
		"test:///default?socket=/nonexistent/sock",
	}
	res := libvirt.ListHosts(ctx, uris, libvirt.Options{ConnectTimeout: 5 * time.Second}, libvirt.ListOptions{All: true})
	if len(res) != 4 {
		t.Fatalf("%d results", len(res))
	}
	for i, r := range res {
		t.Logf("%s: %d domains, err %v (%s)", r.URI, len(r.Domains), r.Err, r.Took)
		if r.URI != uris[i] {
			t.Errorf("result %d is %s, want %s", i, r.URI, uris[i])
		}
	}
	if res[0].Err != nil || len(res[0].Domains) != 1 || res[0].Domains[0].Host != uris[0] {
		t.Errorf("local: %+v", res[0])
	}
	if res[1].Err != nil || len(res[1].Domains) != 2 || res[1].Domains[1].Name != "remote-only" {
		t.Errorf("remote: %+v", res[1])
	}
	for _, r := range res[2:] {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "cannot reach libvirtd") {
			t.Errorf("unreachable %s: %v", r.URI, r.Err)
		}
	}
	sameRows(t, "tcp host", ourRows(res[1].Domains), virshRows(t, remote.TCPURI("test", "/default")))
}

// TestConnectionFailures: nothing may hang, and the errors say why.
func TestConnectionFailures(t *testing.T) {
	ctx := context.Background()

	t.Run("no daemon", func(t *testing.T) {
		_, err := libvirt.Dial(ctx, "qemu:///system?socket=/nonexistent/libvirt-sock", libvirt.Options{})
		if err == nil || !strings.Contains(err.Error(), "cannot reach libvirtd") || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("Dial: %v", err)
		}
	})

	t.Run("bad URIs", func(t *testing.T) {
		for _, u := range []string{"nope:///system", "qemu+tcp:///system", "qemu://h:x/system", "qemu+ext:///system"} {
			_, err := libvirt.Dial(ctx, u, libvirt.Options{})
			if !errors.Is(err, libvirt.ErrBadURI) {
				t.Errorf("Dial(%s): %v, want ErrBadURI", u, err)
			}
		}
	})

	t.Run("silent server", func(t *testing.T) {
		// Accepts, reads, never answers: the handshake must time out.
		addr := silentListener(t)
		_, err := libvirt.Dial(ctx, "test+tcp://"+addr+"/default", libvirt.Options{ConnectTimeout: 300 * time.Millisecond})
		if !errors.Is(err, libvirt.ErrNoAnswer) {
			t.Errorf("Dial to a silent server: %v, want ErrNoAnswer", err)
		}
	})

	d := libvirttest.Start(t, libvirttest.Options{})
	uri := d.URI("test:///default")

	t.Run("daemon hangs", func(t *testing.T) {
		c, err := libvirt.Dial(ctx, uri, libvirt.Options{CallTimeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pid := daemonPID(t, d)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		_, err = c.List(ctx, libvirt.ListOptions{All: true})
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(err, libvirt.ErrNoAnswer) {
			t.Errorf("List on a stopped daemon: %v, want ErrNoAnswer", err)
		}
		// The connection is closed now; later calls fail at once.
		if _, err := c.List(ctx, libvirt.ListOptions{}); !errors.Is(err, libvirt.ErrConnectionLost) {
			t.Errorf("List after the timeout: %v, want ErrConnectionLost", err)
		}
		// The daemon itself is fine again.
		c2 := dial(t, uri)
		if _, err := c2.List(ctx, libvirt.ListOptions{}); err != nil {
			t.Errorf("after SIGCONT: %v", err)
		}
	})

	t.Run("daemon dies", func(t *testing.T) {
		c := dial(t, uri)
		d.Kill()
		select {
		case <-c.Disconnected():
		case <-time.After(10 * time.Second):
			t.Error("Disconnected not closed after the daemon died")
		}
		_, err := c.List(ctx, libvirt.ListOptions{All: true})
		if !errors.Is(err, libvirt.ErrConnectionLost) {
			t.Errorf("List after the daemon died: %v, want ErrConnectionLost", err)
		}
		_, err = libvirt.Dial(ctx, uri, libvirt.Options{})
		if err == nil || !strings.Contains(err.Error(), "cannot reach libvirtd") {
			t.Errorf("Dial after the daemon died: %v", err)
		}
	})
}

// daemonPID is libvirtd's pid in a private daemon (from its pid file).
func daemonPID(t *testing.T, d *libvirttest.Daemon) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Dir, "run", "libvirtd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatal(err)
	}
	return pid
}
