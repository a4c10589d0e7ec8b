package libvirt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// DefaultReadyMarker is the console line a guest prints when its workload
// runs (the microvm guest init prints it).
const DefaultReadyMarker = "microvm-init: ready"

// BaseCmdline starts every kernel command line BootKernel builds: the console
// on the first serial port (whose output is the console log) and an
// immediate reboot on panic, which ends a transient domain.
const BaseCmdline = "console=ttyS0 panic=-1"

// ErrNotReady is wrapped when the domain stopped before its console showed
// the ready marker.
var ErrNotReady = errors.New("domain stopped before it was ready")

// Virtualization types for BootSpec.VirtType.
const (
	VirtAuto = ""     // KVM when the host can really run it, else TCG
	VirtKVM  = "kvm"  // hardware virtualization through /dev/kvm
	VirtTCG  = "qemu" // QEMU's binary translation, works anywhere
)

// BootSpec describes a kernel to boot as a libvirt domain by direct kernel
// boot (no firmware, no disk): the same kernel image and initrd that
// `microvm boot` takes.
type BootSpec struct {
	// Name of the domain; "microvm-" and random hex when empty.
	Name string
	// Kernel (bzImage or vmlinuz) and Initrd are paths on the daemon's
	// host. For a local connection, relative paths are made absolute.
	Kernel, Initrd string
	// Cmdline is appended to BaseCmdline.
	Cmdline string
	// MemoryMiB (256 when zero) and CPUs (1 when zero) size the guest.
	MemoryMiB, CPUs int
	// VirtType is VirtAuto, VirtKVM or VirtTCG.
	VirtType string
	// Machine is the QEMU machine type; the hypervisor's default when empty.
	Machine string
	// Transient creates a domain that vanishes when it stops
	// (virDomainCreateXML). Otherwise the domain is defined, then started,
	// and stays defined afterwards.
	Transient bool
	// ConsoleLog is the file the first serial port is logged to, a path on
	// the daemon's host. When empty: a file in os.TempDir() for a local
	// connection, /var/log/libvirt/qemu/NAME.console.log for a remote one.
	ConsoleLog string
	// ReadyMarker is the console text that means "ready"
	// (DefaultReadyMarker when empty).
	ReadyMarker string
	// WaitExit keeps watching after ready until the domain stops, and
	// reports ExitAfter.
	WaitExit bool
	// Timeout bounds the whole boot, ready and (with WaitExit) exit
	// (2 minutes when zero). When it runs out the domain is destroyed.
	Timeout time.Duration
}

// BootResult is what BootKernel measured. All durations are from the launch:
// the moment the create call was sent.
type BootResult struct {
	Name     string `json:"name"`
	UUID     string `json:"uuid"`
	VirtType string `json:"virt_type"`
	// VirtReason says why VirtType was chosen.
	VirtReason string `json:"virt_reason"`
	Transient  bool   `json:"transient"`
	ConsoleLog string `json:"console_log"`
	// ConsoleVia is "file" (the log was read locally) or "stream" (the
	// console was streamed over the connection, for remote daemons).
	ConsoleVia string    `json:"console_via"`
	LaunchedAt time.Time `json:"launched_at"`
	// DefineTook is how long defining the domain took (persistent only,
	// before the launch).
	DefineTook time.Duration `json:"define_ns"`
	// StartTook is how long the create call took to return.
	StartTook time.Duration `json:"start_ns"`
	// Ready is set when the console showed the ready marker, ReadyAfter
	// ReadyAfter after launch.
	Ready      bool          `json:"ready"`
	ReadyAfter time.Duration `json:"ready_ns"`
	// Exited is set when the domain was seen to stop, ExitAfter after
	// launch, for ExitReason ("shutdown", "destroyed", "crashed", ...).
	Exited     bool          `json:"exited"`
	ExitAfter  time.Duration `json:"exit_ns"`
	ExitReason string        `json:"exit_reason,omitempty"`
	// LastLine is the last non-empty console line seen.
	LastLine string `json:"last_console_line"`
	// XML is the domain description that was booted.
	XML string `json:"-"`

	conn   *Conn
	ownLog bool // ConsoleLog was chosen here, on this machine: Cleanup removes it
}

// Cleanup destroys the domain if it is still running and, when it was
// defined, undefines it. It is safe to call more than once and on a
// partially filled result.
func (r *BootResult) Cleanup(ctx context.Context) error {
	if r == nil || r.conn == nil || r.UUID == "" {
		return nil
	}
	c := r.conn
	if r.ownLog {
		defer os.Remove(r.ConsoleLog)
	}
	u, _ := parseUUID(r.UUID)
	var d golibvirt.Domain
	err := c.call(ctx, "clean up domain", r.Name, func() (err error) { d, err = c.lv.DomainLookupByUUID(u); return })
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	if st, err := c.state(ctx, d); err == nil && st.Active() {
		if err := c.call(ctx, "destroy domain", r.Name, func() error { return c.lv.DomainDestroy(d) }); err != nil && !IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if !r.Transient {
		if err := c.call(ctx, "undefine domain", r.Name, func() error { return c.lv.DomainUndefineFlags(d, 0) }); err != nil && !IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ChooseVirtType decides between KVM and TCG for this daemon's host: KVM
// when libvirt reports a usable KVM for x86_64 and the host CPU shows VT-x
// or AMD-V (vmx/svm). Nested or paravirtual KVM without them (kvm_pvm) runs
// a full VM's firmware and real-mode code emulated and cannot boot Linux
// well, so such hosts get TCG. The reason is a sentence for reports.
func (c *Conn) ChooseVirtType(ctx context.Context) (virt, reason string, err error) {
	err = c.call(ctx, "read domain capabilities", "", func() error {
		_, err := c.lv.ConnectGetDomainCapabilities(nil, golibvirt.OptString{"x86_64"}, nil, golibvirt.OptString{"kvm"}, 0)
		return err
	})
	if err != nil {
		if _, fromDaemon := ErrorCode(err); fromDaemon {
			return VirtTCG, "libvirt reports no KVM on this host (" + shortErr(err) + "); using TCG", nil
		}
		return "", "", err
	}
	var host string
	err = c.call(ctx, "read host capabilities", "", func() (err error) { host, err = c.lv.ConnectGetCapabilities(); return })
	if err != nil {
		return "", "", err
	}
	feats, err := hostCPUFeatures(host)
	if err != nil {
		return "", "", c.wrap("read host capabilities", "", err)
	}
	if !feats["vmx"] && !feats["svm"] {
		return VirtTCG, "KVM is present but the host CPU shows no vmx/svm (nested or paravirtual KVM such as kvm_pvm); using TCG", nil
	}
	if c.uri.Local() {
		if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
			return VirtTCG, "KVM here is kvm_pvm, which cannot boot a full VM's real-mode code; using TCG", nil
		}
	}
	return VirtKVM, "libvirt reports KVM and the host CPU has hardware virtualization", nil
}

func shortErr(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Err.Error()
	}
	return err.Error()
}

// hostCPUFeatures reads the feature names of <host><cpu> in a capabilities
// document.
func hostCPUFeatures(capsXML string) (map[string]bool, error) {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return nil, fmt.Errorf("capabilities XML: %w", err)
	}
	m := make(map[string]bool)
	if cpu := caps.Host.CPU; cpu != nil {
		for _, f := range cpu.FeatureFlags {
			m[f.Name] = true
		}
	}
	return m, nil
}

// DomainXML returns the domain description BootKernel would boot for spec
// (defaults applied, VirtType already decided).
func DomainXML(spec BootSpec) (string, error) {
	d, err := bootDomain(spec)
	if err != nil {
		return "", err
	}
	out, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("domain XML: %w", err)
	}
	return out + "\n", nil
}

// bootDomain is the domain DomainXML describes: direct kernel boot, no
// disk, no network, the first serial port logged to spec.ConsoleLog.
func bootDomain(spec BootSpec) (*libvirtxml.Domain, error) {
	if spec.Name == "" || spec.Kernel == "" || spec.ConsoleLog == "" {
		return nil, errors.New("domain XML: name, kernel and console log are required")
	}
	virt := spec.VirtType
	if virt == VirtAuto {
		virt = VirtTCG
	}
	if virt != VirtKVM && virt != VirtTCG {
		return nil, fmt.Errorf("domain XML: virtualization type %q (want %q or %q)", spec.VirtType, VirtKVM, VirtTCG)
	}
	if spec.MemoryMiB < 0 || spec.CPUs < 0 {
		return nil, fmt.Errorf("domain XML: bad size: %d MiB, %d CPUs", spec.MemoryMiB, spec.CPUs)
	}
	port := uint(0)
	return &libvirtxml.Domain{
		Type:        virt,
		Name:        spec.Name,
		Description: "booted by microvm libvirt boot",
		Memory:      &libvirtxml.DomainMemory{Value: uint(spec.MemoryMiB), Unit: "MiB"},
		VCPU:        &libvirtxml.DomainVCPU{Value: uint(spec.CPUs)},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Arch: "x86_64", Machine: spec.Machine, Type: "hvm"},
			Kernel:  spec.Kernel,
			Initrd:  spec.Initrd,
			Cmdline: strings.Join(append(strings.Fields(BaseCmdline), strings.Fields(spec.Cmdline)...), " "),
		},
		Features:   &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}},
		OnPoweroff: "destroy",
		OnReboot:   "destroy",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
			// A pty console (so that virDomainOpenConsole works, also
			// remotely) whose output QEMU also writes to the log file.
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Log:    &libvirtxml.DomainChardevLog{File: spec.ConsoleLog, Append: "off"},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: &port},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}, nil
}

// withDefaults fills the zero fields of spec for connection c.
func (c *Conn) withDefaults(spec BootSpec) (BootSpec, error) {
	if spec.Kernel == "" {
		return spec, errors.New("no kernel given")
	}
	if spec.Name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		spec.Name = "microvm-" + hex.EncodeToString(b[:])
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = 256
	}
	if spec.CPUs == 0 {
		spec.CPUs = 1
	}
	if spec.MemoryMiB < 16 || spec.CPUs < 1 || spec.CPUs > 255 {
		return spec, fmt.Errorf("bad size: %d MiB, %d CPUs (want ≥16 MiB, 1..255 CPUs)", spec.MemoryMiB, spec.CPUs)
	}
	if spec.ReadyMarker == "" {
		spec.ReadyMarker = DefaultReadyMarker
	}
	if spec.Timeout <= 0 {
		spec.Timeout = 2 * time.Minute
	}
	abs := func(p string) (string, error) {
		if p == "" || filepath.IsAbs(p) {
			return p, nil
		}
		if !c.uri.Local() {
			return "", fmt.Errorf("path %q must be absolute: it names a file on %s", p, c.uri.Host)
		}
		return filepath.Abs(p)
	}
	var err error
	if spec.Kernel, err = abs(spec.Kernel); err != nil {
		return spec, err
	}
	if spec.Initrd, err = abs(spec.Initrd); err != nil {
		return spec, err
	}
	if spec.ConsoleLog == "" {
		if c.uri.Local() {
			spec.ConsoleLog = filepath.Join(os.TempDir(), spec.Name+".console.log")
		} else {
			spec.ConsoleLog = "/var/log/libvirt/qemu/" + spec.Name + ".console.log"
		}
	}
	if spec.ConsoleLog, err = abs(spec.ConsoleLog); err != nil {
		return spec, err
	}
	return spec, nil
}

// BootKernel boots spec.Kernel as a domain and measures it: from the launch
// (the create call) until the console shows spec.ReadyMarker (ReadyAfter)
// and, with spec.WaitExit, until the domain stops (ExitAfter). For a local
// connection the console log file is read as QEMU writes it; for a remote
// one the console is streamed over the connection. The domain's "stopped"
// lifecycle event ends the wait early (ErrNotReady). When the wait runs out
// of time or ctx ends, the domain is destroyed. The returned result is
// non-nil once the domain exists, even with an error; call its Cleanup to
// remove the domain.
func (c *Conn) BootKernel(ctx context.Context, spec BootSpec) (*BootResult, error) {
	fail := func(err error) error { return c.wrap("boot kernel", spec.Name, err) }
	ownLog := spec.ConsoleLog == ""
	spec, err := c.withDefaults(spec)
	if err != nil {
		return nil, fail(err)
	}
	res := &BootResult{Name: spec.Name, Transient: spec.Transient, ConsoleLog: spec.ConsoleLog, conn: c,
		ownLog: ownLog && c.uri.Local()}
	switch spec.VirtType {
	case VirtAuto:
		if spec.VirtType, res.VirtReason, err = c.ChooseVirtType(ctx); err != nil {
			return nil, err
		}
	case VirtKVM, VirtTCG:
		res.VirtReason = "requested"
	default:
		return nil, fail(fmt.Errorf("virtualization type %q (want %q or %q)", spec.VirtType, VirtKVM, VirtTCG))
	}
	res.VirtType = spec.VirtType
	if res.XML, err = DomainXML(spec); err != nil {
		return nil, fail(err)
	}

	w, err := c.watchLifecycle(ctx)
	if err != nil {
		return nil, err
	}
	defer w.Close()

	var dom golibvirt.Domain
	if !spec.Transient {
		t0 := time.Now()
		d, err := c.Define(ctx, res.XML, DefineOptions{})
		if err != nil {
			return nil, err
		}
		res.DefineTook = time.Since(t0)
		res.UUID = d.UUID
		u, _ := parseUUID(d.UUID)
		dom = golibvirt.Domain{Name: d.Name, UUID: u, ID: -1}
	}

	// Watch the console: the local file, or a stream for a remote daemon.
	ready := make(chan time.Time, 1)
	scan := newMarkerScanner(spec.ReadyMarker, ready)
	bctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	var tailWG sync.WaitGroup
	defer tailWG.Wait()
	tailCtx, stopTail := context.WithCancel(context.Background())
	defer stopTail()
	if c.uri.Local() {
		res.ConsoleVia = "file"
		if err := os.Remove(spec.ConsoleLog); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fail(fmt.Errorf("remove old console log: %w", err))
		}
	} else {
		res.ConsoleVia = "stream"
	}

	res.LaunchedAt = time.Now()
	if spec.Transient {
		err = c.call(ctx, "boot kernel", spec.Name, func() (err error) {
			dom, err = c.lv.DomainCreateXML(res.XML, golibvirt.DomainNone)
			return err
		})
	} else {
		err = c.call(ctx, "boot kernel", spec.Name, func() error { return c.lv.DomainCreate(dom) })
	}
	res.StartTook = time.Since(res.LaunchedAt)
	if err != nil {
		if res.ownLog {
			// The domain never ran; QEMU may have created the log.
			os.Remove(spec.ConsoleLog)
		}
		return res, explainBootFailure(c, spec, err)
	}
	res.UUID = formatUUID(dom.UUID)

	tailWG.Add(1)
	if res.ConsoleVia == "file" {
		go func() { defer tailWG.Done(); tailFile(tailCtx, spec.ConsoleLog, scan) }()
	} else {
		go func() { defer tailWG.Done(); _ = c.Console(tailCtx, dom.Name, scan) }()
	}

	finish := func(err error) (*BootResult, error) {
		stopTail()
		tailWG.Wait()
		res.LastLine = scan.lastLine()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w after %s (ready=%v); destroyed the domain; last console line: %q",
					ErrTimeout, spec.Timeout, res.Ready, res.LastLine)
			}
			if !res.Exited {
				dctx, dcancel := context.WithTimeout(context.Background(), c.opts.callTimeout())
				_ = c.call(dctx, "destroy domain", res.Name, func() error { return c.lv.DomainDestroy(dom) })
				dcancel()
			}
			return res, fail(err)
		}
		return res, nil
	}

	stopped := make(chan LifecycleEvent, 1)
	waitErr := make(chan error, 1)
	go func() {
		ev, err := w.waitFor(bctx, dom.UUID, spec.Timeout+time.Second, eventStopped, eventCrashed)
		if err != nil {
			waitErr <- err
			return
		}
		stopped <- ev
	}()
	onStop := func(ev LifecycleEvent) {
		res.Exited = true
		res.ExitAfter = ev.At.Sub(res.LaunchedAt)
		res.ExitReason = strings.TrimSuffix(strings.TrimPrefix(EventName(ev.Event, ev.Detail), "stopped ("), ")")
	}

	select {
	case t := <-ready:
		res.Ready, res.ReadyAfter = true, t.Sub(res.LaunchedAt)
	case ev := <-stopped:
		onStop(ev)
		// The last output may still be on its way to the file or stream.
		select {
		case t := <-ready:
			// The marker was printed before the domain stopped; it was
			// only read later (a busy host). The stop bounds it.
			res.Ready, res.ReadyAfter = true, min(t.Sub(res.LaunchedAt), res.ExitAfter)
			if !spec.WaitExit {
				return finish(nil)
			}
		case <-time.After(500 * time.Millisecond):
			return finish(fmt.Errorf("%w (%s after %s); last console line: %q",
				ErrNotReady, res.ExitReason, res.ExitAfter.Round(time.Millisecond), scan.lastLine()))
		}
	case err := <-waitErr:
		return finish(err)
	case <-bctx.Done():
		return finish(bctx.Err())
	}
	if !spec.WaitExit || res.Exited {
		return finish(nil)
	}
	select {
	case ev := <-stopped:
		onStop(ev)
		return finish(nil)
	case err := <-waitErr:
		return finish(err)
	case <-bctx.Done():
		return finish(bctx.Err())
	}
}

// explainBootFailure adds what is wrong with the kernel or initrd path to
// libvirt's error when the daemon is local and the file cannot be read:
// QEMU's own "could not open kernel file" can be lost in a race inside
// libvirt, which then only says that the monitor connection was refused.
func explainBootFailure(c *Conn, spec BootSpec, err error) error {
	if !c.uri.Local() {
		return err
	}
	var hints []string
	for _, p := range []struct{ what, path string }{{"kernel", spec.Kernel}, {"initrd", spec.Initrd}} {
		if p.path == "" {
			continue
		}
		f, ferr := os.Open(p.path)
		if ferr != nil {
			hints = append(hints, fmt.Sprintf("%s: %v", p.what, ferr))
			continue
		}
		f.Close()
	}
	var e *Error
	if len(hints) == 0 || !errors.As(err, &e) {
		return err
	}
	e.Err = fmt.Errorf("%w (%s)", e.Err, strings.Join(hints, "; "))
	return err
}

// markerScanner is an io.Writer that watches console output for a marker
// (also across writes) and remembers the last line.
type markerScanner struct {
	marker []byte
	ready  chan<- time.Time

	mu    sync.Mutex
	tail  []byte // last len(marker)-1 bytes, to match across writes
	line  []byte // current partial line
	last  string // last complete non-empty line
	found bool
}

func newMarkerScanner(marker string, ready chan<- time.Time) *markerScanner {
	return &markerScanner{marker: []byte(marker), ready: ready}
}

func (m *markerScanner) Write(p []byte) (int, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.found {
		buf := append(m.tail, p...)
		if bytes.Contains(buf, m.marker) {
			m.found = true
			select {
			case m.ready <- now:
			default:
			}
		}
		keep := len(m.marker) - 1
		if len(buf) < keep {
			keep = len(buf)
		}
		m.tail = append(m.tail[:0:0], buf[len(buf)-keep:]...)
	}
	for _, b := range p {
		switch b {
		case '\n':
			if s := strings.TrimSpace(string(m.line)); s != "" {
				m.last = s
			}
			m.line = m.line[:0]
		case '\r':
		default:
			if len(m.line) < 4096 {
				m.line = append(m.line, b)
			}
		}
	}
	return len(p), nil
}

func (m *markerScanner) lastLine() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := strings.TrimSpace(string(m.line)); s != "" {
		return s
	}
	return m.last
}

// tailFile feeds what is appended to path into w until ctx ends, polling
// every 2 ms (the file may not exist yet when this starts).
func tailFile(ctx context.Context, path string, w io.Writer) {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		if f == nil {
			if g, err := os.Open(path); err == nil {
				f = g
			}
		}
		if f != nil {
			for {
				n, err := f.Read(buf)
				if n > 0 {
					_, _ = w.Write(buf[:n])
				}
				if err != nil || n == 0 {
					break
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
