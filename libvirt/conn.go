package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
)

// Default timeouts used where Options leaves them zero.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultCallTimeout    = 30 * time.Second
)

// ErrNoAnswer is wrapped when libvirtd did not answer a call (or the
// connection set-up) in time. The connection is closed when that happens,
// so that nothing waits on it forever.
var ErrNoAnswer = errors.New("no answer from libvirtd")

// ErrConnectionLost is wrapped when the daemon went away: it closed the
// connection during a call, or the connection was already gone.
var ErrConnectionLost = errors.New("connection to libvirtd lost")

// ErrTimeout is wrapped when a wait for a domain (for an event, for the ready
// marker, for it to stop) ran out of time. The calls themselves were answered.
var ErrTimeout = errors.New("timed out")

// Options tune a connection. The zero value is usable.
type Options struct {
	// ConnectTimeout bounds dialing and the protocol handshake
	// (DefaultConnectTimeout when zero).
	ConnectTimeout time.Duration
	// CallTimeout bounds every single call to the daemon
	// (DefaultCallTimeout when zero). A call that runs out of time closes
	// the connection.
	CallTimeout time.Duration
}

func (o Options) connectTimeout() time.Duration {
	if o.ConnectTimeout > 0 {
		return o.ConnectTimeout
	}
	return DefaultConnectTimeout
}

func (o Options) callTimeout() time.Duration {
	if o.CallTimeout > 0 {
		return o.CallTimeout
	}
	return DefaultCallTimeout
}

// Error is the error every operation of this package returns. It names the
// operation, the connection (password removed) and the domain when there is
// one; Err holds the cause. When libvirtd reported the failure, Code is its
// virErrorNumber and the message is libvirt's own text.
type Error struct {
	Op     string // "connect", "list", "define", "start", ...
	URI    string
	Domain string
	Code   int // libvirt's error number, 0 when the error did not come from libvirtd
	Err    error
}

func (e *Error) Error() string {
	if e.URI != "" {
		return e.URI + ": " + e.Local()
	}
	return e.Local()
}

// Local is the message without the URI, for places that show the host
// already (a row of a multi-host listing).
func (e *Error) Local() string {
	s := e.Op
	if e.Domain != "" {
		s += " " + fmt.Sprintf("%q", e.Domain)
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// FromDaemon reports whether libvirtd itself reported this error (as
// opposed to a failure to reach it, a timeout or bad input).
func (e *Error) FromDaemon() bool { return e.Code != 0 }

// ErrorCode returns libvirt's error number when err carries one reported by
// libvirtd.
func ErrorCode(err error) (int, bool) {
	var le golibvirt.Error
	if errors.As(err, &le) {
		return int(le.Code), true
	}
	var e *Error
	if errors.As(err, &e) && e.Code != 0 {
		return e.Code, true
	}
	return 0, false
}

// IsNotFound reports whether err says that the domain does not exist.
func IsNotFound(err error) bool {
	code, ok := ErrorCode(err)
	return ok && code == int(golibvirt.ErrNoDomain)
}

// Conn is a connection to one libvirt daemon. It is safe for concurrent use.
// Every call has a deadline (Options.CallTimeout, or the context's if
// earlier); a call that misses it closes the connection.
type Conn struct {
	uri  *URI
	opts Options
	lv   *golibvirt.Libvirt
	nc   *guardedConn

	events    eventHub
	closeOnce sync.Once
}

// Dial connects to the daemon named by uri (see ParseURI; an empty uri means
// LIBVIRT_DEFAULT_URI or qemu:///system) and opens the driver it names.
// Dialing and the handshake are bounded by opts.ConnectTimeout and ctx.
func Dial(ctx context.Context, uri string, opts Options) (*Conn, error) {
	u, err := ParseURI(ResolveURI(uri, nil))
	if err != nil {
		return nil, &Error{Op: "connect", URI: redact(uri), Err: err}
	}
	return DialURI(ctx, u, opts)
}

// DialURI is Dial for an already parsed URI.
func DialURI(ctx context.Context, u *URI, opts Options) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.connectTimeout())
	defer cancel()
	fail := func(err error) error { return &Error{Op: "connect", URI: u.String(), Err: err} }

	nc, err := dialTransport(ctx, u)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fail(fmt.Errorf("%w within %s: %v", ErrNoAnswer, opts.connectTimeout(), err))
		}
		return nil, fail(err)
	}
	g := &guardedConn{Conn: nc}
	lv := golibvirt.NewWithDialer(dialerFunc(func() (net.Conn, error) { return g, nil }))
	done := make(chan error, 1)
	go func() { done <- lv.ConnectToURI(golibvirt.ConnectURI(u.RemoteName())) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		g.Close()
		<-done
		return nil, fail(fmt.Errorf("%w: the handshake with %s did not finish within %s (is it a libvirtd?)",
			ErrNoAnswer, describeEndpoint(u), opts.connectTimeout()))
	}
	if err != nil {
		g.Close()
		return nil, fail(daemonError(err))
	}
	return &Conn{uri: u, opts: opts, lv: lv, nc: g}, nil
}

// URI returns the connection's URI.
func (c *Conn) URI() *URI { return c.uri }

// Options returns the options the connection was made with.
func (c *Conn) Options() Options { return c.opts }

// Close ends the connection. It does not wait on an unresponsive daemon for
// longer than a short grace period.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			// Politely tell the daemon, then drop the socket regardless.
			_ = c.lv.Disconnect()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		c.nc.Close()
		// Only now, with no more events able to arrive, end the event
		// subscription (see eventHub).
		c.events.stop()
	})
	return nil
}

// Disconnected is closed when the connection to the daemon is gone.
func (c *Conn) Disconnected() <-chan struct{} { return c.lv.Disconnected() }

// call runs one RPC (or a short sequence) under the call deadline. When the
// deadline passes, or ctx ends, the connection is closed so that fn returns
// and nothing is left waiting.
func (c *Conn) call(ctx context.Context, op, domain string, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.callTimeout())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		c.nc.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		cause := ctx.Err()
		if errors.Is(cause, context.DeadlineExceeded) {
			err = fmt.Errorf("%w within %s; connection closed", ErrNoAnswer, c.opts.callTimeout())
		} else {
			err = fmt.Errorf("%w; connection closed", cause)
		}
	}
	if err == nil {
		return nil
	}
	return c.wrap(op, domain, err)
}

func (c *Conn) wrap(op, domain string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	err = daemonError(err)
	code, _ := ErrorCode(err)
	return &Error{Op: op, URI: c.uri.String(), Domain: domain, Code: code, Err: err}
}

// daemonError turns go-libvirt's transport errors into clear ones.
func daemonError(err error) error {
	switch {
	case errors.Is(err, golibvirt.ErrInterrupted):
		return fmt.Errorf("%w: libvirtd closed the connection during the call (daemon stopped or crashed?)", ErrConnectionLost)
	case errors.Is(err, syscall.EINVAL), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %v", ErrConnectionLost, err)
	}
	return err
}

// dialerFunc adapts a function to go-libvirt's socket.Dialer.
type dialerFunc func() (net.Conn, error)

func (f dialerFunc) Dial() (net.Conn, error) { return f() }

// guardedConn is the network connection under go-libvirt, kept so that this
// package can close it itself (go-libvirt's Disconnect first waits on a
// reply, which a hung daemon never sends).
type guardedConn struct {
	net.Conn
	once sync.Once
}

func (g *guardedConn) Close() error {
	var err error
	g.once.Do(func() { err = g.Conn.Close() })
	return err
}
