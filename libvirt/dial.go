package libvirt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Default ports of libvirtd's network listeners.
const (
	defaultTCPPort = "16509"
	defaultTLSPort = "16514"
	defaultSSHPort = "22"
)

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
		if u.Transport != "unix" && u.Transport != "tcp" && u.Transport != "tls" {
			hint = " (is sshd running and listening there?)"
		}
	case errors.Is(err, fs.ErrPermission):
		hint = " (permission denied: run as root or join the libvirt group)"
	}
	return fmt.Errorf("cannot reach libvirtd at %s: %w%s", describeEndpoint(u), err, hint)
}

// dialTLS connects with TLS the way libvirt's client does: CA and client
// certificate from pkipath=, ~/.pki/libvirt (non-root) or /etc/pki, and the
// one-byte answer after the handshake telling whether the server accepted
// our certificate. ctx bounds the handshake and that answer.
func dialTLS(ctx context.Context, u *URI) (net.Conn, error) {
	conf, files, err := tlsConfig(u)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(u.Host, portOr(u.Port, defaultTLSPort))
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, explainDial(u, err)
	}
	c := tls.Client(raw, conf)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w%s", addr, err, files.hint(err))
	}
	// Unblock the read below when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetReadDeadline(time.Unix(1, 0)) })
	buf := make([]byte, 1)
	_, err = io.ReadFull(c, buf)
	if !stop() {
		c.Close()
		return nil, fmt.Errorf("tls %s: %w: no verdict on our client certificate", addr, ctx.Err())
	}
	if err != nil {
		c.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, fmt.Errorf("tls %s: the server closed the connection after the handshake: it rejected our client certificate or address (%s)", addr, files.client())
		}
		return nil, fmt.Errorf("tls %s: reading the server's verdict on our client certificate: %w", addr, err)
	}
	if buf[0] != 1 {
		c.Close()
		return nil, fmt.Errorf("tls %s: the server rejected our client certificate or address (%s)", addr, files.client())
	}
	return c, nil
}

// tlsFiles names the files a TLS connection uses, for messages.
type tlsFiles struct {
	ca, cert  string // empty when none was found
	certTried []string
	noVerify  bool
}

func (f tlsFiles) client() string {
	if f.cert == "" {
		return "we sent no client certificate: there is no " + strings.Join(f.certTried, " or ")
	}
	return "we sent " + f.cert
}

// hint explains a handshake failure in terms of the files used.
func (f tlsFiles) hint(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf(" (the server's certificate is not signed by the CA in %s; pkipath= names the directory of the right cacert.pem, no_verify=1 skips the check)", f.ca)
	case errors.As(err, &he):
		return " (the server's certificate is not for the host named in the URI; no_verify=1 skips the check)"
	case errors.As(err, &ce):
		return " (no_verify=1 skips the check)"
	}
	return ""
}

func tlsConfig(u *URI) (*tls.Config, tlsFiles, error) {
	var files tlsFiles
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
	if nv := u.Query.Get("no_verify"); nv != "" {
		n, err := strconv.Atoi(nv)
		if err != nil {
			return nil, files, fmt.Errorf("%w: no_verify=%s is not a number", ErrBadURI, nv)
		}
		files.noVerify = n != 0
	}
	conf := &tls.Config{ServerName: u.Host, InsecureSkipVerify: files.noVerify, MinVersion: tls.VersionTLS12}
	var tried []string
	for _, d := range search {
		if conf.RootCAs == nil {
			ca := filepath.Join(d.ca, "cacert.pem")
			if pem, err := os.ReadFile(ca); err == nil {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, files, fmt.Errorf("tls: no certificate in %s", ca)
				}
				conf.RootCAs = pool
				files.ca = ca
			} else {
				tried = append(tried, ca)
			}
		}
		if len(conf.Certificates) == 0 {
			cert, key := filepath.Join(d.cert, "clientcert.pem"), filepath.Join(d.key, "clientkey.pem")
			if _, err := os.Stat(cert); err == nil {
				pair, err := tls.LoadX509KeyPair(cert, key)
				if err != nil {
					return nil, files, fmt.Errorf("tls client certificate %s: %w", cert, err)
				}
				conf.Certificates = []tls.Certificate{pair}
				files.cert = cert
			} else {
				files.certTried = append(files.certTried, cert)
			}
		}
	}
	if conf.RootCAs == nil && !files.noVerify {
		return nil, files, fmt.Errorf("tls: no CA certificate found (looked for %s); give pkipath= or no_verify=1",
			strings.Join(tried, ", "))
	}
	return conf, files, nil
}
