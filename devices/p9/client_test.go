package p9

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// testClient encodes T-messages, hands them to a Server and decodes the
// answers, checking that every answer is well formed.
type testClient struct {
	t     testing.TB
	s     *Server
	tag   uint16
	rsize int // the response buffer handed to Handle
}

func newTestClient(t testing.TB, s *Server) *testClient {
	return &testClient{t: t, s: s, tag: 1, rsize: MaxMsize}
}

// rpc sends a message of type typ built by build; it returns the answer's
// type and a decoder over its body.
func (c *testClient) rpc(typ uint8, build func(e *Encoder)) (uint8, *Decoder) {
	c.t.Helper()
	req := make([]byte, MaxMsize+64)
	e := NewEncoder(req)
	c.tag++
	tag := c.tag
	if typ == Tversion {
		tag = NoTag
	}
	e.Header(typ, tag)
	if build != nil {
		build(e)
	}
	n, ok := e.Finish()
	if !ok {
		c.t.Fatalf("request type %d does not fit", typ)
	}
	resp := make([]byte, c.rsize)
	m := c.s.Handle(req[:n], resp)
	rtyp, body := checkAnswer(c.t, req[:n], resp, m)
	if rtyp != Rlerror && rtyp != typ+1 {
		c.t.Fatalf("answer to type %d has type %d", typ, rtyp)
	}
	return rtyp, NewDecoder(body)
}

// checkAnswer verifies that resp[:n] is a well-formed R-message
// answering req and returns its type and body.
func checkAnswer(t testing.TB, req, resp []byte, n int) (uint8, []byte) {
	t.Helper()
	if n < HeaderSize || n > len(resp) {
		t.Fatalf("answer of %d bytes into a %d-byte buffer", n, len(resp))
	}
	size, typ, tag, err := ParseHeader(resp[:n])
	if err != nil {
		t.Fatalf("answer header: %v", err)
	}
	if int(size) != n {
		t.Fatalf("answer size field %d, Handle returned %d", size, n)
	}
	if want := binary.LittleEndian.Uint16(req[5:]); tag != want {
		t.Fatalf("answer tag %d, want %d", tag, want)
	}
	if typ == Rlerror && n != HeaderSize+4 {
		t.Fatalf("Rlerror of %d bytes", n)
	}
	return typ, resp[HeaderSize:n]
}

// ok sends a message that must succeed and returns the answer's body.
func (c *testClient) ok(typ uint8, build func(e *Encoder)) *Decoder {
	c.t.Helper()
	rtyp, d := c.rpc(typ, build)
	if rtyp == Rlerror {
		c.t.Fatalf("type %d: Rlerror %v", typ, unix.Errno(d.U32()))
	}
	return d
}

// fail sends a message that must fail and returns its errno.
func (c *testClient) fail(typ uint8, build func(e *Encoder)) unix.Errno {
	c.t.Helper()
	rtyp, d := c.rpc(typ, build)
	if rtyp != Rlerror {
		c.t.Fatalf("type %d succeeded, want an error", typ)
	}
	return unix.Errno(d.U32())
}

// errno sends a message and returns 0 or its errno.
func (c *testClient) errno(typ uint8, build func(e *Encoder)) unix.Errno {
	c.t.Helper()
	rtyp, d := c.rpc(typ, build)
	if rtyp != Rlerror {
		return 0
	}
	return unix.Errno(d.U32())
}

func (c *testClient) version(msize uint32, v string) (uint32, string) {
	c.t.Helper()
	d := c.ok(Tversion, func(e *Encoder) { e.U32(msize); e.String(v) })
	m, s := d.U32(), d.String()
	if d.Err() != nil {
		c.t.Fatal(d.Err())
	}
	return m, s
}

// attach negotiates (if not yet) and attaches fid to the root.
func (c *testClient) attach(fid uint32) Qid {
	c.t.Helper()
	d := c.ok(Tattach, attachMsg(fid, NoFid, "", 0))
	return d.Qid()
}

func attachMsg(fid, afid uint32, aname string, uid uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U32(afid); e.String("root"); e.String(aname); e.U32(uid) }
}

func walkMsg(fid, newfid uint32, names ...string) func(e *Encoder) {
	return func(e *Encoder) {
		e.U32(fid)
		e.U32(newfid)
		e.U16(uint16(len(names)))
		for _, n := range names {
			e.String(n)
		}
	}
}

// walk walks fid to newfid and returns the qids.
func (c *testClient) walk(fid, newfid uint32, names ...string) []Qid {
	c.t.Helper()
	d := c.ok(Twalk, walkMsg(fid, newfid, names...))
	n := d.U16()
	qids := make([]Qid, n)
	for i := range qids {
		qids[i] = d.Qid()
	}
	if d.Err() != nil {
		c.t.Fatal(d.Err())
	}
	return qids
}

func fidMsg(fid uint32) func(e *Encoder) { return func(e *Encoder) { e.U32(fid) } }

func lopenMsg(fid, flags uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U32(flags) }
}

func (c *testClient) lopen(fid, flags uint32) Qid {
	c.t.Helper()
	d := c.ok(Tlopen, lopenMsg(fid, flags))
	q := d.Qid()
	if iounit := d.U32(); iounit == 0 || d.Err() != nil {
		c.t.Fatalf("Rlopen iounit %d, %v", iounit, d.Err())
	}
	return q
}

func readMsg(fid uint32, off uint64, count uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U64(off); e.U32(count) }
}

func (c *testClient) read(fid uint32, off uint64, count uint32) []byte {
	c.t.Helper()
	d := c.ok(Tread, readMsg(fid, off, count))
	n := d.U32()
	data := d.Bytes(int(n))
	if d.Err() != nil || d.Remaining() != 0 {
		c.t.Fatalf("Rread: %v, %d bytes left", d.Err(), d.Remaining())
	}
	return data
}

func writeMsg(fid uint32, off uint64, data []byte) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U64(off); e.U32(uint32(len(data))); e.Bytes(data) }
}

func (c *testClient) write(fid uint32, off uint64, data []byte) uint32 {
	c.t.Helper()
	return c.ok(Twrite, writeMsg(fid, off, data)).U32()
}

func lcreateMsg(fid uint32, name string, flags, mode, gid uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.String(name); e.U32(flags); e.U32(mode); e.U32(gid) }
}

func mkdirMsg(fid uint32, name string, mode, gid uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.String(name); e.U32(mode); e.U32(gid) }
}

func symlinkMsg(fid uint32, name, target string, gid uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.String(name); e.String(target); e.U32(gid) }
}

func mknodMsg(fid uint32, name string, mode, major, minor, gid uint32) func(e *Encoder) {
	return func(e *Encoder) {
		e.U32(fid)
		e.String(name)
		e.U32(mode)
		e.U32(major)
		e.U32(minor)
		e.U32(gid)
	}
}

func renameatMsg(ofid uint32, oname string, nfid uint32, nname string) func(e *Encoder) {
	return func(e *Encoder) { e.U32(ofid); e.String(oname); e.U32(nfid); e.String(nname) }
}

func renameMsg(fid, dfid uint32, name string) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U32(dfid); e.String(name) }
}

func unlinkatMsg(fid uint32, name string, flags uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.String(name); e.U32(flags) }
}

func linkMsg(dfid, fid uint32, name string) func(e *Encoder) {
	return func(e *Encoder) { e.U32(dfid); e.U32(fid); e.String(name) }
}

type setattrArgs struct {
	valid, mode, uid, gid uint32
	size                  uint64
	aSec, aNsec           uint64
	mSec, mNsec           uint64
}

func setattrMsg(fid uint32, a setattrArgs) func(e *Encoder) {
	return func(e *Encoder) {
		e.U32(fid)
		e.U32(a.valid)
		e.U32(a.mode)
		e.U32(a.uid)
		e.U32(a.gid)
		e.U64(a.size)
		e.U64(a.aSec)
		e.U64(a.aNsec)
		e.U64(a.mSec)
		e.U64(a.mNsec)
	}
}

func getattrMsg(fid uint32) func(e *Encoder) {
	return func(e *Encoder) { e.U32(fid); e.U64(GetattrAll) }
}

// attr is a decoded Rgetattr.
type attr struct {
	valid               uint64
	qid                 Qid
	mode, uid, gid      uint32
	nlink, rdev, size   uint64
	blksize, blocks     uint64
	atime, mtime, ctime [2]uint64
	btime               [2]uint64
	gen, dataVersion    uint64
}

func (c *testClient) getattr(fid uint32) attr {
	c.t.Helper()
	d := c.ok(Tgetattr, getattrMsg(fid))
	var a attr
	a.valid = d.U64()
	a.qid = d.Qid()
	a.mode, a.uid, a.gid = d.U32(), d.U32(), d.U32()
	a.nlink, a.rdev, a.size, a.blksize, a.blocks = d.U64(), d.U64(), d.U64(), d.U64(), d.U64()
	a.atime = [2]uint64{d.U64(), d.U64()}
	a.mtime = [2]uint64{d.U64(), d.U64()}
	a.ctime = [2]uint64{d.U64(), d.U64()}
	a.btime = [2]uint64{d.U64(), d.U64()}
	a.gen, a.dataVersion = d.U64(), d.U64()
	if d.Err() != nil || d.Remaining() != 0 {
		c.t.Fatalf("Rgetattr: %v, %d bytes left", d.Err(), d.Remaining())
	}
	return a
}

// dirent is a decoded Rreaddir entry.
type dirent struct {
	qid    Qid
	offset uint64
	typ    uint8
	name   string
}

func (c *testClient) readdir(fid uint32, off uint64, count uint32) []dirent {
	c.t.Helper()
	d := c.ok(Treaddir, readMsg(fid, off, count))
	n := d.U32()
	if int(n) != d.Remaining() {
		c.t.Fatalf("Rreaddir count %d, %d bytes follow", n, d.Remaining())
	}
	if n > count {
		c.t.Fatalf("Rreaddir of %d bytes, %d asked", n, count)
	}
	var out []dirent
	for d.Remaining() > 0 {
		de := dirent{qid: d.Qid(), offset: d.U64(), typ: d.U8(), name: d.String()}
		if d.Err() != nil {
			c.t.Fatal(d.Err())
		}
		out = append(out, de)
	}
	return out
}

// readdirAll lists fid through readdir calls of count bytes.
func (c *testClient) readdirAll(fid uint32, count uint32) []dirent {
	c.t.Helper()
	var all []dirent
	off := uint64(0)
	for i := 0; ; i++ {
		if i > 10000 {
			c.t.Fatal("readdir does not end")
		}
		ents := c.readdir(fid, off, count)
		if len(ents) == 0 {
			return all
		}
		all = append(all, ents...)
		off = ents[len(ents)-1].offset
	}
}
