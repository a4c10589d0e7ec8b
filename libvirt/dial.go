package libvirt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// Default ports of libvirtd's network listeners.
const (
	defaultTCPPort = "16509"
	defaultTLSPort = "16514"
	defaultSSHPort = "22"
)

// noDeadline clears a deadline.
var noDeadline time.Time

// describeEndpoint names where a URI leads, for messages.
func describeEndpoint(u *URI) string {
	switch u.Transport {
	case "unix":
		return "unix socket " + u.SocketPath()
	case "tcp":
		return "tcp " + net.JoinHostPort(u.Host, portOr(u.Port, defaultTCPPort))
	case "tls":
		return "tls " + net.JoinHostPort(u.Host, portOr(u.Port, defaultTLSPort))
	default:
		return u.Transport + " " + net.JoinHostPort(u.Host, portOr(u.Port, defaultSSHPort))
	}
}

func portOr(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// dialTransport opens the byte stream to the daemon. Every path honours ctx.
func dialTransport(ctx context.Context, u *URI) (net.Conn, error) {
	var d net.Dialer
	switch u.Transport {
	case "unix":
		path := u.SocketPath()
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, explainDial(u, err)
		}
		return c, nil
	case "tcp":
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Host, portOr(u.Port, defaultTCPPort)))
		if err != nil {
			return nil, explainDial(u, err)
		}
		return c, nil
	case "tls":
		return dialTLS(ctx, u)
	case "ssh", "libssh", "libssh2":
		return dialSSH(ctx, u)
	}
	return nil, fmt.Errorf("%w: transport %q", ErrBadURI, u.Transport)
}

func explainDial(u *URI, err error) error {
	hint := ""
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		hint = " (is libvirtd running and listening there?)"
	case errors.Is(err, fs.ErrPermission):
		hint = " (permission denied: run as root or join the libvirt group)"
	}
	return fmt.Errorf("cannot reach libvirtd at %s: %w%s", describeEndpoint(u), err, hint)
}

// dialTLS connects with TLS the way libvirt's client does: CA and client
// certificate from pkipath=, ~/.pki/libvirt (non-root) or /etc/pki, and the
// one-byte answer after the handshake telling whether the server accepted
// our certificate.
func dialTLS(ctx context.Context, u *URI) (net.Conn, error) {
	conf, err := tlsConfig(u)
	if err != nil {
		return nil, err
	}
	td := tls.Dialer{Config: conf}
	c, err := td.DialContext(ctx, "tcp", net.JoinHostPort(u.Host, portOr(u.Port, defaultTLSPort)))
	if err != nil {
		return nil, explainDial(u, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls %s: reading the server's verdict on our certificate: %w", u.Host, err)
	}
	if buf[0] != 1 {
		c.Close()
		return nil, fmt.Errorf("tls %s: the server rejected our client certificate or address", u.Host)
	}
	_ = c.SetReadDeadline(noDeadline)
	return c, nil
}

func tlsConfig(u *URI) (*tls.Config, error) {
	type dirs struct{ ca, cert, key string }
	var search []dirs
	if p := u.Query.Get("pkipath"); p != "" {
		search = []dirs{{p, p, p}}
	} else {
		if cu, err := user.Current(); err == nil && cu.Uid != "0" && cu.HomeDir != "" {
			d := filepath.Join(cu.HomeDir, ".pki", "libvirt")
			search = append(search, dirs{d, d, d})
		}
		search = append(search, dirs{"/etc/pki/CA", "/etc/pki/libvirt", "/etc/pki/libvirt/private"})
	}
	noVerify := false
	if nv := u.Query.Get("no_verify"); nv != "" {
		n, err := strconv.Atoi(nv)
		if err != nil {
			return nil, fmt.Errorf("%w: no_verify=%s is not a number", ErrBadURI, nv)
		}
		noVerify = n != 0
	}
	conf := &tls.Config{ServerName: u.Host, InsecureSkipVerify: noVerify, MinVersion: tls.VersionTLS12}
	var tried []string
	for _, d := range search {
		if conf.RootCAs == nil {
			if pem, err := os.ReadFile(filepath.Join(d.ca, "cacert.pem")); err == nil {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("tls: no certificate in %s", filepath.Join(d.ca, "cacert.pem"))
				}
				conf.RootCAs = pool
			} else {
				tried = append(tried, filepath.Join(d.ca, "cacert.pem"))
			}
		}
		if len(conf.Certificates) == 0 {
			cert, key := filepath.Join(d.cert, "clientcert.pem"), filepath.Join(d.key, "clientkey.pem")
			if _, err := os.Stat(cert); err == nil {
				pair, err := tls.LoadX509KeyPair(cert, key)
				if err != nil {
					return nil, fmt.Errorf("tls client certificate %s: %w", cert, err)
				}
				conf.Certificates = []tls.Certificate{pair}
			}
		}
	}
	if conf.RootCAs == nil && !noVerify {
		return nil, fmt.Errorf("tls: no CA certificate found (looked for %s); give pkipath= or no_verify=1",
			strings.Join(tried, ", "))
	}
	return conf, nil
}

// dialSSH uses go-libvirt's ssh dialer (golang.org/x/crypto/ssh, not the
// ssh binary). That dialer takes no context, so it runs aside and is
// abandoned, its connection closed when it arrives, if ctx ends first.
func dialSSH(ctx context.Context, u *URI) (net.Conn, error) {
	opts := []dialers.SSHOption{dialers.UseSSHPort(portOr(u.Port, defaultSSHPort))}
	if u.Transport == "ssh" {
		cu, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("ssh: current user: %w", err)
		}
		opts = append([]dialers.SSHOption{dialers.WithSystemSSHDefaults(cu)}, opts...)
	}
	if u.User != "" {
		opts = append(opts, dialers.UseSSHUsername(u.User))
	}
	if pw, ok := u.u.User.Password(); ok {
		opts = append(opts, dialers.UseSSHPassword(pw))
	}
	q := u.Query
	if s := q.Get("socket"); s != "" {
		opts = append(opts, dialers.WithRemoteSocket(s))
	}
	if k := q.Get("keyfile"); k != "" {
		opts = append(opts, dialers.UseKeyFile(k))
	}
	if k := q.Get("known_hosts"); k != "" {
		opts = append(opts, dialers.UseKnownHostsFile(k))
	}
	switch q.Get("known_hosts_verify") {
	case "", "normal":
	case "auto":
		opts = append(opts, dialers.WithAcceptUnknownHostKey())
	case "ignore":
		opts = append(opts, dialers.WithInsecureIgnoreHostKey())
	default:
		return nil, fmt.Errorf("%w: known_hosts_verify=%s (want normal, auto or ignore)", ErrBadURI, q.Get("known_hosts_verify"))
	}
	if nv := q.Get("no_verify"); nv != "" && nv != "0" {
		opts = append(opts, dialers.WithInsecureIgnoreHostKey())
	}
	if auth := q.Get("sshauth"); auth != "" {
		m := &dialers.SSHAuthMethods{}
		for _, a := range strings.Split(auth, ",") {
			switch strings.ToLower(a) {
			case "agent":
				m.Agent()
			case "privkey":
				m.PrivKey()
			case "password":
				m.Password()
			case "keyboard-interactive":
				m.KeyboardInteractive()
			default:
				return nil, fmt.Errorf("%w: sshauth method %q", ErrBadURI, a)
			}
		}
		opts = append(opts, dialers.WithSSHAuthMethods(m))
	}
	d := dialers.NewSSH(u.Host, opts...)
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := d.Dial()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("ssh %s: %w", u.Host, r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("ssh %s: %w", u.Host, ctx.Err())
	}
}
