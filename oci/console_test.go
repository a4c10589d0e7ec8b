package oci

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// receiveFD is the console socket's other end (conmon's part): it accepts
// one connection and returns the file descriptor sent over it.
func receiveFD(t *testing.T, l *net.UnixListener) <-chan *os.File {
	t.Helper()
	ch := make(chan *os.File, 1)
	go func() {
		defer close(ch)
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return
		}
		unix.SetNonblock(fds[0], true) // pollable: reads take deadlines
		ch <- os.NewFile(uintptr(fds[0]), "master")
	}()
	return ch
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestOpenConsole: the master reaches the socket's listener and the
// slave, in raw mode, carries bytes both ways unchanged (no \r added, no
// echo), as the guest's own tty does the line discipline.
func TestOpenConsole(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("SKIP: no /dev/ptmx: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := receiveFD(t, l)
	slave, err := OpenConsole(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	var master *os.File
	select {
	case master = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no fd reached the console socket")
	}
	if master == nil {
		t.Fatal("the console socket got no fd")
	}
	defer master.Close()
	if _, err := slave.WriteString("out\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := master.Read(buf)
	if err != nil || string(buf[:n]) != "out\n" {
		t.Errorf("master read %q, %v; want \"out\\n\" (raw: no \\r)", buf[:n], err)
	}
	if _, err := master.WriteString("in\r"); err != nil {
		t.Fatal(err)
	}
	n, err = slave.Read(buf)
	if err != nil || string(buf[:n]) != "in\r" {
		t.Errorf("slave read %q, %v; want \"in\\r\" (raw: no ICRNL)", buf[:n], err)
	}
	master.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := master.Read(buf); n > 0 {
		t.Errorf("the slave echoed %q", buf[:n])
	}
}

// TestOpenConsoleBadSocket: no listener is an error naming the socket,
// and neither end of the pty is left open.
func TestOpenConsoleBadSocket(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("SKIP: no /dev/ptmx: %v", err)
	}
	before := openFDs(t)
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	if f, err := OpenConsole(sock); err == nil || !strings.Contains(err.Error(), sock) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("OpenConsole(%s) = %v, want an error naming it", sock, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}
