package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// ErrExists is wrapped when defining a domain whose name is already taken.
var ErrExists = errors.New("domain already exists")

// Domain is one row of a domain listing.
type Domain struct {
	// Host is the URI of the daemon the domain lives on (set by ListHosts;
	// empty from Conn.List).
	Host string `json:"host,omitempty"`
	// ID is the hypervisor's id of a running domain, -1 for an inactive one
	// (virsh prints "-").
	ID   int    `json:"id"`
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// State is printed as virsh's word ("running", "shut off", ...).
	State State `json:"state"`
	// VCPUs, memory and CPU time as virDomainGetInfo reports them.
	VCPUs        int           `json:"vcpus"`
	MemoryKiB    uint64        `json:"memory_kib"`
	MaxMemoryKiB uint64        `json:"max_memory_kib"`
	CPUTime      time.Duration `json:"cpu_time_ns"`
}

// IDString is the Id column of virsh list: the number, or "-" when inactive.
func (d Domain) IDString() string {
	if d.ID < 0 {
		return "-"
	}
	return strconv.Itoa(d.ID)
}

// ListOptions select the domains to list.
type ListOptions struct {
	// All lists inactive (defined but not running) domains too, like
	// virsh list --all. Without it only active domains are listed.
	All bool
	// InactiveOnly lists only inactive domains (virsh list --inactive).
	InactiveOnly bool
	// Concurrency bounds the per-domain calls in flight (8 when zero).
	Concurrency int
}

// List returns the domains of the connection in virsh's order: active ones
// by Id, then inactive ones by name (case-insensitively). It costs one call
// for the list and one per domain; a domain that disappears in between is
// left out, as virsh does.
func (c *Conn) List(ctx context.Context, opts ListOptions) ([]Domain, error) {
	flags := golibvirt.ConnectListDomainsActive
	switch {
	case opts.InactiveOnly:
		flags = golibvirt.ConnectListDomainsInactive
	case opts.All:
		flags |= golibvirt.ConnectListDomainsInactive
	}
	var raw []golibvirt.Domain
	err := c.call(ctx, "list domains", "", func() (err error) {
		raw, _, err = c.lv.ConnectListAllDomains(1, flags)
		return err
	})
	if err != nil {
		return nil, err
	}
	n := opts.Concurrency
	if n <= 0 {
		n = 8
	}
	out := make([]Domain, len(raw))
	keep := make([]bool, len(raw))
	errs := make([]error, len(raw))
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, rd := range raw {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := c.describe(ctx, rd)
			switch {
			case err == nil:
				out[i], keep[i] = d, true
			case IsNotFound(err):
			default:
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res := make([]Domain, 0, len(raw))
	for i := range out {
		if keep[i] {
			res = append(res, out[i])
		}
	}
	SortDomains(res)
	return res, nil
}

// describe fills a Domain from one virDomainGetInfo call.
func (c *Conn) describe(ctx context.Context, rd golibvirt.Domain) (Domain, error) {
	var (
		state             uint8
		maxMem, mem, cpuT uint64
		vcpus             uint16
	)
	err := c.call(ctx, "get info of domain", rd.Name, func() (err error) {
		state, maxMem, mem, vcpus, cpuT, err = c.lv.DomainGetInfo(rd)
		return err
	})
	if err != nil {
		return Domain{}, err
	}
	id := int(rd.ID)
	if id < 0 {
		id = -1
	}
	return Domain{
		ID:           id,
		Name:         rd.Name,
		UUID:         formatUUID(rd.UUID),
		State:        State(state),
		VCPUs:        int(vcpus),
		MemoryKiB:    mem,
		MaxMemoryKiB: maxMem,
		CPUTime:      time.Duration(cpuT),
	}, nil
}

// SortDomains orders domains as virsh list does: active domains by Id first,
// then inactive ones by name, case-insensitively. Domains of different hosts
// keep the order of their hosts.
func SortDomains(ds []Domain) {
	sort.SliceStable(ds, func(i, j int) bool { return domainLess(ds[i], ds[j]) })
}

func domainLess(a, b Domain) bool {
	if a.Host != b.Host {
		return false // stable sort keeps the hosts' order
	}
	aa, ba := a.ID >= 0, b.ID >= 0
	switch {
	case aa && ba:
		return a.ID < b.ID
	case aa != ba:
		return aa
	}
	la, lb := strings.ToLower(a.Name), strings.ToLower(b.Name)
	if la != lb {
		return la < lb
	}
	return a.Name < b.Name
}

// lookup finds a domain the way virsh does: by Id when ref is a number,
// then by UUID, then by name.
func (c *Conn) lookup(ctx context.Context, op, ref string) (golibvirt.Domain, error) {
	if ref == "" {
		return golibvirt.Domain{}, &Error{Op: op, URI: c.uri.String(), Err: errors.New("no domain name given")}
	}
	var d golibvirt.Domain
	if id, err := strconv.ParseInt(ref, 10, 32); err == nil && id >= 0 {
		err := c.call(ctx, op, ref, func() (err error) { d, err = c.lv.DomainLookupByID(int32(id)); return })
		if err == nil || !IsNotFound(err) {
			return d, err
		}
	}
	if u, ok := parseUUID(ref); ok {
		err := c.call(ctx, op, ref, func() (err error) { d, err = c.lv.DomainLookupByUUID(u); return })
		if err == nil || !IsNotFound(err) {
			return d, err
		}
	}
	err := c.call(ctx, op, ref, func() (err error) { d, err = c.lv.DomainLookupByName(ref); return })
	return d, err
}

// Lookup returns the listing row of one domain, found by name, UUID or Id.
func (c *Conn) Lookup(ctx context.Context, ref string) (Domain, error) {
	d, err := c.lookup(ctx, "look up domain", ref)
	if err != nil {
		return Domain{}, err
	}
	return c.describe(ctx, d)
}

// DomainInfo is what Info reports, like virsh dominfo.
type DomainInfo struct {
	Domain
	OSType     string `json:"os_type"`
	Persistent bool   `json:"persistent"`
	Autostart  bool   `json:"autostart"`
}

// Info returns details of one domain (name, UUID or Id).
func (c *Conn) Info(ctx context.Context, ref string) (DomainInfo, error) {
	d, err := c.lookup(ctx, "get info of domain", ref)
	if err != nil {
		return DomainInfo{}, err
	}
	row, err := c.describe(ctx, d)
	if err != nil {
		return DomainInfo{}, err
	}
	info := DomainInfo{Domain: row}
	err = c.call(ctx, "get info of domain", d.Name, func() error {
		os, err := c.lv.DomainGetOsType(d)
		if err != nil {
			return err
		}
		p, err := c.lv.DomainIsPersistent(d)
		if err != nil {
			return err
		}
		a, err := c.lv.DomainGetAutostart(d)
		if err != nil {
			return err
		}
		info.OSType, info.Persistent, info.Autostart = os, p == 1, a == 1
		return nil
	})
	return info, err
}

// XML returns a domain's XML description (virsh dumpxml).
func (c *Conn) XML(ctx context.Context, ref string) (string, error) {
	d, err := c.lookup(ctx, "get XML of domain", ref)
	if err != nil {
		return "", err
	}
	var s string
	err = c.call(ctx, "get XML of domain", d.Name, func() (err error) { s, err = c.lv.DomainGetXMLDesc(d, 0); return })
	return s, err
}

// DefineOptions tune Define.
type DefineOptions struct {
	// Update allows replacing the definition of an existing domain of the
	// same name and UUID (libvirt's own define semantics). Without it,
	// defining a name that exists fails with ErrExists.
	Update bool
}

// Define makes a persistent domain from its XML description. It does not
// start it.
func (c *Conn) Define(ctx context.Context, domainXML string, opts DefineOptions) (Domain, error) {
	var head libvirtxml.Domain
	if err := head.Unmarshal(domainXML); err != nil {
		return Domain{}, &Error{Op: "define domain", URI: c.uri.String(), Err: fmt.Errorf("domain XML: %w", err)}
	}
	if !opts.Update && head.Name != "" {
		var old golibvirt.Domain
		err := c.call(ctx, "define domain", head.Name, func() (err error) { old, err = c.lv.DomainLookupByName(head.Name); return })
		switch {
		case err == nil:
			return Domain{}, &Error{Op: "define domain", URI: c.uri.String(), Domain: head.Name,
				Err: fmt.Errorf("%w (uuid %s); undefine it first, or update it on purpose", ErrExists, formatUUID(old.UUID))}
		case !IsNotFound(err):
			return Domain{}, err
		}
	}
	var d golibvirt.Domain
	err := c.call(ctx, "define domain", head.Name, func() (err error) {
		d, err = c.lv.DomainDefineXMLFlags(domainXML, golibvirt.DomainDefineValidate)
		if errors.Is(err, golibvirt.ErrUnsupported) {
			d, err = c.lv.DomainDefineXMLFlags(domainXML, 0)
		}
		return err
	})
	if err != nil {
		return Domain{}, err
	}
	return c.describe(ctx, d)
}

// WaitOptions make a lifecycle operation wait for its lifecycle event.
type WaitOptions struct {
	// Wait waits for the event (started for Start, stopped for Shutdown).
	Wait bool
	// Timeout bounds the wait (1 minute when zero).
	Timeout time.Duration
}

func (w WaitOptions) timeout() time.Duration {
	if w.Timeout > 0 {
		return w.Timeout
	}
	return time.Minute
}

// Start boots a defined, inactive domain. With opts.Wait it returns once
// libvirt has sent the domain's "started" lifecycle event.
func (c *Conn) Start(ctx context.Context, ref string, opts WaitOptions) (Domain, error) {
	d, err := c.lookup(ctx, "start domain", ref)
	if err != nil {
		return Domain{}, err
	}
	var w *watcher
	if opts.Wait {
		if w, err = c.watchLifecycle(ctx); err != nil {
			return Domain{}, err
		}
		defer w.Close()
	}
	err = c.call(ctx, "start domain", d.Name, func() error { return c.lv.DomainCreate(d) })
	if err != nil {
		return Domain{}, err
	}
	if w != nil {
		if _, err := w.waitFor(ctx, d.UUID, opts.timeout(), eventStarted); err != nil {
			return Domain{}, c.wrap("start domain", d.Name, err)
		}
	}
	var nd golibvirt.Domain
	err = c.call(ctx, "start domain", d.Name, func() (err error) { nd, err = c.lv.DomainLookupByUUID(d.UUID); return })
	if err != nil {
		return Domain{}, err
	}
	return c.describe(ctx, nd)
}

// Shutdown asks the guest to shut down (ACPI power button or agent, as the
// hypervisor chooses); the guest may ignore it. With opts.Wait it returns
// once the domain has stopped, and how long that took.
func (c *Conn) Shutdown(ctx context.Context, ref string, opts WaitOptions) (time.Duration, error) {
	d, err := c.lookup(ctx, "shut down domain", ref)
	if err != nil {
		return 0, err
	}
	var w *watcher
	if opts.Wait {
		if w, err = c.watchLifecycle(ctx); err != nil {
			return 0, err
		}
		defer w.Close()
	}
	t0 := time.Now()
	err = c.call(ctx, "shut down domain", d.Name, func() error { return c.lv.DomainShutdownFlags(d, golibvirt.DomainShutdownDefault) })
	if err != nil {
		return 0, err
	}
	if w == nil {
		return 0, nil
	}
	// The domain may have stopped before the subscription saw it.
	if st, err := c.state(ctx, d); err == nil && !st.Active() {
		return time.Since(t0), nil
	}
	if _, err := w.waitFor(ctx, d.UUID, opts.timeout(), eventStopped); err != nil {
		return 0, c.wrap("shut down domain", d.Name, err)
	}
	return time.Since(t0), nil
}

// Destroy stops a running domain at once (virsh destroy). A shut off domain
// is an error from libvirtd ("domain is not running").
func (c *Conn) Destroy(ctx context.Context, ref string) error {
	d, err := c.lookup(ctx, "destroy domain", ref)
	if err != nil {
		return err
	}
	return c.call(ctx, "destroy domain", d.Name, func() error { return c.lv.DomainDestroyFlags(d, golibvirt.DomainDestroyDefault) })
}

// Undefine removes a domain's persistent definition. A running domain keeps
// running as a transient one, as with virsh undefine.
func (c *Conn) Undefine(ctx context.Context, ref string) error {
	d, err := c.lookup(ctx, "undefine domain", ref)
	if err != nil {
		return err
	}
	return c.call(ctx, "undefine domain", d.Name, func() error { return c.lv.DomainUndefineFlags(d, 0) })
}

func (c *Conn) state(ctx context.Context, d golibvirt.Domain) (State, error) {
	var st int32
	err := c.call(ctx, "get state of domain", d.Name, func() (err error) { st, _, err = c.lv.DomainGetState(d, 0); return })
	return State(st), err
}

func formatUUID(u golibvirt.UUID) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 36)
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[x>>4], hex[x&0xf])
	}
	return string(b)
}

// parseUUID reads a UUID in libvirt's forms: 32 hex digits, optionally
// with dashes between any pairs.
func parseUUID(s string) (golibvirt.UUID, bool) {
	var u golibvirt.UUID
	s = strings.TrimSpace(s)
	n := 0
	for i := 0; i < len(s); {
		if s[i] == '-' {
			i++
			continue
		}
		if n == len(u) || i+1 >= len(s) {
			return u, false
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[n] = hi<<4 | lo
		n++
		i += 2
	}
	return u, n == len(u)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
