package libvirt

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DefaultURI is the connection URI used when none is given and
// LIBVIRT_DEFAULT_URI is unset, as with virsh.
const DefaultURI = "qemu:///system"

// EnvDefaultURI names the environment variable that overrides DefaultURI.
const EnvDefaultURI = "LIBVIRT_DEFAULT_URI"

// ErrBadURI is wrapped by every error about a URI that cannot be used: a
// malformed one, an unknown driver or an unsupported transport. Such an error
// is the caller's input, not something libvirtd said.
var ErrBadURI = errors.New("bad libvirt URI")

// drivers are the hypervisor and state drivers a libvirtd can serve (the
// scheme part before '+').
var drivers = map[string]bool{
	"qemu": true, "test": true, "lxc": true, "xen": true, "libxl": true,
	"vbox": true, "bhyve": true, "ch": true, "openvz": true, "vz": true,
	"network": true, "storage": true, "nodedev": true, "secret": true,
	"nwfilter": true, "interface": true,
}

// transports are the ways go-libvirt can reach a daemon.
var transports = map[string]bool{
	"unix": true, "tcp": true, "tls": true, "ssh": true, "libssh": true, "libssh2": true,
}

// URI is a parsed libvirt connection URI,
// driver[+transport]://[user@][host][:port]/path[?query].
type URI struct {
	// Raw is the URI as given.
	Raw string
	// Driver is the hypervisor driver: "qemu", "test", ...
	Driver string
	// Transport is how the daemon is reached: "unix" for a local socket,
	// "tcp", "tls", "ssh", "libssh" or "libssh2". A URI with a host and no
	// explicit transport uses "tls", as libvirt does.
	Transport string
	// User, Host and Port are the remote end (empty for a local socket).
	User, Host, Port string
	// Path names the driver instance: "/system", "/session", "/default".
	Path string
	// Query holds the extra parameters (socket=, pkipath=, no_verify=, ...).
	Query url.Values

	u *url.URL
}

// ResolveURI returns the URI to use for s: s itself when it is not empty,
// otherwise the value of LIBVIRT_DEFAULT_URI (looked up with getenv, which may
// be nil for os.Getenv), otherwise DefaultURI.
func ResolveURI(s string, getenv func(string) string) string {
	if s != "" {
		return s
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := strings.TrimSpace(getenv(EnvDefaultURI)); v != "" {
		return v
	}
	return DefaultURI
}

// ParseURI parses and checks a libvirt connection URI the way virsh's
// --connect takes it. Errors wrap ErrBadURI.
func ParseURI(s string) (*URI, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrBadURI, redact(s), fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(s) == "" {
		return nil, bad("empty URI")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return nil, bad("contains white space")
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, bad("%v", err)
	}
	if u.Scheme == "" {
		return nil, bad("no scheme; expected driver[+transport]://[host]/path, e.g. qemu:///system")
	}
	if u.Opaque != "" {
		return nil, bad("expected driver[+transport]://[host]/path, e.g. qemu:///system")
	}
	driver, transport, _ := strings.Cut(strings.ToLower(u.Scheme), "+")
	if !drivers[driver] {
		return nil, bad("unknown driver %q (known: %s)", driver, strings.Join(sortedKeys(drivers), ", "))
	}
	if transport == "" {
		transport = "unix"
		if u.Host != "" {
			transport = "tls"
		}
	} else if !transports[transport] {
		if transport == "ext" {
			return nil, bad("transport \"ext\" is not supported (go-libvirt speaks unix, tcp, tls, ssh, libssh, libssh2)")
		}
		return nil, bad("unknown transport %q (known: %s)", transport, strings.Join(sortedKeys(transports), ", "))
	}
	host := u.Hostname()
	port := u.Port()
	if transport == "unix" && host != "" {
		return nil, bad("transport unix is local and takes no host (got %q)", host)
	}
	if transport != "unix" && host == "" {
		return nil, bad("transport %s needs a host, e.g. %s+%s://host.example/system", transport, driver, transport)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, bad("port %q is not a number in 1..65535", port)
		}
	}
	if u.Fragment != "" {
		return nil, bad("fragments (#...) are not allowed")
	}
	if u.Path != "" && !strings.HasPrefix(u.Path, "/") {
		return nil, bad("path %q must start with /", u.Path)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, bad("query: %v", err)
	}
	if m := strings.ToLower(q.Get("mode")); m != "" && m != "auto" && m != "legacy" && m != "daemon" {
		return nil, bad("mode=%s is not supported (only auto, legacy, daemon)", m)
	}
	if sock := q.Get("socket"); sock != "" && !filepath.IsAbs(sock) {
		return nil, bad("socket=%s must be an absolute path", sock)
	}
	return &URI{
		Raw:       s,
		Driver:    driver,
		Transport: transport,
		User:      u.User.Username(),
		Host:      host,
		Port:      port,
		Path:      u.Path,
		Query:     q,
		u:         u,
	}, nil
}

// Local reports whether the daemon is reached through a local unix socket, so
// that paths in domain XML name files on this machine.
func (u *URI) Local() bool { return u.Transport == "unix" }

// RemoteName is the URI the daemon itself is asked to open once connected:
// the driver and path without transport, host or client-side parameters
// (or the name= parameter when given), e.g. "qemu:///system".
func (u *URI) RemoteName() string {
	if n := u.Query.Get("name"); n != "" {
		return n
	}
	return u.Driver + "://" + u.Path
}

// String returns the URI with any password removed.
func (u *URI) String() string { return redact(u.Raw) }

// SocketPath returns the unix socket to dial for a local URI: the socket=
// parameter, else the per-driver socket of modular daemons when present
// (virtqemud-sock, ...), else the libvirtd socket. System sockets live under
// /run/libvirt; session URIs use $XDG_RUNTIME_DIR/libvirt.
func (u *URI) SocketPath() string {
	if s := u.Query.Get("socket"); s != "" {
		return s
	}
	dir := "/run/libvirt"
	if u.Path == "/session" {
		rt := os.Getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			rt = filepath.Join(os.TempDir(), fmt.Sprintf("libvirt-%d", os.Getuid()))
		}
		dir = filepath.Join(rt, "libvirt")
	}
	if strings.ToLower(u.Query.Get("mode")) != "legacy" {
		modular := filepath.Join(dir, "virt"+u.Driver+"d-sock")
		if _, err := os.Stat(modular); err == nil {
			return modular
		}
	}
	return filepath.Join(dir, "libvirt-sock")
}

// redact removes a password from a URI string for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	return u.Redacted()
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
