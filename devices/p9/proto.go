// Package p9 is a 9P2000.L file server over a host directory, as the Linux
// v9fs client speaks it (mount -t 9p -o version=9p2000.L). It knows nothing
// of its transport: Server.Handle takes one complete T-message and writes
// the R-message that answers it.
//
// Everything in a message is untrusted. Every field is bounds-checked when
// it is decoded, every answer is built in the caller's buffer and never
// past it, and every name the client sends is resolved beneath the
// exported directory (see Server for how).
package p9

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Message types (9P2000 and 9P2000.L numbering). An R-message's type is
// its T-message's plus one.
const (
	Rlerror      = 7
	Tstatfs      = 8
	Rstatfs      = 9
	Tlopen       = 12
	Rlopen       = 13
	Tlcreate     = 14
	Rlcreate     = 15
	Tsymlink     = 16
	Rsymlink     = 17
	Tmknod       = 18
	Rmknod       = 19
	Trename      = 20
	Rrename      = 21
	Treadlink    = 22
	Rreadlink    = 23
	Tgetattr     = 24
	Rgetattr     = 25
	Tsetattr     = 26
	Rsetattr     = 27
	Txattrwalk   = 30
	Rxattrwalk   = 31
	Txattrcreate = 32
	Rxattrcreate = 33
	Treaddir     = 40
	Rreaddir     = 41
	Tfsync       = 50
	Rfsync       = 51
	Tlock        = 52
	Rlock        = 53
	Tgetlock     = 54
	Rgetlock     = 55
	Tlink        = 70
	Rlink        = 71
	Tmkdir       = 72
	Rmkdir       = 73
	Trenameat    = 74
	Rrenameat    = 75
	Tunlinkat    = 76
	Runlinkat    = 77
	Tversion     = 100
	Rversion     = 101
	Tauth        = 102
	Rauth        = 103
	Tattach      = 104
	Rattach      = 105
	Tflush       = 108
	Rflush       = 109
	Twalk        = 110
	Rwalk        = 111
	Tread        = 116
	Rread        = 117
	Twrite       = 118
	Rwrite       = 119
	Tclunk       = 120
	Rclunk       = 121
	Tremove      = 122
	Rremove      = 123
)

// Protocol constants.
const (
	// Version is the only protocol version the server speaks.
	Version = "9P2000.L"
	// VersionUnknown is the answer to a version the server does not speak.
	VersionUnknown = "unknown"
	// NoTag is the tag of Tversion.
	NoTag = 0xffff
	// NoFid stands for "no fid" (the afid of an unauthenticated Tattach).
	NoFid = 0xffffffff
	// NoUID stands for "no numeric user" in Tattach's n_uname.
	NoUID = 0xffffffff
	// HeaderSize is size[4] type[1] tag[2].
	HeaderSize = 7
	// QidSize is the encoded size of a Qid.
	QidSize = 13
	// IOHeaderSize is the most a Tread/Twrite/Rread/Rwrite carries besides
	// its data (Twrite's 23 bytes, rounded up as Linux's P9_IOHDRSZ is):
	// the iounit is msize minus this.
	IOHeaderSize = 24
	// MaxWalkNames is the most names one Twalk may carry.
	MaxWalkNames = 16
)

// Qid types.
const (
	QtDir     = 0x80
	QtSymlink = 0x02
	QtFile    = 0x00
)

// Tgetattr request/valid mask bits.
const (
	GetattrMode        = 0x00000001
	GetattrNlink       = 0x00000002
	GetattrUID         = 0x00000004
	GetattrGID         = 0x00000008
	GetattrRdev        = 0x00000010
	GetattrAtime       = 0x00000020
	GetattrMtime       = 0x00000040
	GetattrCtime       = 0x00000080
	GetattrIno         = 0x00000100
	GetattrSize        = 0x00000200
	GetattrBlocks      = 0x00000400
	GetattrBasic       = 0x000007ff
	GetattrBtime       = 0x00000800
	GetattrGen         = 0x00001000
	GetattrDataVersion = 0x00002000
	GetattrAll         = 0x00003fff
)

// Tsetattr valid bits.
const (
	SetattrMode     = 0x00000001
	SetattrUID      = 0x00000002
	SetattrGID      = 0x00000004
	SetattrSize     = 0x00000008
	SetattrAtime    = 0x00000010
	SetattrMtime    = 0x00000020
	SetattrCtime    = 0x00000040
	SetattrAtimeSet = 0x00000080
	SetattrMtimeSet = 0x00000100
)

// Open flags as 9P2000.L carries them in Tlopen and Tlcreate (the x86-64
// Linux O_ values, whatever the host's are).
const (
	OReadOnly  = 0
	OWriteOnly = 1
	OReadWrite = 2
	ONoAccess  = 3
	OAccMode   = 3
	OCreate    = 0o100
	OExcl      = 0o200
	ONoCtty    = 0o400
	OTrunc     = 0o1000
	OAppend    = 0o2000
	ONonblock  = 0o4000
	ODsync     = 0o10000
	OFasync    = 0o20000
	ODirect    = 0o40000
	OLargefile = 0o100000
	ODirectory = 0o200000
	ONoFollow  = 0o400000
	ONoAtime   = 0o1000000
	OCloexec   = 0o2000000
	OSync      = 0o4000000
)

// AtRemoveDir is Tunlinkat's flag to remove a directory.
const AtRemoveDir = 0x200

// Lock types (Tlock, Tgetlock) and Rlock statuses.
const (
	LockTypeRdlck = 0
	LockTypeWrlck = 1
	LockTypeUnlck = 2

	LockSuccess = 0
	LockBlocked = 1
	LockError   = 2
	LockGrace   = 3
)

// ErrShort is wrapped by every decoding error: the message ended before
// a field did, or a length inside it points past its end.
var ErrShort = errors.New("9P message too short")

// Qid is the server's identity of a file: its type (QtDir, QtSymlink,
// QtFile), a version and a path unique to the file (its inode number).
type Qid struct {
	Type    uint8
	Version uint32
	Path    uint64
}

// Decoder reads little-endian 9P fields from a message. It never reads
// past the message: the first field that does not fit sets a sticky error
// (see Err) and it and every later field decode as zero.
type Decoder struct {
	b   []byte
	off int
	err error
}

// NewDecoder returns a decoder reading b from its start.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first decoding error (wrapping ErrShort), or nil.
func (d *Decoder) Err() error { return d.err }

// Remaining returns how many bytes are left to decode.
func (d *Decoder) Remaining() int {
	if d.err != nil {
		return 0
	}
	return len(d.b) - d.off
}

// take returns the next n bytes, or nil (and sets the error) when fewer
// are left.
func (d *Decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.err = fmt.Errorf("%w: %s needs %d bytes at offset %d, %d left", ErrShort, what, n, d.off, len(d.b)-d.off)
		return nil
	}
	p := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return p
}

// U8 decodes a byte.
func (d *Decoder) U8() uint8 {
	if p := d.take(1, "u8"); p != nil {
		return p[0]
	}
	return 0
}

// U16 decodes a 2-byte integer.
func (d *Decoder) U16() uint16 {
	if p := d.take(2, "u16"); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

// U32 decodes a 4-byte integer.
func (d *Decoder) U32() uint32 {
	if p := d.take(4, "u32"); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

// U64 decodes an 8-byte integer.
func (d *Decoder) U64() uint64 {
	if p := d.take(8, "u64"); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// String decodes a string: len[2] then that many bytes.
func (d *Decoder) String() string {
	n := d.U16()
	return string(d.take(int(n), "string"))
}

// Bytes returns the next n bytes (aliasing the message).
func (d *Decoder) Bytes(n int) []byte { return d.take(n, "data") }

// Qid decodes a qid: type[1] version[4] path[8].
func (d *Decoder) Qid() Qid {
	return Qid{Type: d.U8(), Version: d.U32(), Path: d.U64()}
}

// Encoder writes little-endian 9P fields into a fixed buffer. It never
// writes past the buffer: a field that does not fit sets Overflow and it
// and every later field are dropped.
type Encoder struct {
	b        []byte
	off      int
	overflow bool
}

// NewEncoder returns an encoder writing into b from its start.
func NewEncoder(b []byte) *Encoder { return &Encoder{b: b} }

// Len returns how many bytes were written.
func (e *Encoder) Len() int { return e.off }

// Overflow reports whether a field did not fit.
func (e *Encoder) Overflow() bool { return e.overflow }

// Room returns how many bytes are left in the buffer.
func (e *Encoder) Room() int {
	if e.overflow {
		return 0
	}
	return len(e.b) - e.off
}

// Reserve returns the next n bytes of the buffer to be filled in by the
// caller, or nil (setting Overflow) when they do not fit.
func (e *Encoder) Reserve(n int) []byte {
	if e.overflow || n < 0 || len(e.b)-e.off < n {
		e.overflow = true
		return nil
	}
	p := e.b[e.off : e.off+n : e.off+n]
	e.off += n
	return p
}

// Truncate drops what was written after the first n bytes (n <= Len).
func (e *Encoder) Truncate(n int) {
	if n >= 0 && n <= e.off {
		e.off = n
	}
}

// U8 encodes a byte.
func (e *Encoder) U8(v uint8) {
	if p := e.Reserve(1); p != nil {
		p[0] = v
	}
}

// U16 encodes a 2-byte integer.
func (e *Encoder) U16(v uint16) {
	if p := e.Reserve(2); p != nil {
		binary.LittleEndian.PutUint16(p, v)
	}
}

// U32 encodes a 4-byte integer.
func (e *Encoder) U32(v uint32) {
	if p := e.Reserve(4); p != nil {
		binary.LittleEndian.PutUint32(p, v)
	}
}

// U64 encodes an 8-byte integer.
func (e *Encoder) U64(v uint64) {
	if p := e.Reserve(8); p != nil {
		binary.LittleEndian.PutUint64(p, v)
	}
}

// String encodes a string: len[2] then its bytes. A string longer than
// 65535 bytes cannot be encoded and sets Overflow.
func (e *Encoder) String(s string) {
	if len(s) > 0xffff {
		e.overflow = true
		return
	}
	if len(e.b)-e.off < 2+len(s) {
		e.overflow = true
		return
	}
	e.U16(uint16(len(s)))
	copy(e.Reserve(len(s)), s)
}

// Bytes encodes raw bytes (no length prefix).
func (e *Encoder) Bytes(p []byte) {
	if q := e.Reserve(len(p)); q != nil {
		copy(q, p)
	}
}

// Qid encodes a qid.
func (e *Encoder) Qid(q Qid) {
	if len(e.b)-e.off < QidSize {
		e.overflow = true
		return
	}
	e.U8(q.Type)
	e.U32(q.Version)
	e.U64(q.Path)
}

// Header starts a message: a size placeholder, type and tag. Finish fills
// in the size.
func (e *Encoder) Header(typ uint8, tag uint16) {
	e.U32(0)
	e.U8(typ)
	e.U16(tag)
}

// Finish writes the message's size (everything encoded so far) into its
// first four bytes and returns it; ok is false when the message overflowed
// the buffer (or is shorter than a header).
func (e *Encoder) Finish() (n int, ok bool) {
	if e.overflow || e.off < HeaderSize {
		return 0, false
	}
	binary.LittleEndian.PutUint32(e.b, uint32(e.off))
	return e.off, true
}

// ParseHeader decodes a message's header. It fails when b is shorter than
// a header or the size field is below the header size or beyond b.
func ParseHeader(b []byte) (size uint32, typ uint8, tag uint16, err error) {
	if len(b) < HeaderSize {
		return 0, 0, 0, fmt.Errorf("%w: %d bytes, a header is %d", ErrShort, len(b), HeaderSize)
	}
	size = binary.LittleEndian.Uint32(b)
	typ = b[4]
	tag = binary.LittleEndian.Uint16(b[5:])
	if size < HeaderSize || uint64(size) > uint64(len(b)) {
		return size, typ, tag, fmt.Errorf("%w: size field %d, message of %d bytes", ErrShort, size, len(b))
	}
	return size, typ, tag, nil
}
