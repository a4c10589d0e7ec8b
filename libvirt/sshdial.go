package libvirt

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshDefaultSocket is libvirtd's socket on the far side when the URI names
// none with socket=.
const sshDefaultSocket = "/var/run/libvirt/libvirt-sock"

// dialSSH logs in with golang.org/x/crypto/ssh (not the ssh binary, and
// not ~/.ssh/config) and opens libvirtd's unix socket on the far side as a
// direct-streamlocal channel (the server must allow stream-local
// forwarding, OpenSSH's default).
//
// go-libvirt has an SSH dialer too, but it takes no context, never closes
// its SSH client (each connection left an SSH session open on the server
// after Close, and so did a dial whose channel was refused), and lets Go
// pick the host key algorithm regardless of known_hosts (Go prefers ECDSA,
// so a host whose known_hosts line is its Ed25519 key, as OpenSSH records
// it, failed as "key mismatch").
//
// ctx bounds everything: the TCP connection is closed under the handshake,
// authentication or channel opening when it ends.
func dialSSH(ctx context.Context, u *URI) (net.Conn, error) {
	s, err := newSSHSetup(u)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(u.Host, portOr(u.Port, defaultSSHPort))
	// Credentials and known_hosts first: a bad keyfile= is the caller's
	// error whether or not the host answers.
	conf, done, err := s.clientConfig(ctx, addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	tc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		done()
		return nil, explainDial(u, err)
	}
	stop := context.AfterFunc(ctx, func() { tc.Close() })
	fail := func(err error) (net.Conn, error) {
		stop()
		tc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: %w", addr, ctx.Err())
		}
		return nil, err
	}
	sc, chans, reqs, err := ssh.NewClientConn(tc, addr, conf)
	done()
	if err != nil {
		return fail(s.explain(addr, err))
	}
	client := ssh.NewClient(sc, chans, reqs)
	ch, err := client.Dial("unix", s.socket)
	if err != nil {
		client.Close()
		return fail(fmt.Errorf("ssh %s: open libvirtd's socket %s on the far side: %w (is libvirtd running there? socket= names another socket)",
			addr, s.socket, err))
	}
	if !stop() { // ctx ended meanwhile and closed the connection
		ch.Close()
		client.Close()
		return nil, fmt.Errorf("ssh %s: %w", addr, ctx.Err())
	}
	return &sshConn{Conn: ch, client: client}, nil
}

// sshConn is the channel to libvirtd's socket; closing it also ends the
// SSH connection it runs in.
type sshConn struct {
	net.Conn
	client *ssh.Client
	once   sync.Once
}

func (c *sshConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.Conn.Close()
		if cerr := c.client.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	})
	return err
}

// sshSetup is what a qemu+ssh URI asks for.
type sshSetup struct {
	user, password string
	socket         string
	keyFile        string // keyfile=, else empty: the default identities
	knownHosts     string
	verify         string // "normal", "auto" or "ignore"
	methods        []string
	defaultKeys    []string // the default identities loaded, for messages
}

func newSSHSetup(u *URI) (*sshSetup, error) {
	q := u.Query
	s := &sshSetup{user: u.User, socket: q.Get("socket"), keyFile: q.Get("keyfile"), knownHosts: q.Get("known_hosts"), verify: "normal"}
	if s.socket == "" {
		s.socket = sshDefaultSocket
	}
	if pw, ok := u.u.User.Password(); ok {
		s.password = pw
	}
	if s.user == "" {
		cu, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("ssh: no user in the URI and the current user is unknown: %w", err)
		}
		s.user = cu.Username
	}
	if s.knownHosts == "" {
		// The ssh binary's file for ssh, libvirt's own for libssh(2).
		if u.Transport == "ssh" {
			if home, err := os.UserHomeDir(); err == nil {
				s.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
			}
		} else if dir, err := os.UserConfigDir(); err == nil {
			s.knownHosts = filepath.Join(dir, "libvirt", "known_hosts")
		}
	}
	switch v := q.Get("known_hosts_verify"); v {
	case "", "normal":
	case "auto", "ignore":
		s.verify = v
	default:
		return nil, fmt.Errorf("%w: known_hosts_verify=%s (want normal, auto or ignore)", ErrBadURI, v)
	}
	if nv := q.Get("no_verify"); nv != "" {
		n, err := strconv.Atoi(nv)
		if err != nil {
			return nil, fmt.Errorf("%w: no_verify=%s is not a number", ErrBadURI, nv)
		}
		if n != 0 {
			s.verify = "ignore"
		}
	}
	if s.verify != "ignore" && s.knownHosts == "" {
		return nil, fmt.Errorf("ssh: no known_hosts file (no home directory); give known_hosts= or no_verify=1")
	}
	s.methods = []string{"agent", "privkey", "password"}
	if auth := q.Get("sshauth"); auth != "" {
		s.methods = nil
		for _, a := range strings.Split(auth, ",") {
			switch a = strings.ToLower(a); a {
			case "agent", "privkey", "password":
				s.methods = append(s.methods, a)
			case "keyboard-interactive":
				// Accepted as libvirt does, but there is no one to answer.
			default:
				return nil, fmt.Errorf("%w: sshauth method %q (want agent, privkey, password, keyboard-interactive)", ErrBadURI, a)
			}
		}
	}
	return s, nil
}

// clientConfig gathers the credentials and the host key check. done
// releases what authentication needed (the agent's socket).
func (s *sshSetup) clientConfig(ctx context.Context, addr string) (conf *ssh.ClientConfig, done func(), err error) {
	done = func() {}
	conf = &ssh.ClientConfig{User: s.user}
	conf.HostKeyCallback, conf.HostKeyAlgorithms, err = s.hostKeyCheck(addr)
	if err != nil {
		return nil, done, err
	}
	var signers []ssh.Signer
	pubkeys := false
	for _, m := range s.methods {
		switch m {
		case "agent":
			sock := os.Getenv("SSH_AUTH_SOCK")
			if sock == "" {
				continue
			}
			var d net.Dialer
			ac, err := d.DialContext(ctx, "unix", sock)
			if err != nil {
				continue // as ssh does: no agent, other methods
			}
			done = func() { ac.Close() }
			if as, err := agent.NewClient(ac).Signers(); err == nil {
				signers = append(signers, as...)
			}
			pubkeys = true
		case "privkey":
			keys, err := s.loadKeys()
			if err != nil {
				done()
				return nil, func() {}, err
			}
			signers = append(signers, keys...)
			pubkeys = true
		case "password":
			if s.password != "" {
				conf.Auth = append(conf.Auth, ssh.Password(s.password))
			}
		}
	}
	if pubkeys {
		// One publickey method for agent and key files alike: x/crypto/ssh
		// tries each method name once.
		conf.Auth = append([]ssh.AuthMethod{ssh.PublicKeys(signers...)}, conf.Auth...)
	}
	return conf, done, nil
}

// loadKeys reads keyfile=, which must work, or the default identities of
// the ssh client that exist and need no passphrase.
func (s *sshSetup) loadKeys() ([]ssh.Signer, error) {
	if s.keyFile != "" {
		b, err := os.ReadFile(s.keyFile)
		if err != nil {
			return nil, fmt.Errorf("ssh key (keyfile=): %w", err)
		}
		k, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pe *ssh.PassphraseMissingError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("ssh key %s is protected by a passphrase, which microvm cannot ask for: load it into ssh-agent (ssh-add) instead", s.keyFile)
			}
			return nil, fmt.Errorf("ssh key %s: %w", s.keyFile, err)
		}
		return []ssh.Signer{k}, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return nil, nil
	}
	var keys []ssh.Signer
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa", "identity", "id_dsa"} {
		b, err := os.ReadFile(filepath.Join(home, ".ssh", name))
		if err != nil {
			continue
		}
		if k, err := ssh.ParsePrivateKey(b); err == nil {
			keys = append(keys, k)
			s.defaultKeys = append(s.defaultKeys, filepath.Join(home, ".ssh", name))
		}
	}
	return keys, nil
}

// hostKeyCheck returns the host key callback for the URI's verification
// mode and the host key algorithms to ask for: those of the keys that
// known_hosts holds for the host, as OpenSSH does, so that a host is not
// taken for an impostor because it offered another of its keys first.
func (s *sshSetup) hostKeyCheck(addr string) (ssh.HostKeyCallback, []string, error) {
	if s.verify == "ignore" {
		return ssh.InsecureIgnoreHostKey(), nil, nil //nolint:gosec // asked for with no_verify=1 or known_hosts_verify=ignore
	}
	db, err := knownhosts.New(s.knownHosts)
	if errors.Is(err, fs.ErrNotExist) && s.verify == "auto" {
		db = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
	} else if err != nil {
		return nil, nil, fmt.Errorf("ssh: host keys: %w (known_hosts_verify=auto adds the host's key, no_verify=1 skips the check)", err)
	}
	var algos []string
	var ke *knownhosts.KeyError
	// knownhosts looks the host up by addr; the remote address only has to
	// parse.
	if err := db(addr, &net.TCPAddr{}, sshProbeKey()); errors.As(err, &ke) && len(ke.Want) > 0 {
		for _, k := range ke.Want {
			algos = appendNew(algos, hostKeyAlgorithms(k.Key.Type())...)
		}
		// Then the others, for a host that no longer has those keys.
		algos = appendNew(algos, ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
			ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
	}
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := db(host, remote, key)
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &re):
			return fmt.Errorf("the host key of %s (%s %s) is revoked in %s", host, key.Type(), ssh.FingerprintSHA256(key), re.Revoked.Filename)
		case errors.As(err, &ke) && len(ke.Want) == 0:
			if s.verify == "auto" {
				return appendKnownHost(s.knownHosts, host, key)
			}
			return fmt.Errorf("the host key of %s (%s %s) is unknown: it is not in %s (ssh-keyscan can add it; known_hosts_verify=auto adds it, no_verify=1 skips the check)",
				host, key.Type(), ssh.FingerprintSHA256(key), s.knownHosts)
		case errors.As(err, &ke):
			w, sameType := ke.Want[0], false
			for _, k := range ke.Want {
				if k.Key.Type() == key.Type() {
					w, sameType = k, true
				}
			}
			if !sameType {
				return fmt.Errorf("the host key of %s is not the one known: it offered %s %s, but %s:%d holds a %s key for it and the host no longer offers that type (if the host was reinstalled, remove that line)",
					host, key.Type(), ssh.FingerprintSHA256(key), w.Filename, w.Line, w.Key.Type())
			}
			return fmt.Errorf("the host key of %s has changed: it offered %s %s, but %s:%d holds another key for it; someone may be intercepting the connection (if the host was reinstalled, remove that line)",
				host, key.Type(), ssh.FingerprintSHA256(key), w.Filename, w.Line)
		}
		return err
	}
	return check, algos, nil
}

// sshProbeKey is a key no host has: checking it against known_hosts lists
// the keys known for a host. Made on first use, not at every start of the
// program.
var sshProbeKey = sync.OnceValue(func() ssh.PublicKey {
	k, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		panic(err)
	}
	return k
})

// hostKeyAlgorithms are the signature algorithms a host key of type typ
// can sign with.
func hostKeyAlgorithms(typ string) []string {
	if typ == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{typ}
}

func appendNew(list []string, items ...string) []string {
	for _, it := range items {
		found := false
		for _, l := range list {
			found = found || l == it
		}
		if !found {
			list = append(list, it)
		}
	}
	return list
}

// appendKnownHost records a host's key (known_hosts_verify=auto).
func appendKnownHost(file, host string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	if _, err := fmt.Fprintln(f, knownhosts.Line([]string{host}, key)); err != nil {
		f.Close()
		return fmt.Errorf("known_hosts %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("known_hosts %s: %w", file, err)
	}
	return nil
}

// explain adds what was tried to an authentication failure.
func (s *sshSetup) explain(addr string, err error) error {
	if !strings.Contains(err.Error(), "unable to authenticate") {
		return fmt.Errorf("ssh %s: %w", addr, err)
	}
	var tried []string
	for _, m := range s.methods {
		switch m {
		case "agent":
			if os.Getenv("SSH_AUTH_SOCK") != "" {
				tried = append(tried, "the keys of ssh-agent")
			}
		case "privkey":
			switch {
			case s.keyFile != "":
				tried = append(tried, "key "+s.keyFile)
			case len(s.defaultKeys) > 0:
				tried = append(tried, "key "+strings.Join(s.defaultKeys, ", "))
			default:
				tried = append(tried, "no key (no ~/.ssh/id_ed25519, id_ecdsa, id_rsa, … without a passphrase; keyfile= names one)")
			}
		case "password":
			if s.password != "" {
				tried = append(tried, "the URI's password")
			}
		}
	}
	what := strings.Join(tried, ", ")
	if what == "" {
		what = "no credentials (no agent, key or password to offer)"
	}
	return fmt.Errorf("ssh %s: the server did not let %s in with %s: %w", addr, s.user, what, err)
}
