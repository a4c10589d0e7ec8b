package p9

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Server limits.
const (
	// MaxMsize is the largest message size the server negotiates.
	MaxMsize = 512 << 10
	// MinMsize is the smallest message size it accepts.
	MinMsize = 4096
	// MaxFids is the most fids a client may hold at once.
	MaxFids = 4096
	// MaxNodes bounds the O_PATH descriptors the server holds for walked
	// files and their ancestors (the root included).
	MaxNodes = 16384
	// direntBufSize is the getdents buffer.
	direntBufSize = 64 << 10
	// rreadHeader is Rread's and Rreaddir's size[4] type[1] tag[2] count[4].
	rreadHeader = HeaderSize + 4
	// direntFixed is a Rreaddir entry without its name: qid[13] offset[8]
	// type[1] name-length[2].
	direntFixed = QidSize + 8 + 1 + 2
	// nameMax is the longest name the server passes to the host.
	nameMax = 255
)

// resolveBeneath is how every name is resolved: beneath the directory it
// is relative to, never through a symbolic link (a trailing one with
// O_PATH|O_NOFOLLOW gives the link itself), never through a /proc magic
// link.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_SYMLINKS

// node is a file the server reached: an O_PATH descriptor, the directory
// it was reached from and its name there. Nodes are shared by reference
// count: a fid holds its node, a node holds its parent. ".." is the
// parent node, never a lookup, so it cannot leave the root.
type node struct {
	fd       int
	parent   *node // nil for the root
	name     string
	refs     int
	mode     uint32 // the S_IFMT bits at the walk
	dev, ino uint64
}

func (n *node) isDir() bool { return n.mode == unix.S_IFDIR }

func (n *node) qid() Qid { return qidOf(n.mode, n.ino) }

// qidOf makes the qid of a file of type mode (S_IFMT bits) and inode ino.
func qidOf(mode uint32, ino uint64) Qid {
	q := Qid{Path: ino}
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		q.Type = QtDir
	case unix.S_IFLNK:
		q.Type = QtSymlink
	}
	return q
}

// fid is a client's handle on a node, perhaps opened for I/O.
type fid struct {
	n    *node
	uid  uint32 // who attached: the owner of what the fid creates
	open int    // the descriptor opened by Tlopen/Tlcreate, or -1
	acc  int    // its access mode (O_RDONLY, O_WRONLY, O_RDWR)
}

// Server is a 9P2000.L file server exporting one host directory. Handle
// serves one message at a time: it is safe to call from several
// goroutines, which it serialises with a mutex.
//
// Containment: every fid holds an O_PATH descriptor opened relative to its
// parent's with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW, one name (never containing '/')
// at a time, starting at the root; ".." moves to the parent node the
// server remembers, and from the root stays at the root. Operations on
// names (create, mkdir, unlink, rename, link, symlink, mknod) are made
// relative to the directory's descriptor; files are opened for I/O by
// name from their parent's descriptor, again with openat2, and checked to
// be the file walked to. Symbolic links are never followed by the server:
// walking onto one gives a fid for the link, walking through one fails,
// opening one fails. Only regular files and directories are opened, and
// device nodes cannot be created, so the guest reaches no host device
// through the export.
type Server struct {
	mu       sync.Mutex
	root     *node
	readOnly bool
	isRoot   bool // the server may chown: chown errors are reported

	msize      uint32
	negotiated bool
	closed     bool
	fids       map[uint32]*fid
	nodes      map[*node]struct{} // live nodes, to fix names after a rename
	dirent     []byte             // getdents buffer
}

// NewServer returns a server exporting the directory root, read-only when
// readOnly.
func NewServer(root string, readOnly bool) (*Server, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("9p export %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("9p export %s: stat: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return nil, fmt.Errorf("9p export %s is not a directory", root)
	}
	s := &Server{
		readOnly: readOnly,
		isRoot:   os.Geteuid() == 0,
		msize:    MaxMsize,
		fids:     make(map[uint32]*fid),
		nodes:    make(map[*node]struct{}),
	}
	s.root = &node{fd: fd, refs: 1, mode: unix.S_IFDIR, dev: st.Dev, ino: st.Ino}
	s.nodes[s.root] = struct{}{}
	return s, nil
}

// Msize returns the negotiated message size (MaxMsize before a Tversion):
// no request or answer is longer.
func (s *Server) Msize() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msize
}

// ReadOnly reports whether the server refuses every modification.
func (s *Server) ReadOnly() bool { return s.readOnly }

// Reset forgets the session, as a transport reset does: every fid is
// clunked and the client must send Tversion again.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clunkAll()
	s.negotiated = false
	s.msize = MaxMsize
}

// Close clunks every fid and releases the root; later messages are
// answered EBADF.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.clunkAll()
	s.release(s.root)
	s.closed = true
	return nil
}

// Handle serves one complete T-message req and writes the R-message into
// resp, returning its length. resp's length is the most the client can
// take: an answer that does not fit is replaced by Rlerror ERANGE, and
// reads and directory listings are cut to fit. Handle answers nothing
// (returns 0) when req is shorter than a header or resp cannot hold an
// Rlerror; every other message, malformed or not, gets an answer.
func (s *Server) Handle(req []byte, resp []byte) (n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(req) < HeaderSize || len(resp) < HeaderSize+4 {
		return 0
	}
	size, typ, tag, err := ParseHeader(req)
	if err != nil {
		return rlerror(resp, tag, unix.EPROTO)
	}
	if uint64(len(resp)) > uint64(s.msize) && typ != Tversion {
		resp = resp[:s.msize]
	}
	d := NewDecoder(req[HeaderSize:size])
	e := NewEncoder(resp)
	e.Header(typ+1, tag)
	errno := s.dispatch(typ, d, e)
	if errno != 0 {
		return rlerror(resp, tag, errno)
	}
	n, ok := e.Finish()
	if !ok {
		return rlerror(resp, tag, unix.ERANGE)
	}
	return n
}

// rlerror writes Rlerror(tag, errno) into resp (at least 11 bytes).
func rlerror(resp []byte, tag uint16, errno unix.Errno) int {
	e := NewEncoder(resp)
	e.Header(Rlerror, tag)
	e.U32(uint32(errno))
	n, _ := e.Finish()
	return n
}

// dispatch serves one message and returns 0 or the errno to answer.
func (s *Server) dispatch(typ uint8, d *Decoder, e *Encoder) unix.Errno {
	if s.closed {
		return unix.EBADF
	}
	if typ == Tversion {
		return s.version(d, e)
	}
	if !s.negotiated {
		return unix.EPROTO
	}
	if e.Room() < replyBody(typ) {
		// Refused before acting: the client would not hear of a fid made
		// or a file created or written.
		return unix.ERANGE
	}
	switch typ {
	case Tattach:
		return s.attach(d, e)
	case Tflush:
		d.U16()
		return malformed(d)
	case Twalk:
		return s.walk(d, e)
	case Tlopen:
		return s.lopen(d, e)
	case Tlcreate:
		return s.lcreate(d, e)
	case Tsymlink:
		return s.symlink(d, e)
	case Tmknod:
		return s.mknod(d, e)
	case Trename:
		return s.rename(d)
	case Treadlink:
		return s.readlink(d, e)
	case Tgetattr:
		return s.getattr(d, e)
	case Tsetattr:
		return s.setattr(d)
	case Treaddir:
		return s.readdir(d, e)
	case Tfsync:
		return s.fsync(d)
	case Tlock:
		return s.lock(d, e)
	case Tgetlock:
		return s.getlock(d, e)
	case Tlink:
		return s.link(d)
	case Tmkdir:
		return s.mkdir(d, e)
	case Trenameat:
		return s.renameat(d)
	case Tunlinkat:
		return s.unlinkat(d)
	case Tread:
		return s.read(d, e)
	case Twrite:
		return s.write(d, e)
	case Tclunk:
		return s.clunk(d)
	case Tremove:
		return s.remove(d)
	case Tstatfs:
		return s.statfs(d, e)
	}
	// Tauth, Txattrwalk, Txattrcreate, 9P2000 and 9P2000.u messages, and
	// anything else.
	return unix.EOPNOTSUPP
}

// replyBody returns the size of the fixed body of the answer to a
// message that creates something (Twalk's depends on its names and is
// checked there).
func replyBody(typ uint8) int {
	switch typ {
	case Tattach, Tsymlink, Tmknod, Tmkdir:
		return QidSize
	case Tlopen, Tlcreate:
		return QidSize + 4
	case Twrite:
		return 4
	}
	return 0
}

// malformed returns EPROTO when the message did not decode.
func malformed(d *Decoder) unix.Errno {
	if d.Err() != nil {
		return unix.EPROTO
	}
	return 0
}

// errnoOf returns the errno inside err (EIO when there is none).
func errnoOf(err error) unix.Errno {
	var en unix.Errno
	if errors.As(err, &en) && en != 0 {
		return en
	}
	return unix.EIO
}

// --- nodes and fids -------------------------------------------------------

// ref takes a reference on n and returns it.
func (s *Server) ref(n *node) *node {
	n.refs++
	return n
}

// release drops a reference on n, closing it and releasing its ancestors
// when it was the last.
func (s *Server) release(n *node) {
	for n != nil {
		n.refs--
		if n.refs > 0 {
			return
		}
		unix.Close(n.fd)
		delete(s.nodes, n)
		n.fd = -1
		n, n.parent = n.parent, nil
	}
}

// newNode makes a node for the O_PATH descriptor fd, reached as name in
// parent; it takes fd (closing it on error).
func (s *Server) newNode(parent *node, name string, fd int) (*node, unix.Errno) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, errnoOf(err)
	}
	n := &node{fd: fd, parent: s.ref(parent), name: name, refs: 1, mode: st.Mode & unix.S_IFMT, dev: st.Dev, ino: st.Ino}
	s.nodes[n] = struct{}{}
	return n, 0
}

// lookupNode resolves name in directory dir to a new node.
func (s *Server) lookupNode(dir *node, name string) (*node, unix.Errno) {
	if len(s.nodes) >= MaxNodes {
		return nil, unix.EMFILE
	}
	fd, err := openat2(dir.fd, name, unix.O_PATH, 0)
	if err != nil {
		return nil, errnoOf(err)
	}
	return s.newNode(dir, name, fd)
}

// step walks one name from cur (a directory) and returns a reference on
// where it leads.
func (s *Server) step(cur *node, name string) (*node, unix.Errno) {
	if errno := checkWalkName(name); errno != 0 {
		return nil, errno
	}
	if !cur.isDir() {
		return nil, unix.ENOTDIR
	}
	switch name {
	case "..":
		if cur.parent == nil {
			return s.ref(cur), 0 // the root's parent is the root
		}
		return s.ref(cur.parent), 0
	case ".":
		return s.ref(cur), 0
	}
	return s.lookupNode(cur, name)
}

// checkWalkName refuses names that are not one path component.
func checkWalkName(name string) unix.Errno {
	if name == "" {
		return unix.EINVAL
	}
	if len(name) > nameMax {
		return unix.ENAMETOOLONG
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return unix.EINVAL
		}
	}
	return 0
}

// checkNewName refuses names an entry cannot be created, removed or
// renamed by: those checkWalkName refuses, "." and "..".
func checkNewName(name string) unix.Errno {
	if name == "." || name == ".." {
		return unix.EINVAL
	}
	return checkWalkName(name)
}

// getFid returns the fid numbered id.
func (s *Server) getFid(id uint32) (*fid, unix.Errno) {
	f, ok := s.fids[id]
	if !ok {
		return nil, unix.EBADF
	}
	return f, 0
}

// dirFid returns fid id, which must be a directory.
func (s *Server) dirFid(id uint32) (*fid, unix.Errno) {
	f, errno := s.getFid(id)
	if errno != 0 {
		return nil, errno
	}
	if !f.n.isDir() {
		return nil, unix.ENOTDIR
	}
	return f, 0
}

// newFidOK checks that id can be a new fid.
func (s *Server) newFidOK(id uint32) unix.Errno {
	if id == NoFid {
		return unix.EBADF
	}
	if _, ok := s.fids[id]; ok {
		return unix.EEXIST
	}
	if len(s.fids) >= MaxFids {
		return unix.EMFILE
	}
	return 0
}

// closeOpen closes f's I/O descriptor, if any.
func (f *fid) closeOpen() {
	if f.open >= 0 {
		unix.Close(f.open)
		f.open = -1
	}
}

// clunkFid forgets fid id.
func (s *Server) clunkFid(id uint32, f *fid) {
	f.closeOpen()
	s.release(f.n)
	f.n = nil
	delete(s.fids, id)
}

// clunkAll forgets every fid.
func (s *Server) clunkAll() {
	for id, f := range s.fids {
		s.clunkFid(id, f)
	}
}

// sameFile reports whether a and b are the same directory.
func sameFile(a, b *node) bool { return a.dev == b.dev && a.ino == b.ino }

// checkName verifies that n's parent still holds n under n's name (a
// rename by the host may have changed it) and returns ESTALE if not.
func checkName(n *node) unix.Errno {
	if n.parent == nil {
		return unix.EBUSY // the root has no name
	}
	var st unix.Stat_t
	if err := unix.Fstatat(n.parent.fd, n.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return unix.ESTALE
		}
		return errnoOf(err)
	}
	if st.Dev != n.dev || st.Ino != n.ino {
		return unix.ESTALE
	}
	return 0
}

// renamed records that oldName in oldDir is now newName in newDir: nodes
// reached by the old name get the new name and parent, so that "..",
// opening and renaming them again work.
func (s *Server) renamed(oldDir *node, oldName string, newDir *node, newName string) {
	var moved []*node
	for n := range s.nodes {
		if n.parent != nil && n.name == oldName && sameFile(n.parent, oldDir) {
			moved = append(moved, n)
		}
	}
	for _, n := range moved {
		n.name = newName
		if n.parent != newDir {
			old := n.parent
			n.parent = s.ref(newDir)
			s.release(old)
		}
	}
}

// --- host helpers ---------------------------------------------------------

// openat2 opens name beneath dirfd (see resolveBeneath), never following
// a symbolic link, retrying on EINTR.
func openat2(dirfd int, name string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: resolveBeneath,
	}
	for {
		fd, err := unix.Openat2(dirfd, name, &how)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// hostOpenFlags maps 9P2000.L open flags to the host's: access mode,
// truncation, appending, synchronous I/O and O_DIRECTORY pass; creation,
// terminal, asynchronous and direct I/O flags, O_NOATIME and O_NONBLOCK
// are dropped. O_NOFOLLOW and O_CLOEXEC are always added by openat2.
func hostOpenFlags(f uint32) (int, unix.Errno) {
	var h int
	switch f & OAccMode {
	case OReadOnly:
		h = unix.O_RDONLY
	case OWriteOnly:
		h = unix.O_WRONLY
	case OReadWrite:
		h = unix.O_RDWR
	default:
		return 0, unix.EINVAL
	}
	for _, m := range [...]struct {
		p9   uint32
		host int
	}{
		{OTrunc, unix.O_TRUNC},
		{OAppend, unix.O_APPEND},
		{ODsync, unix.O_DSYNC},
		{OSync, unix.O_SYNC},
		{ODirectory, unix.O_DIRECTORY},
	} {
		if f&m.p9 != 0 {
			h |= m.host
		}
	}
	return h, 0
}

// writes reports whether host open flags h can modify the file.
func writes(h int) bool {
	return h&unix.O_ACCMODE != unix.O_RDONLY || h&unix.O_TRUNC != 0
}

// openNode opens n for I/O with host flags h: a directory through its own
// descriptor ("."), a regular file by name from its parent, checked to be
// the file walked to. Anything else is refused: symbolic links ELOOP,
// devices, FIFOs and sockets EPERM (the guest's kernel opens those
// itself).
func (s *Server) openNode(n *node, h int) (int, unix.Errno) {
	var fd int
	var err error
	switch n.mode {
	case unix.S_IFDIR:
		fd, err = openat2(n.fd, ".", h|unix.O_DIRECTORY, 0)
	case unix.S_IFREG:
		if n.parent == nil {
			return -1, unix.EINVAL
		}
		// O_NONBLOCK and O_NOCTTY in case the name was replaced by a
		// FIFO or terminal: the check below then refuses it.
		fd, err = openat2(n.parent.fd, n.name, h|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	case unix.S_IFLNK:
		return -1, unix.ELOOP
	default:
		return -1, unix.EPERM
	}
	if err != nil {
		return -1, errnoOf(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, errnoOf(err)
	}
	if st.Dev != n.dev || st.Ino != n.ino {
		unix.Close(fd)
		return -1, unix.ESTALE
	}
	return fd, 0
}

// chmodNode sets n's permission bits without following a link.
func (s *Server) chmodNode(n *node, mode uint32) unix.Errno {
	err := unix.Fchmodat(n.fd, "", mode, unix.AT_EMPTY_PATH)
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		if err != nil {
			return errnoOf(err)
		}
		return 0
	}
	// A kernel without fchmodat2 (before 6.6).
	switch {
	case n.mode == unix.S_IFLNK:
		return unix.EOPNOTSUPP
	case n.isDir():
		fd, err := openat2(n.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return errnoOf(err)
		}
		defer unix.Close(fd)
		return errnoOf0(unix.Fchmod(fd, mode))
	}
	if errno := checkName(n); errno != 0 {
		return errno
	}
	return errnoOf0(unix.Fchmodat(n.parent.fd, n.name, mode, 0))
}

// fixMode gives the new entry name in dirfd the permission bits mode
// when the host's umask took some away.
func fixMode(dirfd int, name string, mode uint32) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&0o7777 == mode || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// No fchmodat2; the entry was just made and is no link.
		err = unix.Fchmodat(dirfd, name, mode, 0)
	}
	return err
}

// errnoOf0 is errnoOf that maps nil to 0.
func errnoOf0(err error) unix.Errno {
	if err == nil {
		return 0
	}
	return errnoOf(err)
}

// owner returns the uid and gid a new entry made by f gets (-1: keep).
func owner(f *fid, gid uint32) (int, int) {
	g := -1
	if gid != NoUID {
		g = int(gid)
	}
	return int(f.uid), g
}

// chownNew gives the entry name in dirfd its owner. The error is
// reported only when the server runs as root (otherwise it cannot chown
// and the entry keeps the server's ids).
func (s *Server) chownNew(dirfd int, name string, f *fid, gid uint32) error {
	uid, g := owner(f, gid)
	err := unix.Fchownat(dirfd, name, uid, g, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && s.isRoot {
		return err
	}
	return nil
}

// undoCreate removes the entry name just made in dirfd after a failure.
func undoCreate(dirfd int, name string, dir bool) {
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	unix.Unlinkat(dirfd, name, flags)
}

// --- messages -------------------------------------------------------------

func (s *Server) version(d *Decoder, e *Encoder) unix.Errno {
	msize := d.U32()
	ver := d.String()
	if d.Err() != nil {
		return unix.EPROTO
	}
	s.clunkAll()
	s.negotiated = false
	s.msize = MaxMsize
	if ver != Version {
		e.U32(min(msize, MaxMsize))
		e.String(VersionUnknown)
		return 0
	}
	if msize < MinMsize {
		return unix.EINVAL
	}
	s.msize = min(msize, MaxMsize)
	s.negotiated = true
	e.U32(s.msize)
	e.String(Version)
	return 0
}

func (s *Server) attach(d *Decoder, e *Encoder) unix.Errno {
	id, afid := d.U32(), d.U32()
	_ = d.String() // uname
	aname := d.String()
	uid := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	if afid != NoFid {
		return unix.EINVAL // no authentication: there is no afid to use
	}
	if aname != "" && aname != "/" {
		return unix.ENOENT
	}
	if errno := s.newFidOK(id); errno != 0 {
		return errno
	}
	if uid == NoUID {
		uid = 0
	}
	s.fids[id] = &fid{n: s.ref(s.root), uid: uid, open: -1}
	e.Qid(s.root.qid())
	return 0
}

func (s *Server) walk(d *Decoder, e *Encoder) unix.Errno {
	id, newID, nw := d.U32(), d.U32(), d.U16()
	if nw > MaxWalkNames {
		return unix.E2BIG
	}
	var names [MaxWalkNames]string
	for i := range int(nw) {
		names[i] = d.String()
	}
	if d.Err() != nil {
		return unix.EPROTO
	}
	if e.Room() < 2+QidSize*int(nw) {
		return unix.ERANGE // before making a fid the client would not hear of
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if newID != id {
		if errno := s.newFidOK(newID); errno != 0 {
			return errno
		}
	}
	cur := s.ref(f.n)
	var qids [MaxWalkNames]Qid
	walked := 0
	for _, name := range names[:nw] {
		next, errno := s.step(cur, name)
		if errno != 0 {
			if walked == 0 {
				s.release(cur)
				return errno
			}
			break
		}
		s.release(cur)
		cur = next
		qids[walked] = cur.qid()
		walked++
	}
	switch {
	case walked < int(nw):
		s.release(cur) // a partial walk makes no newfid
	case newID == id && nw == 0:
		s.release(cur) // cloning onto itself changes nothing
	case newID == id:
		f.closeOpen()
		s.release(f.n)
		f.n = cur
	default:
		s.fids[newID] = &fid{n: cur, uid: f.uid, open: -1}
	}
	e.U16(uint16(walked))
	for _, q := range qids[:walked] {
		e.Qid(q)
	}
	return 0
}

func (s *Server) lopen(d *Decoder, e *Encoder) unix.Errno {
	id, flags := d.U32(), d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if f.open >= 0 {
		return unix.EBUSY
	}
	h, errno := hostOpenFlags(flags)
	if errno != 0 {
		return errno
	}
	if s.readOnly && writes(h) {
		return unix.EROFS
	}
	fd, errno := s.openNode(f.n, h)
	if errno != 0 {
		return errno
	}
	f.open, f.acc = fd, h&unix.O_ACCMODE
	e.Qid(f.n.qid())
	e.U32(s.msize - IOHeaderSize)
	return 0
}

func (s *Server) lcreate(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	name := d.String()
	flags, mode, gid := d.U32(), d.U32(), d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.dirFid(id)
	if errno != 0 {
		return errno
	}
	if f.open >= 0 {
		return unix.EBUSY
	}
	if errno := checkNewName(name); errno != 0 {
		return errno
	}
	if s.readOnly {
		return unix.EROFS
	}
	if len(s.nodes) >= MaxNodes {
		return unix.EMFILE
	}
	h, errno := hostOpenFlags(flags &^ ODirectory)
	if errno != 0 {
		return errno
	}
	h |= unix.O_NONBLOCK | unix.O_NOCTTY
	mode &= 0o7777
	dir := f.n
	created := true
	fd, err := openat2(dir.fd, name, h|unix.O_CREAT|unix.O_EXCL, mode)
	if errors.Is(err, unix.EEXIST) && flags&OExcl == 0 {
		created = false
		fd, err = openat2(dir.fd, name, h, 0)
	}
	if err != nil {
		return errnoOf(err)
	}
	fail := func(errno unix.Errno) unix.Errno {
		unix.Close(fd)
		if created {
			undoCreate(dir.fd, name, false)
		}
		return errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(errnoOf(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fail(unix.EEXIST)
	}
	if created {
		uid, g := owner(f, gid)
		if err := unix.Fchown(fd, uid, g); err != nil && s.isRoot {
			return fail(errnoOf(err))
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return fail(errnoOf(err))
		}
	}
	pfd, err := openat2(dir.fd, name, unix.O_PATH, 0)
	if err != nil {
		return fail(errnoOf(err))
	}
	n, errno := s.newNode(dir, name, pfd)
	if errno != 0 {
		return fail(errno)
	}
	if n.dev != st.Dev || n.ino != st.Ino {
		s.release(n)
		return fail(unix.ESTALE)
	}
	s.release(f.n)
	f.n = n
	f.open, f.acc = fd, h&unix.O_ACCMODE
	e.Qid(n.qid())
	e.U32(s.msize - IOHeaderSize)
	return 0
}

// entryQid answers the qid of the entry name in dirfd.
func entryQid(dirfd int, name string, e *Encoder) unix.Errno {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return errnoOf(err)
	}
	e.Qid(qidOf(st.Mode, st.Ino))
	return 0
}

// newEntryDir checks a request to make name in fid id and returns the
// directory fid.
func (s *Server) newEntryDir(id uint32, name string) (*fid, unix.Errno) {
	f, errno := s.dirFid(id)
	if errno != 0 {
		return nil, errno
	}
	if errno := checkNewName(name); errno != 0 {
		return nil, errno
	}
	if s.readOnly {
		return nil, unix.EROFS
	}
	return f, 0
}

func (s *Server) symlink(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	name, target := d.String(), d.String()
	gid := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.newEntryDir(id, name)
	if errno != 0 {
		return errno
	}
	// The target is stored, never followed by the server.
	if err := unix.Symlinkat(target, f.n.fd, name); err != nil {
		return errnoOf(err)
	}
	if err := s.chownNew(f.n.fd, name, f, gid); err != nil {
		undoCreate(f.n.fd, name, false)
		return errnoOf(err)
	}
	return entryQid(f.n.fd, name, e)
}

func (s *Server) mknod(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	name := d.String()
	mode, _, _, gid := d.U32(), d.U32(), d.U32(), d.U32() // major, minor unused
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.newEntryDir(id, name)
	if errno != 0 {
		return errno
	}
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
	case unix.S_IFCHR, unix.S_IFBLK:
		return unix.EPERM // no host devices through the export
	default:
		return unix.EINVAL
	}
	perm := mode & 0o7777
	if err := unix.Mknodat(f.n.fd, name, mode&(unix.S_IFMT|0o7777), 0); err != nil {
		return errnoOf(err)
	}
	if err := s.chownNew(f.n.fd, name, f, gid); err != nil {
		undoCreate(f.n.fd, name, false)
		return errnoOf(err)
	}
	if err := fixMode(f.n.fd, name, perm); err != nil {
		undoCreate(f.n.fd, name, false)
		return errnoOf(err)
	}
	return entryQid(f.n.fd, name, e)
}

func (s *Server) mkdir(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	name := d.String()
	mode, gid := d.U32(), d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.newEntryDir(id, name)
	if errno != 0 {
		return errno
	}
	perm := mode & 0o7777
	if err := unix.Mkdirat(f.n.fd, name, perm); err != nil {
		return errnoOf(err)
	}
	if err := s.chownNew(f.n.fd, name, f, gid); err != nil {
		undoCreate(f.n.fd, name, true)
		return errnoOf(err)
	}
	if err := fixMode(f.n.fd, name, perm); err != nil {
		undoCreate(f.n.fd, name, true)
		return errnoOf(err)
	}
	return entryQid(f.n.fd, name, e)
}

func (s *Server) rename(d *Decoder) unix.Errno {
	id, did := d.U32(), d.U32()
	name := d.String()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	df, errno := s.dirFid(did)
	if errno != 0 {
		return errno
	}
	if errno := checkNewName(name); errno != 0 {
		return errno
	}
	if s.readOnly {
		return unix.EROFS
	}
	n := f.n
	if errno := checkName(n); errno != 0 {
		return errno
	}
	if err := unix.Renameat(n.parent.fd, n.name, df.n.fd, name); err != nil {
		return errnoOf(err)
	}
	s.renamed(n.parent, n.name, df.n, name)
	return 0
}

func (s *Server) renameat(d *Decoder) unix.Errno {
	oid := d.U32()
	oldName := d.String()
	nid := d.U32()
	newName := d.String()
	if d.Err() != nil {
		return unix.EPROTO
	}
	of, errno := s.dirFid(oid)
	if errno != 0 {
		return errno
	}
	nf, errno := s.dirFid(nid)
	if errno != 0 {
		return errno
	}
	if errno := checkNewName(oldName); errno != 0 {
		return errno
	}
	if errno := checkNewName(newName); errno != 0 {
		return errno
	}
	if s.readOnly {
		return unix.EROFS
	}
	if err := unix.Renameat(of.n.fd, oldName, nf.n.fd, newName); err != nil {
		return errnoOf(err)
	}
	s.renamed(of.n, oldName, nf.n, newName)
	return 0
}

func (s *Server) unlinkat(d *Decoder) unix.Errno {
	id := d.U32()
	name := d.String()
	flags := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.newEntryDir(id, name)
	if errno != 0 {
		return errno
	}
	hf := 0
	if flags&AtRemoveDir != 0 {
		hf = unix.AT_REMOVEDIR
	}
	return errnoOf0(unix.Unlinkat(f.n.fd, name, hf))
}

func (s *Server) remove(d *Decoder) unix.Errno {
	id := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	// Tremove clunks the fid whatever happens.
	n := s.ref(f.n)
	defer s.release(n)
	s.clunkFid(id, f)
	if s.readOnly {
		return unix.EROFS
	}
	if errno := checkName(n); errno != 0 {
		return errno
	}
	flags := 0
	if n.isDir() {
		flags = unix.AT_REMOVEDIR
	}
	return errnoOf0(unix.Unlinkat(n.parent.fd, n.name, flags))
}

func (s *Server) link(d *Decoder) unix.Errno {
	did, id := d.U32(), d.U32()
	name := d.String()
	if d.Err() != nil {
		return unix.EPROTO
	}
	df, errno := s.newEntryDir(did, name)
	if errno != 0 {
		return errno
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	n := f.n
	if n.isDir() {
		return unix.EPERM
	}
	err := unix.Linkat(n.fd, "", df.n.fd, name, unix.AT_EMPTY_PATH)
	if (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM)) && n.parent != nil {
		// AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH: link by name.
		if errno := checkName(n); errno != 0 {
			return errno
		}
		err = unix.Linkat(n.parent.fd, n.name, df.n.fd, name, 0)
	}
	return errnoOf0(err)
}

func (s *Server) readlink(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if f.n.mode != unix.S_IFLNK {
		return unix.EINVAL
	}
	var buf [unix.PathMax]byte
	n, err := unix.Readlinkat(f.n.fd, "", buf[:])
	if err != nil {
		return errnoOf(err)
	}
	e.String(string(buf[:n]))
	return 0
}

func (s *Server) getattr(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	d.U64() // request mask: the basic set is always answered
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.n.fd, &st); err != nil {
		return errnoOf(err)
	}
	e.U64(GetattrBasic)
	e.Qid(qidOf(st.Mode, st.Ino))
	e.U32(st.Mode)
	e.U32(st.Uid)
	e.U32(st.Gid)
	e.U64(uint64(st.Nlink))
	e.U64(st.Rdev)
	e.U64(uint64(st.Size))
	e.U64(uint64(st.Blksize))
	e.U64(uint64(st.Blocks))
	for _, t := range [...]unix.Timespec{st.Atim, st.Mtim, st.Ctim} {
		e.U64(uint64(t.Sec))
		e.U64(uint64(t.Nsec))
	}
	for range 4 { // btime sec, nsec, gen, data_version
		e.U64(0)
	}
	return 0
}

func (s *Server) setattr(d *Decoder) unix.Errno {
	id, valid, mode, uid, gid := d.U32(), d.U32(), d.U32(), d.U32(), d.U32()
	size := d.U64()
	aSec, aNsec, mSec, mNsec := d.U64(), d.U64(), d.U64(), d.U64()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if s.readOnly {
		return unix.EROFS
	}
	n := f.n
	if valid&(SetattrUID|SetattrGID|SetattrCtime) != 0 {
		u, g := -1, -1
		if valid&SetattrUID != 0 {
			u = int(uid)
		}
		if valid&SetattrGID != 0 {
			g = int(gid)
		}
		// chown(-1, -1) for a lone CTIME only touches the ctime.
		if err := unix.Fchownat(n.fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return errnoOf(err)
		}
	}
	if valid&SetattrMode != 0 {
		if errno := s.chmodNode(n, mode&0o7777); errno != 0 {
			return errno
		}
	}
	if valid&SetattrSize != 0 {
		if errno := s.truncate(f, size); errno != 0 {
			return errno
		}
	}
	if valid&(SetattrAtime|SetattrMtime) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		for i, t := range [...]struct {
			asked, set uint32
			sec, nsec  uint64
		}{
			{SetattrAtime, SetattrAtimeSet, aSec, aNsec},
			{SetattrMtime, SetattrMtimeSet, mSec, mNsec},
		} {
			switch {
			case valid&t.asked == 0:
			case valid&t.set == 0:
				ts[i].Nsec = unix.UTIME_NOW
			default:
				if t.nsec >= 1e9 || t.sec > math.MaxInt64 {
					return unix.EINVAL
				}
				ts[i] = unix.Timespec{Sec: int64(t.sec), Nsec: int64(t.nsec)}
			}
		}
		if errno := utimesNode(n, ts[:]); errno != 0 {
			return errno
		}
	}
	return 0
}

// truncate sets the size of f's file (a regular file).
func (s *Server) truncate(f *fid, size uint64) unix.Errno {
	if size > math.MaxInt64 {
		return unix.EFBIG
	}
	switch f.n.mode {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return unix.EISDIR
	default:
		return unix.EINVAL
	}
	fd := f.open
	if fd < 0 || f.acc == unix.O_RDONLY {
		var errno unix.Errno
		fd, errno = s.openNode(f.n, unix.O_WRONLY)
		if errno != 0 {
			return errno
		}
		defer unix.Close(fd)
	}
	for {
		err := unix.Ftruncate(fd, int64(size))
		if !errors.Is(err, unix.EINTR) {
			return errnoOf0(err)
		}
	}
}

// utimesNode sets n's times without following a link.
func utimesNode(n *node, ts []unix.Timespec) unix.Errno {
	err := unix.UtimesNanoAt(n.fd, "", ts, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EINVAL) && n.parent != nil {
		// A kernel without AT_EMPTY_PATH for utimensat: by name.
		if errno := checkName(n); errno != 0 {
			return errno
		}
		err = unix.UtimesNanoAt(n.parent.fd, n.name, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return errnoOf0(err)
}

func (s *Server) readdir(d *Decoder, e *Encoder) unix.Errno {
	id, offset, count := d.U32(), d.U64(), d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.dirFid(id)
	if errno != 0 {
		return errno
	}
	if offset > math.MaxInt64 {
		return unix.EINVAL
	}
	fd := f.open
	if fd < 0 {
		fd, errno = s.openNode(f.n, unix.O_RDONLY)
		if errno != 0 {
			return errno
		}
		defer unix.Close(fd)
	}
	if _, err := unix.Seek(fd, int64(offset), 0); err != nil {
		return errnoOf(err)
	}
	max := min(int(count), int(s.msize)-rreadHeader, e.Room()-4)
	if max < 0 {
		max = 0
	}
	countAt := e.Len()
	e.U32(0)
	start := e.Len()
	if s.dirent == nil {
		s.dirent = make([]byte, direntBufSize)
	}
	used := 0
	for {
		n, err := unix.Getdents(fd, s.dirent)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if used > 0 {
				break // answer what was read; the next call sees the error
			}
			return errnoOf(err)
		}
		if n <= 0 {
			break
		}
		full := false
		for b := s.dirent[:n]; len(b) > 0; {
			ino, off, typ, name, rest, ok := parseDirent(b)
			if !ok {
				return unix.EIO
			}
			b = rest
			need := direntFixed + len(name)
			if used+need > max {
				if used == 0 {
					return unix.ERANGE // an empty answer would mean the end
				}
				full = true
				break
			}
			q := qidOf(dtypeMode(typ), ino)
			if typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
					q = qidOf(st.Mode, st.Ino)
					typ = modeDtype(st.Mode)
				}
			}
			if name == ".." && f.n.parent == nil {
				q = s.root.qid() // the root's parent is the root
			}
			e.Qid(q)
			e.U64(uint64(off))
			e.U8(typ)
			e.String(name)
			used += need
		}
		if full {
			break
		}
	}
	binary.LittleEndian.PutUint32(e.b[countAt:], uint32(e.Len()-start))
	return 0
}

// parseDirent splits the first linux_dirent64 off b.
func parseDirent(b []byte) (ino uint64, off int64, typ uint8, name string, rest []byte, ok bool) {
	const fixed = 19 // ino[8] off[8] reclen[2] type[1]
	if len(b) < fixed {
		return 0, 0, 0, "", nil, false
	}
	reclen := int(binary.LittleEndian.Uint16(b[16:]))
	if reclen < fixed || reclen > len(b) {
		return 0, 0, 0, "", nil, false
	}
	ino = binary.LittleEndian.Uint64(b)
	off = int64(binary.LittleEndian.Uint64(b[8:]))
	typ = b[18]
	nb := b[fixed:reclen]
	for i, c := range nb {
		if c == 0 {
			nb = nb[:i]
			break
		}
	}
	return ino, off, typ, string(nb), b[reclen:], true
}

// dtypeMode maps a dirent type to S_IFMT bits.
func dtypeMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	}
	return unix.S_IFREG
}

// modeDtype maps S_IFMT bits to a dirent type.
func modeDtype(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	}
	return unix.DT_UNKNOWN
}

func (s *Server) read(d *Decoder, e *Encoder) unix.Errno {
	id, offset, count := d.U32(), d.U64(), d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if f.open < 0 {
		return unix.EBADF
	}
	if offset > math.MaxInt64 {
		return unix.EINVAL
	}
	max := min(int(count), int(s.msize)-rreadHeader, e.Room()-4)
	if max < 0 {
		max = 0
	}
	countAt := e.Len()
	e.U32(0)
	buf := e.Reserve(max)
	if buf == nil {
		return unix.ERANGE
	}
	var n int
	var err error
	for {
		n, err = unix.Pread(f.open, buf, int64(offset))
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return errnoOf(err)
	}
	binary.LittleEndian.PutUint32(e.b[countAt:], uint32(n))
	e.Truncate(countAt + 4 + n)
	return 0
}

func (s *Server) write(d *Decoder, e *Encoder) unix.Errno {
	id, offset, count := d.U32(), d.U64(), d.U32()
	data := d.Bytes(int(count))
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if s.readOnly {
		return unix.EROFS
	}
	if f.open < 0 {
		return unix.EBADF
	}
	if offset > math.MaxInt64 || uint64(len(data)) > math.MaxInt64-offset {
		return unix.EINVAL
	}
	done := 0
	for done < len(data) {
		n, err := unix.Pwrite(f.open, data[done:], int64(offset)+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if done > 0 {
				break
			}
			return errnoOf(err)
		}
		if n <= 0 {
			break
		}
		done += n
	}
	e.U32(uint32(done))
	return 0
}

func (s *Server) fsync(d *Decoder) unix.Errno {
	id := d.U32()
	var datasync uint32
	if d.Remaining() >= 4 { // older clients send only the fid
		datasync = d.U32()
	}
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	if f.open < 0 {
		return unix.EBADF
	}
	if datasync != 0 {
		return errnoOf0(unix.Fdatasync(f.open))
	}
	return errnoOf0(unix.Fsync(f.open))
}

func (s *Server) lock(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	d.U8()         // type
	d.U32()        // flags
	d.U64()        // start
	d.U64()        // length
	d.U32()        // proc_id
	_ = d.String() // client_id
	if d.Err() != nil {
		return unix.EPROTO
	}
	if _, errno := s.getFid(id); errno != 0 {
		return errno
	}
	// Locks are the guest's business: every request succeeds.
	e.U8(LockSuccess)
	return 0
}

func (s *Server) getlock(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	d.U8() // type
	start, length, proc := d.U64(), d.U64(), d.U32()
	client := d.String()
	if d.Err() != nil {
		return unix.EPROTO
	}
	if _, errno := s.getFid(id); errno != 0 {
		return errno
	}
	e.U8(LockTypeUnlck) // nothing conflicts
	e.U64(start)
	e.U64(length)
	e.U32(proc)
	e.String(client)
	return 0
}

func (s *Server) clunk(d *Decoder) unix.Errno {
	id := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	s.clunkFid(id, f)
	return 0
}

func (s *Server) statfs(d *Decoder, e *Encoder) unix.Errno {
	id := d.U32()
	if d.Err() != nil {
		return unix.EPROTO
	}
	f, errno := s.getFid(id)
	if errno != 0 {
		return errno
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(f.n.fd, &st); err != nil {
		return errnoOf(err)
	}
	e.U32(uint32(st.Type))
	e.U32(uint32(st.Bsize))
	e.U64(st.Blocks)
	e.U64(st.Bfree)
	e.U64(st.Bavail)
	e.U64(st.Files)
	e.U64(st.Ffree)
	e.U64(uint64(uint32(st.Fsid.Val[0])) | uint64(uint32(st.Fsid.Val[1]))<<32)
	e.U32(uint32(st.Namelen))
	return 0
}
