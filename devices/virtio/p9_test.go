package virtio

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/microvm/microvm/devices/p9"
)

// p9Msg encodes a T-message.
func p9Msg(typ uint8, tag uint16, build func(e *p9.Encoder)) []byte {
	buf := make([]byte, 4096)
	e := p9.NewEncoder(buf)
	e.Header(typ, tag)
	build(e)
	n, ok := e.Finish()
	if !ok {
		panic("message too long")
	}
	return buf[:n]
}

// p9Layout places a request at dataBase and the response buffer at
// dataBase+0x1000, each split in two descriptors when split.
const (
	p9ReqAt  = dataBase
	p9RespAt = dataBase + 0x1000
)

// p9Request offers msg on r with respLen writable bytes and returns the
// answer the device wrote (used length bytes).
func p9Request(t *testing.T, dr *driver, msg []byte, respLen uint32, split bool) []byte {
	t.Helper()
	r := dr.rings[0]
	copy(dr.m.at(p9ReqAt), msg)
	clear(dr.m.at(p9RespAt)[:respLen])
	reqLen := uint32(len(msg))
	if split && reqLen > 1 && respLen > 1 {
		r.setDesc(0, p9ReqAt, reqLen/2, descFNext, 1)
		r.setDesc(1, p9ReqAt+uint64(reqLen/2), reqLen-reqLen/2, descFNext, 2)
		r.setDesc(2, p9RespAt, respLen/3, descFWrite|descFNext, 3)
		r.setDesc(3, p9RespAt+uint64(respLen/3), respLen-respLen/3, descFWrite, 0)
	} else {
		r.setDesc(0, p9ReqAt, reqLen, descFNext, 1)
		r.setDesc(1, p9RespAt, respLen, descFWrite, 0)
	}
	before := r.usedIdx()
	r.offer(0)
	dr.w(RegQueueNotify, 0)
	if dr.needsReset() {
		t.Fatalf("device needs reset: status %#x", dr.r(RegStatus))
	}
	if r.usedIdx() != before+1 {
		t.Fatalf("used index %d, want %d", r.usedIdx(), before+1)
	}
	_, n := r.usedElem(before)
	if n > respLen {
		t.Fatalf("used length %d exceeds the %d-byte buffer", n, respLen)
	}
	out := append([]byte(nil), dr.m.at(p9RespAt)[:n]...)
	if n > 0 && binary.LittleEndian.Uint32(out) != n {
		t.Fatalf("answer size field %d, used length %d", binary.LittleEndian.Uint32(out), n)
	}
	return out
}

// p9Answer checks the answer's type and tag and returns a decoder over
// its body.
func p9Answer(t *testing.T, resp []byte, typ uint8, tag uint16) *p9.Decoder {
	t.Helper()
	_, rtyp, rtag, err := p9.ParseHeader(resp)
	if err != nil {
		t.Fatal(err)
	}
	if rtag != tag {
		t.Fatalf("answer tag %d, want %d", rtag, tag)
	}
	if rtyp == p9.Rlerror {
		t.Fatalf("Rlerror %v, want type %d", unix.Errno(binary.LittleEndian.Uint32(resp[7:])), typ)
	}
	if rtyp != typ {
		t.Fatalf("answer type %d, want %d", rtyp, typ)
	}
	return p9.NewDecoder(resp[p9.HeaderSize:])
}

func newP9Device(t *testing.T) (*P9, *driver, string) {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hi from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := NewP9("hostshare", root, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dr := newDriver(t, p, nil)
	dr.start(P9FMountTag, 8)
	return p, dr, root
}

func TestP9Config(t *testing.T) {
	p, dr, _ := newP9Device(t)
	if p.DeviceID() != Device9P || Device9P.String() != "9p" || dr.r(RegDeviceID) != 9 {
		t.Fatalf("device id %d", dr.r(RegDeviceID))
	}
	dr.w(RegDeviceFeatSel, 0)
	if f := dr.r(RegDeviceFeatures); f&P9FMountTag == 0 {
		t.Errorf("features %#x lack MOUNT_TAG", f)
	}
	cfg := make([]byte, 2+len("hostshare"))
	for i := range cfg {
		var b [1]byte
		dr.d.Read(RegConfig+uint64(i), b[:])
		cfg[i] = b[0]
	}
	if binary.LittleEndian.Uint16(cfg) != 9 || string(cfg[2:]) != "hostshare" {
		t.Errorf("config %q", cfg)
	}
	if got := p.QueueSizes(); len(got) != 1 || got[0] != 128 {
		t.Errorf("queue sizes %v", got)
	}
}

func TestNewP9Errors(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ tag, root string }{
		{"", root},
		{strings.Repeat("t", P9MaxTagLen+1), root},
		{"a\x00b", root},
		{"ok", file},
		{"ok", filepath.Join(root, "missing")},
	} {
		if p, err := NewP9(tc.tag, tc.root, false); err == nil {
			p.Close()
			t.Errorf("NewP9(%q, %q) succeeded", tc.tag, tc.root)
		}
	}
	p, err := NewP9(strings.Repeat("t", P9MaxTagLen), root, true)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

func TestP9Session(t *testing.T) {
	for _, split := range []bool{false, true} {
		name := "one buffer each"
		if split {
			name = "split buffers"
		}
		t.Run(name, func(t *testing.T) {
			p, dr, root := newP9Device(t)
			resp := p9Request(t, dr, p9Msg(p9.Tversion, p9.NoTag, func(e *p9.Encoder) {
				e.U32(8192)
				e.String(p9.Version)
			}), 0x2000, split)
			d := p9Answer(t, resp, p9.Rversion, p9.NoTag)
			if msize, v := d.U32(), d.String(); msize != 8192 || v != p9.Version || d.Err() != nil {
				t.Fatalf("Rversion %d %q %v", msize, v, d.Err())
			}
			if p.Server().Msize() != 8192 {
				t.Fatalf("msize %d", p.Server().Msize())
			}

			resp = p9Request(t, dr, p9Msg(p9.Tattach, 1, func(e *p9.Encoder) {
				e.U32(0)
				e.U32(p9.NoFid)
				e.String("root")
				e.String("")
				e.U32(0)
			}), 0x2000, split)
			var st unix.Stat_t
			if err := unix.Stat(root, &st); err != nil {
				t.Fatal(err)
			}
			if q := p9Answer(t, resp, p9.Rattach, 1).Qid(); q.Type != p9.QtDir || q.Path != st.Ino {
				t.Fatalf("Rattach qid %+v, root inode %d", q, st.Ino)
			}

			resp = p9Request(t, dr, p9Msg(p9.Twalk, 2, func(e *p9.Encoder) {
				e.U32(0)
				e.U32(1)
				e.U16(1)
				e.String("hello")
			}), 0x2000, split)
			if n := p9Answer(t, resp, p9.Rwalk, 2).U16(); n != 1 {
				t.Fatalf("Rwalk of %d qids", n)
			}

			resp = p9Request(t, dr, p9Msg(p9.Tgetattr, 3, func(e *p9.Encoder) {
				e.U32(1)
				e.U64(p9.GetattrBasic)
			}), 0x2000, split)
			d = p9Answer(t, resp, p9.Rgetattr, 3)
			valid, q, mode := d.U64(), d.Qid(), d.U32()
			d.U32()
			d.U32()
			d.U64()
			d.U64()
			size := d.U64()
			if valid != p9.GetattrBasic || q.Type != p9.QtFile || mode != unix.S_IFREG|0o644 || size != 16 || d.Err() != nil {
				t.Fatalf("Rgetattr valid %#x qid %+v mode %o size %d (%v)", valid, q, mode, size, d.Err())
			}

			// An answer is never longer than the writable buffers.
			resp = p9Request(t, dr, p9Msg(p9.Tgetattr, 4, func(e *p9.Encoder) {
				e.U32(1)
				e.U64(p9.GetattrBasic)
			}), 40, split)
			if len(resp) != 11 || resp[4] != p9.Rlerror || unix.Errno(binary.LittleEndian.Uint32(resp[7:])) != unix.ERANGE {
				t.Fatalf("getattr into 40 bytes: %x", resp)
			}
			if s := p.Stats(); s.Requests != 5 || s.Dropped != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestP9BadChains(t *testing.T) {
	p, dr, _ := newP9Device(t)
	p9Request(t, dr, p9Msg(p9.Tversion, p9.NoTag, func(e *p9.Encoder) {
		e.U32(8192)
		e.String(p9.Version)
	}), 0x2000, false)
	// Shorter than a header: no answer, no reset.
	if resp := p9Request(t, dr, []byte{1, 2, 3}, 0x100, false); len(resp) != 0 {
		t.Errorf("answer %x to 3 bytes", resp)
	}
	// No room for an answer.
	clunk := p9Msg(p9.Tclunk, 5, func(e *p9.Encoder) { e.U32(0) })
	if resp := p9Request(t, dr, clunk, 8, false); len(resp) != 0 {
		t.Errorf("answer %x into 8 bytes", resp)
	}
	// A size field beyond the readable bytes.
	bad := append([]byte(nil), clunk...)
	binary.LittleEndian.PutUint32(bad, 1000)
	resp := p9Request(t, dr, bad, 0x100, false)
	if len(resp) != 11 || resp[4] != p9.Rlerror || unix.Errno(binary.LittleEndian.Uint32(resp[7:])) != unix.EPROTO {
		t.Errorf("answer to a bad size field: %x", resp)
	}
	// A message longer than msize is refused unread.
	long := make([]byte, 8200)
	copy(long, p9Msg(p9.Twrite, 6, func(e *p9.Encoder) { e.U32(0); e.U64(0); e.U32(8200 - 23) }))
	binary.LittleEndian.PutUint32(long, uint32(len(long)))
	resp = p9Request(t, dr, long, 0x100, false)
	if len(resp) != 11 || resp[4] != p9.Rlerror || binary.LittleEndian.Uint16(resp[5:]) != 6 ||
		unix.Errno(binary.LittleEndian.Uint32(resp[7:])) != unix.EMSGSIZE {
		t.Errorf("answer to an over-long message: %x", resp)
	}
	if s := p.Stats(); s.Dropped != 2 || s.TooLong != 1 {
		t.Errorf("stats %+v", s)
	}
	// A device reset ends the session.
	dr.start(P9FMountTag, 8)
	resp = p9Request(t, dr, p9Msg(p9.Tattach, 7, func(e *p9.Encoder) {
		e.U32(0)
		e.U32(p9.NoFid)
		e.String("")
		e.String("")
		e.U32(0)
	}), 0x100, false)
	if resp[4] != p9.Rlerror || unix.Errno(binary.LittleEndian.Uint32(resp[7:])) != unix.EPROTO {
		t.Errorf("attach after a reset without Tversion: %x", resp)
	}
}
