package p9

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const fileContent = "hello, world\n"

// fixture makes tmp/export (the export) and tmp/outside (a host
// directory the guest must never reach) and returns their paths.
//
//	export/file           "hello, world\n"
//	export/dir/inner      "inner"
//	export/dir/sub/deep   "deep"
//	export/empty/
//	export/escape      -> /
//	export/up          -> ../../..
//	export/abssecret   -> <outside>/secret
//	export/relsecret   -> ../outside/secret
//	export/dirlink     -> dir
//	outside/secret        "secret"
func fixture(t testing.TB) (export, outside string) {
	t.Helper()
	tmp := t.TempDir()
	export, outside = filepath.Join(tmp, "export"), filepath.Join(tmp, "outside")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(export, "dir", "sub"), 0o755))
	must(os.Mkdir(filepath.Join(export, "empty"), 0o755))
	must(os.Mkdir(outside, 0o755))
	must(os.WriteFile(filepath.Join(export, "file"), []byte(fileContent), 0o644))
	must(os.WriteFile(filepath.Join(export, "dir", "inner"), []byte("inner"), 0o644))
	must(os.WriteFile(filepath.Join(export, "dir", "sub", "deep"), []byte("deep"), 0o644))
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644))
	must(os.Symlink("/", filepath.Join(export, "escape")))
	must(os.Symlink("../../..", filepath.Join(export, "up")))
	must(os.Symlink(filepath.Join(outside, "secret"), filepath.Join(export, "abssecret")))
	must(os.Symlink("../outside/secret", filepath.Join(export, "relsecret")))
	must(os.Symlink("dir", filepath.Join(export, "dirlink")))
	return export, outside
}

// session starts a server on a fresh fixture, negotiates and attaches
// fid 0 to the root.
func session(t testing.TB, readOnly bool) (*testClient, string, string) {
	t.Helper()
	export, outside := fixture(t)
	s, err := NewServer(export, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := newTestClient(t, s)
	if m, v := c.version(64<<10, Version); m != 64<<10 || v != Version {
		t.Fatalf("Rversion %d %q", m, v)
	}
	c.attach(0)
	return c, export, outside
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestNewServer(t *testing.T) {
	export, _ := fixture(t)
	if _, err := NewServer(filepath.Join(export, "file"), false); err == nil {
		t.Error("a regular file was accepted as an export")
	}
	if _, err := NewServer(filepath.Join(export, "missing"), false); err == nil {
		t.Error("a missing directory was accepted as an export")
	}
	s, err := NewServer(export, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, s)
	if e := c.fail(Tversion, func(e *Encoder) { e.U32(8192); e.String(Version) }); e != unix.EBADF {
		t.Errorf("after Close: %v, want EBADF", e)
	}
}

func TestVersion(t *testing.T) {
	for _, tc := range []struct {
		name      string
		msize     uint32
		version   string
		wantMsize uint32
		wantVer   string
		errno     unix.Errno
	}{
		{"64 KiB", 64 << 10, Version, 64 << 10, Version, 0},
		{"exactly the minimum", MinMsize, Version, MinMsize, Version, 0},
		{"capped at the maximum", 1 << 30, Version, MaxMsize, Version, 0},
		{"too small", MinMsize - 1, Version, 0, "", unix.EINVAL},
		{"9P2000", 8192, "9P2000", 8192, VersionUnknown, 0},
		{"9P2000.u", 8192, "9P2000.u", 8192, VersionUnknown, 0},
		{"empty version", 8192, "", 8192, VersionUnknown, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			export, _ := fixture(t)
			s, err := NewServer(export, false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c := newTestClient(t, s)
			build := func(e *Encoder) { e.U32(tc.msize); e.String(tc.version) }
			if tc.errno != 0 {
				if e := c.fail(Tversion, build); e != tc.errno {
					t.Fatalf("Tversion: %v, want %v", e, tc.errno)
				}
				return
			}
			m, v := c.version(tc.msize, tc.version)
			if m != tc.wantMsize || v != tc.wantVer {
				t.Fatalf("Rversion %d %q, want %d %q", m, v, tc.wantMsize, tc.wantVer)
			}
			// Only a negotiated session serves other messages.
			e := c.errno(Tattach, attachMsg(0, NoFid, "", 0))
			if negotiated := v == Version; negotiated != (e == 0) {
				t.Fatalf("attach after version %q: %v", v, e)
			}
			if v == Version && s.Msize() != tc.wantMsize {
				t.Fatalf("Msize %d, want %d", s.Msize(), tc.wantMsize)
			}
		})
	}
}

func TestVersionResetsFids(t *testing.T) {
	c, _, _ := session(t, false)
	c.walk(0, 1, "file")
	c.lopen(1, OReadOnly)
	c.version(8192, Version)
	for _, fid := range []uint32{0, 1} {
		if e := c.fail(Tgetattr, getattrMsg(fid)); e != unix.EBADF {
			t.Errorf("fid %d after Tversion: %v, want EBADF", fid, e)
		}
	}
	if e := c.fail(Tclunk, fidMsg(5)); e != unix.EBADF {
		t.Errorf("clunk of an unknown fid: %v", e)
	}
	c.s.Reset()
	if e := c.fail(Tattach, attachMsg(0, NoFid, "", 0)); e != unix.EPROTO {
		t.Errorf("attach after Reset without Tversion: %v, want EPROTO", e)
	}
}

func TestBeforeVersion(t *testing.T) {
	export, _ := fixture(t)
	s, err := NewServer(export, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := newTestClient(t, s)
	if e := c.fail(Tattach, attachMsg(0, NoFid, "", 0)); e != unix.EPROTO {
		t.Fatalf("attach before version: %v, want EPROTO", e)
	}
}

func TestAttach(t *testing.T) {
	c, export, _ := session(t, false)
	q := c.walk(0, 1)
	_ = q
	a := c.getattr(0)
	if a.qid.Type != QtDir || a.qid.Path != inode(t, export) {
		t.Errorf("root qid %+v, want a directory with inode %d", a.qid, inode(t, export))
	}
	for _, tc := range []struct {
		name  string
		build func(e *Encoder)
		errno unix.Errno
	}{
		{"fid in use", attachMsg(0, NoFid, "", 0), unix.EEXIST},
		{"NOFID", attachMsg(NoFid, NoFid, "", 0), unix.EBADF},
		{"with an afid", attachMsg(7, 3, "", 0), unix.EINVAL},
		{"another aname", attachMsg(7, NoFid, "/etc", 0), unix.ENOENT},
		{"short", func(e *Encoder) { e.U32(7); e.U32(NoFid); e.String("u") }, unix.EPROTO},
	} {
		if e := c.fail(Tattach, tc.build); e != tc.errno {
			t.Errorf("%s: %v, want %v", tc.name, e, tc.errno)
		}
	}
	if q := c.ok(Tattach, attachMsg(8, NoFid, "/", 1000)).Qid(); q.Path != inode(t, export) {
		t.Errorf("attach with aname / : qid %+v", q)
	}
}

func TestWalk(t *testing.T) {
	c, export, _ := session(t, false)
	rootIno := inode(t, export)
	for _, tc := range []struct {
		name  string
		names []string
		want  []uint64 // inodes walked; nil with errno
		errno unix.Errno
		made  bool // newfid exists after
	}{
		{"clone", nil, []uint64{}, 0, true},
		{"a file", []string{"file"}, []uint64{inode(t, export+"/file")}, 0, true},
		{"two levels", []string{"dir", "sub", "deep"}, []uint64{inode(t, export+"/dir"), inode(t, export+"/dir/sub"), inode(t, export+"/dir/sub/deep")}, 0, true},
		{"missing", []string{"missing"}, nil, unix.ENOENT, false},
		{"partial", []string{"dir", "missing", "x"}, []uint64{inode(t, export+"/dir")}, 0, false},
		{"through a file", []string{"file", "x"}, []uint64{inode(t, export+"/file")}, 0, false},
		{"dot dot", []string{"dir", "..", "file"}, []uint64{inode(t, export+"/dir"), rootIno, inode(t, export+"/file")}, 0, true},
		{"dot", []string{".", "file"}, []uint64{rootIno, inode(t, export+"/file")}, 0, true},
		{"slash in a name", []string{"dir/sub"}, nil, unix.EINVAL, false},
		{"slash later", []string{"dir", "sub/deep"}, []uint64{inode(t, export+"/dir")}, 0, false},
		{"empty name", []string{""}, nil, unix.EINVAL, false},
		{"NUL in a name", []string{"fi\x00le"}, nil, unix.EINVAL, false},
		{"long name", []string{strings.Repeat("x", 300)}, nil, unix.ENAMETOOLONG, false},
		{"16 names", slices.Repeat([]string{"."}, 16), slices.Repeat([]uint64{rootIno}, 16), 0, true},
		{"17 names", slices.Repeat([]string{"."}, 17), nil, unix.E2BIG, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rtyp, d := c.rpc(Twalk, walkMsg(0, 1, tc.names...))
			if tc.errno != 0 {
				if rtyp != Rlerror || unix.Errno(d.U32()) != tc.errno {
					t.Fatalf("got type %d, want Rlerror %v", rtyp, tc.errno)
				}
			} else {
				if rtyp != Rwalk {
					t.Fatalf("Rlerror %v", unix.Errno(d.U32()))
				}
				n := d.U16()
				var got []uint64
				for range n {
					got = append(got, d.Qid().Path)
				}
				if d.Err() != nil || d.Remaining() != 0 {
					t.Fatalf("Rwalk: %v, %d left", d.Err(), d.Remaining())
				}
				if !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
					t.Fatalf("walked %v, want %v", got, tc.want)
				}
			}
			e := c.errno(Tclunk, fidMsg(1))
			if made := e == 0; made != tc.made {
				t.Fatalf("newfid exists after the walk: %v, want %v", made, tc.made)
			}
		})
	}
	t.Run("newfid in use", func(t *testing.T) {
		c.walk(0, 2, "dir")
		if e := c.fail(Twalk, walkMsg(0, 2, "file")); e != unix.EEXIST {
			t.Fatalf("%v, want EEXIST", e)
		}
	})
	t.Run("newfid equals fid", func(t *testing.T) {
		c.walk(2, 2, "sub")
		if q := c.getattr(2).qid.Path; q != inode(t, export+"/dir/sub") {
			t.Fatalf("fid 2 at inode %d after walking onto itself", q)
		}
		// A failed first element leaves the fid where it was.
		if e := c.fail(Twalk, walkMsg(2, 2, "nope")); e != unix.ENOENT {
			t.Fatalf("%v", e)
		}
		if q := c.getattr(2).qid.Path; q != inode(t, export+"/dir/sub") {
			t.Fatal("a failed walk moved the fid")
		}
	})
	t.Run("unknown fid", func(t *testing.T) {
		if e := c.fail(Twalk, walkMsg(99, 100)); e != unix.EBADF {
			t.Fatalf("%v, want EBADF", e)
		}
	})
	t.Run("garbled", func(t *testing.T) {
		if e := c.fail(Twalk, func(e *Encoder) { e.U32(0); e.U32(5); e.U16(3); e.String("dir") }); e != unix.EPROTO {
			t.Fatalf("%v, want EPROTO", e)
		}
	})
}

func TestGetattr(t *testing.T) {
	c, export, _ := session(t, false)
	c.walk(0, 1, "file")
	a := c.getattr(1)
	var st unix.Stat_t
	if err := unix.Lstat(export+"/file", &st); err != nil {
		t.Fatal(err)
	}
	if a.valid != GetattrBasic || a.qid != (Qid{Type: QtFile, Path: st.Ino}) || a.mode != st.Mode ||
		a.uid != st.Uid || a.gid != st.Gid || a.nlink != 1 || a.size != uint64(len(fileContent)) ||
		a.mtime != [2]uint64{uint64(st.Mtim.Sec), uint64(st.Mtim.Nsec)} || a.blksize == 0 {
		t.Errorf("Rgetattr %+v for %+v", a, st)
	}
	c.walk(0, 2, "escape")
	if a := c.getattr(2); a.qid.Type != QtSymlink || a.mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("symlink attr %+v", a)
	}
	if e := c.fail(Tgetattr, func(e *Encoder) { e.U32(1) }); e != unix.EPROTO {
		t.Errorf("short Tgetattr: %v", e)
	}
}

func TestReadFile(t *testing.T) {
	c, _, _ := session(t, false)
	c.walk(0, 1, "file")
	if e := c.fail(Tread, readMsg(1, 0, 100)); e != unix.EBADF {
		t.Fatalf("read of an unopened fid: %v", e)
	}
	if q := c.lopen(1, OReadOnly); q.Type != QtFile {
		t.Fatalf("Rlopen qid %+v", q)
	}
	if e := c.fail(Tlopen, lopenMsg(1, OReadOnly)); e != unix.EBUSY {
		t.Fatalf("second open: %v", e)
	}
	for _, tc := range []struct {
		off   uint64
		count uint32
		want  string
	}{
		{0, 100, fileContent},
		{7, 5, "world"},
		{uint64(len(fileContent)), 10, ""},
		{1 << 40, 10, ""},
		{0, 0xffffffff, fileContent},
	} {
		if got := string(c.read(1, tc.off, tc.count)); got != tc.want {
			t.Errorf("read(%d, %d) = %q, want %q", tc.off, tc.count, got, tc.want)
		}
	}
	if e := c.fail(Tread, readMsg(1, 1<<63, 10)); e != unix.EINVAL {
		t.Errorf("read at a negative offset: %v", e)
	}
	if e := c.fail(Twrite, writeMsg(1, 0, []byte("x"))); e != unix.EBADF {
		t.Errorf("write to a read-only open: %v", e)
	}
	// A read is cut to the response buffer.
	c.rsize = 20
	if got := c.read(1, 0, 100); string(got) != fileContent[:20-rreadHeader] {
		t.Errorf("read into a 20-byte buffer: %q", got)
	}
	c.rsize = MaxMsize
	// And to msize.
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	c.walk(0, 2)
	c.ok(Tlcreate, lcreateMsg(2, "big", OReadWrite, 0o644, 0))
	for off := 0; off < len(big); {
		n := min(len(big)-off, 32<<10)
		off += int(c.write(2, uint64(off), big[off:off+n]))
	}
	if got := c.read(2, 0, uint32(len(big))); len(got) != 64<<10-rreadHeader || !bytes.Equal(got, big[:len(got)]) {
		t.Errorf("read of 256 KiB with msize 64 KiB returned %d bytes", len(got))
	}
	// Directories are opened but not read as files.
	c.walk(0, 3, "dir")
	c.lopen(3, OReadOnly|ODirectory)
	if e := c.fail(Tread, readMsg(3, 0, 10)); e != unix.EISDIR {
		t.Errorf("read of a directory: %v", e)
	}
	c.walk(0, 4, "dir")
	if e := c.fail(Tlopen, lopenMsg(4, OWriteOnly)); e != unix.EISDIR {
		t.Errorf("open of a directory for writing: %v", e)
	}
	c.walk(0, 5, "file")
	if e := c.fail(Tlopen, lopenMsg(5, OReadOnly|ODirectory)); e != unix.ENOTDIR {
		t.Errorf("O_DIRECTORY open of a file: %v", e)
	}
	if e := c.fail(Tlopen, lopenMsg(5, ONoAccess)); e != unix.EINVAL {
		t.Errorf("access mode 3: %v", e)
	}
}

func TestCreateWrite(t *testing.T) {
	c, export, _ := session(t, false)
	c.walk(0, 1, "dir")
	d := c.ok(Tlcreate, lcreateMsg(1, "new", OReadWrite|OCreate|OExcl, 0o640, NoUID))
	q := d.Qid()
	if d.U32() == 0 || q.Type != QtFile {
		t.Fatalf("Rlcreate %+v", q)
	}
	if q.Path != inode(t, export+"/dir/new") {
		t.Fatal("Rlcreate qid is not the new file's")
	}
	if n := c.write(1, 0, []byte("written by the guest")); n != 20 {
		t.Fatalf("Rwrite %d", n)
	}
	if n := c.write(1, 8, []byte("THE")); n != 3 {
		t.Fatalf("Rwrite %d", n)
	}
	got, err := os.ReadFile(export + "/dir/new")
	if err != nil || string(got) != "written THEthe guest" {
		t.Fatalf("host file %q, %v", got, err)
	}
	if got := c.read(1, 0, 100); string(got) != "written THEthe guest" {
		t.Fatalf("read back %q", got)
	}
	st, err := os.Stat(export + "/dir/new")
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v (the host umask must not apply), %v", st.Mode(), err)
	}
	c.ok(Tfsync, func(e *Encoder) { e.U32(1); e.U32(0) })
	c.ok(Tfsync, func(e *Encoder) { e.U32(1); e.U32(1) })
	c.ok(Tfsync, fidMsg(1)) // older clients
	if e := c.fail(Tfsync, fidMsg(0)); e != unix.EBADF {
		t.Errorf("fsync of an unopened fid: %v", e)
	}
	// The fid now is the file.
	if e := c.fail(Tlcreate, lcreateMsg(1, "again", OReadWrite, 0o644, 0)); e != unix.ENOTDIR && e != unix.EBUSY {
		t.Errorf("create from a file fid: %v", e)
	}
	c.walk(0, 2, "dir")
	if e := c.fail(Tlcreate, lcreateMsg(2, "new", OReadWrite|OCreate|OExcl, 0o644, 0)); e != unix.EEXIST {
		t.Errorf("exclusive create of an existing file: %v", e)
	}
	// Without O_EXCL an existing file is opened (and truncated if asked).
	c.ok(Tlcreate, lcreateMsg(2, "new", OReadWrite|OCreate|OTrunc, 0o600, 0))
	if st, _ := os.Stat(export + "/dir/new"); st.Size() != 0 || st.Mode().Perm() != 0o640 {
		t.Errorf("after O_TRUNC open: size %d mode %v", st.Size(), st.Mode())
	}
	c.walk(0, 3)
	if e := c.fail(Tlcreate, lcreateMsg(3, "dir", OReadWrite|OCreate, 0o644, 0)); e != unix.EISDIR {
		t.Errorf("create over a directory: %v", e)
	}
	if e := c.fail(Tlcreate, lcreateMsg(3, "escape", OReadWrite|OCreate, 0o644, 0)); e != unix.ELOOP && e != unix.EEXIST {
		t.Errorf("create over a symlink: %v", e)
	}
	// Appending.
	c.walk(0, 4, "file")
	c.lopen(4, OWriteOnly|OAppend)
	c.write(4, 0, []byte("more\n"))
	if got, _ := os.ReadFile(export + "/file"); string(got) != fileContent+"more\n" {
		t.Errorf("after an O_APPEND write: %q", got)
	}
	// A write whose count exceeds its data is malformed.
	if e := c.fail(Twrite, func(e *Encoder) { e.U32(4); e.U64(0); e.U32(100); e.Bytes([]byte("abc")) }); e != unix.EPROTO {
		t.Errorf("short Twrite: %v", e)
	}
}

func TestOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	c, export, _ := session(t, false)
	c.ok(Tattach, attachMsg(9, NoFid, "", 1234))
	c.walk(9, 1)
	c.ok(Tlcreate, lcreateMsg(1, "owned", OWriteOnly, 0o4755, 5678))
	c.ok(Tmkdir, mkdirMsg(9, "owneddir", 0o2775, 5678))
	c.ok(Tsymlink, symlinkMsg(9, "ownedlink", "target", 5678))
	c.ok(Tmknod, mknodMsg(9, "ownedfifo", unix.S_IFIFO|0o600, 0, 0, 5678))
	for name, perm := range map[string]uint32{"owned": 0o4755, "owneddir": 0o2775, "ownedlink": 0o777, "ownedfifo": 0o600} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(export, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 1234 || st.Gid != 5678 || st.Mode&0o7777 != perm {
			t.Errorf("%s: uid %d gid %d mode %o, want 1234 5678 %o", name, st.Uid, st.Gid, st.Mode&0o7777, perm)
		}
	}
	// setattr uid/gid.
	c.walk(0, 2, "file")
	c.ok(Tsetattr, setattrMsg(2, setattrArgs{valid: SetattrUID | SetattrGID, uid: 42, gid: 43}))
	var st unix.Stat_t
	unix.Lstat(export+"/file", &st)
	if st.Uid != 42 || st.Gid != 43 {
		t.Errorf("after setattr: %d:%d", st.Uid, st.Gid)
	}
	// Only the gid.
	c.ok(Tsetattr, setattrMsg(2, setattrArgs{valid: SetattrGID, uid: 7, gid: 44}))
	unix.Lstat(export+"/file", &st)
	if st.Uid != 42 || st.Gid != 44 {
		t.Errorf("after setattr gid: %d:%d", st.Uid, st.Gid)
	}
}

func TestMkdirReaddir(t *testing.T) {
	c, export, _ := session(t, false)
	d := c.ok(Tmkdir, mkdirMsg(0, "newdir", 0o751, NoUID))
	if q := d.Qid(); q.Type != QtDir || q.Path != inode(t, export+"/newdir") {
		t.Fatalf("Rmkdir qid %+v", q)
	}
	if st, err := os.Stat(export + "/newdir"); err != nil || !st.IsDir() || st.Mode().Perm() != 0o751 {
		t.Fatalf("host dir %v, %v", st, err)
	}
	if e := c.fail(Tmkdir, mkdirMsg(0, "newdir", 0o755, 0)); e != unix.EEXIST {
		t.Errorf("mkdir of an existing name: %v", e)
	}
	for i := range 40 {
		name := "entry-" + strings.Repeat("n", i)
		if err := os.WriteFile(filepath.Join(export, "newdir", name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{".", ".."}
	for i := range 40 {
		want = append(want, "entry-"+strings.Repeat("n", i))
	}
	slices.Sort(want)
	for _, tc := range []struct {
		name  string
		open  bool
		count uint32
	}{
		{"opened, one call", true, 60000},
		{"not opened", false, 60000},
		{"small pages", true, 100},
		{"one entry a page", false, 70},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.walk(0, 1, "newdir")
			defer c.ok(Tclunk, fidMsg(1))
			if tc.open {
				c.lopen(1, OReadOnly|ODirectory)
			}
			var names []string
			for _, de := range c.readdirAll(1, tc.count) {
				names = append(names, de.name)
				if de.name == "." && (de.qid.Type != QtDir || de.typ != unix.DT_DIR) {
					t.Errorf(". entry %+v", de)
				}
				if strings.HasPrefix(de.name, "entry-") && (de.qid.Type != QtFile || de.typ != unix.DT_REG ||
					de.qid.Path != inode(t, filepath.Join(export, "newdir", de.name))) {
					t.Errorf("entry %+v", de)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, want) {
				t.Fatalf("listed %v\nwant %v", names, want)
			}
		})
	}
	t.Run("root", func(t *testing.T) {
		ents := c.readdirAll(0, 8192)
		var names []string
		for _, de := range ents {
			names = append(names, de.name)
			if de.name == ".." && de.qid.Path != inode(t, export) {
				t.Errorf("the root's .. is inode %d, not the root's", de.qid.Path)
			}
			if de.name == "escape" && (de.qid.Type != QtSymlink || de.typ != unix.DT_LNK) {
				t.Errorf("symlink entry %+v", de)
			}
		}
		slices.Sort(names)
		want := []string{".", "..", "abssecret", "dir", "dirlink", "empty", "escape", "file", "newdir", "relsecret", "up"}
		if !slices.Equal(names, want) {
			t.Errorf("root lists %v", names)
		}
	})
	t.Run("of a file", func(t *testing.T) {
		c.walk(0, 2, "file")
		if e := c.fail(Treaddir, readMsg(2, 0, 1000)); e != unix.ENOTDIR {
			t.Errorf("%v", e)
		}
	})
	t.Run("cut to the buffer", func(t *testing.T) {
		c.rsize = 64
		ents := c.readdir(0, 0, 8192)
		c.rsize = MaxMsize
		if len(ents) == 0 || len(ents) > 2 {
			t.Errorf("%d entries in a 64-byte answer", len(ents))
		}
		if e := c.fail(Treaddir, readMsg(0, 0, 20)); e != unix.ERANGE {
			t.Errorf("readdir with room for no entry: %v", e)
		}
	})
}

func TestUnlinkRename(t *testing.T) {
	c, export, _ := session(t, false)
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(export, p)); return err == nil }
	c.walk(0, 1, "dir")
	c.walk(0, 2, "empty")
	// renameat dir/inner -> empty/moved
	c.ok(Trenameat, renameatMsg(1, "inner", 2, "moved"))
	if exists("dir/inner") || !exists("empty/moved") {
		t.Fatal("renameat did not move the file")
	}
	if e := c.fail(Trenameat, renameatMsg(1, "inner", 2, "moved")); e != unix.ENOENT {
		t.Errorf("renameat of a missing name: %v", e)
	}
	// A fid walked before a rename follows it.
	c.walk(0, 3, "dir", "sub", "deep")
	c.walk(0, 10, "dir", "sub")
	c.ok(Trenameat, renameatMsg(1, "sub", 2, "sub2"))
	c.lopen(3, OReadOnly)
	if got := c.read(3, 0, 10); string(got) != "deep" {
		t.Errorf("read after the parent's rename: %q", got)
	}
	c.walk(10, 4, "..")
	if q := c.getattr(4).qid.Path; q != inode(t, export+"/empty") {
		t.Errorf(".. after renames leads to %d, not empty/", q)
	}
	c.walk(10, 11, "deep")
	c.lopen(11, OReadOnly)
	// Trename moves a fid's file.
	c.walk(0, 5, "file")
	c.ok(Trename, renameMsg(5, 1, "renamed"))
	if exists("file") || !exists("dir/renamed") {
		t.Fatal("Trename did not move the file")
	}
	c.lopen(5, OReadOnly)
	if got := c.read(5, 0, 100); string(got) != fileContent {
		t.Errorf("read after Trename: %q", got)
	}
	if e := c.fail(Trename, renameMsg(0, 1, "root")); e != unix.EBUSY {
		t.Errorf("rename of the root: %v", e)
	}
	// unlinkat
	c.ok(Tunlinkat, unlinkatMsg(1, "renamed", 0))
	if exists("dir/renamed") {
		t.Fatal("unlinkat left the file")
	}
	if e := c.fail(Tunlinkat, unlinkatMsg(2, "sub2", 0)); e != unix.EISDIR {
		t.Errorf("unlink of a directory without AT_REMOVEDIR: %v", e)
	}
	if e := c.fail(Tunlinkat, unlinkatMsg(2, "sub2", AtRemoveDir)); e != unix.ENOTEMPTY && e != unix.EEXIST {
		t.Errorf("rmdir of a full directory: %v", e)
	}
	if e := c.fail(Tunlinkat, unlinkatMsg(0, "missing", 0)); e != unix.ENOENT {
		t.Errorf("unlink of a missing name: %v", e)
	}
	c.ok(Tunlinkat, unlinkatMsg(2, "moved", 0))
	c.ok(Tunlinkat, unlinkatMsg(10, "deep", 0))                 // fid 10 is empty/sub2 now
	c.ok(Tunlinkat, unlinkatMsg(4, "sub2", AtRemoveDir|0x4000)) // unknown bits ignored
	if exists("empty/sub2") {
		t.Fatal("rmdir left the directory")
	}
	// Open files stay readable after their name goes.
	if got := c.read(11, 0, 10); string(got) != "deep" {
		t.Errorf("read of an unlinked open file: %q", got)
	}
	// Tremove clunks whatever happens.
	if err := os.WriteFile(export+"/dir/keep", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.walk(0, 6, "dir")
	if e := c.fail(Tremove, fidMsg(6)); e != unix.ENOTEMPTY && e != unix.EEXIST {
		t.Errorf("remove of a full directory: %v", e)
	}
	if e := c.fail(Tclunk, fidMsg(6)); e != unix.EBADF {
		t.Errorf("fid after a failed Tremove: %v", e)
	}
	c.walk(0, 7, "up")
	c.ok(Tremove, fidMsg(7))
	if exists("up") {
		t.Error("Tremove left the symlink")
	}
	c.walk(0, 8)
	if e := c.fail(Tremove, fidMsg(8)); e != unix.EBUSY {
		t.Errorf("remove of the root: %v", e)
	}
	if !exists(".") {
		t.Fatal("the export is gone")
	}
}

func TestUnlinkRenameSubdir(t *testing.T) {
	c, export, _ := session(t, false)
	c.walk(0, 1, "dir", "sub")
	c.ok(Tunlinkat, unlinkatMsg(1, "deep", 0))
	c.walk(0, 2, "dir")
	c.ok(Tunlinkat, unlinkatMsg(2, "sub", AtRemoveDir))
	if _, err := os.Lstat(export + "/dir/sub"); err == nil {
		t.Fatal("rmdir left the directory")
	}
	if e := c.fail(Tlcreate, lcreateMsg(1, "x", OWriteOnly, 0o644, 0)); e != unix.ENOENT {
		t.Errorf("create in a removed directory: %v", e)
	}
}

func TestSymlinkLink(t *testing.T) {
	c, export, _ := session(t, false)
	d := c.ok(Tsymlink, symlinkMsg(0, "newlink", "../../etc/passwd", NoUID))
	if q := d.Qid(); q.Type != QtSymlink || q.Path != inode(t, export+"/newlink") {
		t.Fatalf("Rsymlink qid %+v", q)
	}
	if tgt, err := os.Readlink(export + "/newlink"); err != nil || tgt != "../../etc/passwd" {
		t.Fatalf("host link %q, %v", tgt, err)
	}
	c.walk(0, 1, "newlink")
	if got := c.ok(Treadlink, fidMsg(1)).String(); got != "../../etc/passwd" {
		t.Fatalf("Rreadlink %q", got)
	}
	c.walk(0, 2, "file")
	if e := c.fail(Treadlink, fidMsg(2)); e != unix.EINVAL {
		t.Errorf("readlink of a file: %v", e)
	}
	if e := c.fail(Tsymlink, symlinkMsg(0, "newlink", "x", 0)); e != unix.EEXIST {
		t.Errorf("symlink over an existing name: %v", e)
	}
	if e := c.fail(Tsymlink, symlinkMsg(0, "empty-target", "", 0)); e != unix.ENOENT {
		t.Errorf("symlink with an empty target: %v", e)
	}
	// The readlink answer must fit.
	long := strings.Repeat("a/", 1000)
	c.ok(Tsymlink, symlinkMsg(0, "longlink", long, 0))
	c.walk(0, 3, "longlink")
	c.rsize = 100
	if e := c.fail(Treadlink, fidMsg(3)); e != unix.ERANGE {
		t.Errorf("readlink into a small buffer: %v", e)
	}
	c.rsize = MaxMsize
	// Hard links.
	c.walk(0, 4, "dir")
	c.ok(Tlink, linkMsg(4, 2, "hardlink"))
	if inode(t, export+"/dir/hardlink") != inode(t, export+"/file") {
		t.Error("Tlink made no hard link")
	}
	if e := c.fail(Tlink, linkMsg(4, 4, "dirlink2")); e != unix.EPERM {
		t.Errorf("hard link to a directory: %v", e)
	}
	if e := c.fail(Tlink, linkMsg(2, 2, "x")); e != unix.ENOTDIR {
		t.Errorf("hard link into a file: %v", e)
	}
	// mknod: FIFOs yes, devices no.
	d = c.ok(Tmknod, mknodMsg(0, "fifo", unix.S_IFIFO|0o644, 0, 0, NoUID))
	if q := d.Qid(); q.Path != inode(t, export+"/fifo") {
		t.Errorf("Rmknod qid %+v", q)
	}
	for _, mode := range []uint32{unix.S_IFCHR | 0o666, unix.S_IFBLK | 0o666} {
		if e := c.fail(Tmknod, mknodMsg(0, "dev", mode, 8, 0, 0)); e != unix.EPERM {
			t.Errorf("mknod %o: %v, want EPERM", mode, e)
		}
	}
	if e := c.fail(Tmknod, mknodMsg(0, "dir2", unix.S_IFDIR|0o755, 0, 0, 0)); e != unix.EINVAL {
		t.Errorf("mknod of a directory: %v", e)
	}
	c.walk(0, 5, "fifo")
	if e := c.fail(Tlopen, lopenMsg(5, OReadOnly)); e != unix.EPERM {
		t.Errorf("open of a FIFO: %v", e)
	}
}

func TestSetattr(t *testing.T) {
	c, export, _ := session(t, false)
	c.walk(0, 1, "file")
	c.ok(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMode, mode: 0o600}))
	if st, _ := os.Stat(export + "/file"); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	c.ok(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrSize, size: 5}))
	if got, _ := os.ReadFile(export + "/file"); string(got) != "hello" {
		t.Errorf("after truncate: %q", got)
	}
	c.ok(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrSize, size: 1000}))
	if st, _ := os.Stat(export + "/file"); st.Size() != 1000 {
		t.Errorf("after extending: %d", st.Size())
	}
	c.ok(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMtime | SetattrMtimeSet | SetattrAtime | SetattrAtimeSet,
		aSec: 1000000000, aNsec: 5, mSec: 1234567890, mNsec: 123456789}))
	var st unix.Stat_t
	unix.Lstat(export+"/file", &st)
	if st.Mtim.Sec != 1234567890 || st.Mtim.Nsec != 123456789 || st.Atim.Sec != 1000000000 || st.Atim.Nsec != 5 {
		t.Errorf("times %v %v", st.Atim, st.Mtim)
	}
	a := c.getattr(1)
	if a.mtime != [2]uint64{1234567890, 123456789} {
		t.Errorf("Rgetattr mtime %v", a.mtime)
	}
	// MTIME without MTIME_SET is now.
	c.ok(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMtime, mSec: 1}))
	unix.Lstat(export+"/file", &st)
	if st.Mtim.Sec < 1700000000 {
		t.Errorf("mtime %v, want now", st.Mtim)
	}
	if e := c.fail(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMtime | SetattrMtimeSet, mNsec: 2e9})); e != unix.EINVAL {
		t.Errorf("nsec out of range: %v", e)
	}
	// Truncation through an open fid.
	c.walk(0, 2, "file")
	c.lopen(2, OReadWrite)
	c.ok(Tsetattr, setattrMsg(2, setattrArgs{valid: SetattrSize, size: 3}))
	if got := c.read(2, 0, 100); string(got) != "hel" {
		t.Errorf("after truncate through an open fid: %q", got)
	}
	// Directories and symlinks.
	c.walk(0, 3, "dir")
	c.ok(Tsetattr, setattrMsg(3, setattrArgs{valid: SetattrMode, mode: 0o700}))
	if st, _ := os.Stat(export + "/dir"); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode())
	}
	if e := c.fail(Tsetattr, setattrMsg(3, setattrArgs{valid: SetattrSize})); e != unix.EISDIR {
		t.Errorf("truncate of a directory: %v", e)
	}
	c.walk(0, 4, "escape")
	c.ok(Tsetattr, setattrMsg(4, setattrArgs{valid: SetattrMtime | SetattrMtimeSet, mSec: 1000}))
	var lst, rst unix.Stat_t
	unix.Lstat(export+"/escape", &lst)
	unix.Stat("/", &rst)
	if lst.Mtim.Sec != 1000 || rst.Mtim.Sec == 1000 {
		t.Errorf("setattr on a symlink must change the link, not its target")
	}
	if e := c.fail(Tsetattr, setattrMsg(4, setattrArgs{valid: SetattrSize})); e != unix.EINVAL {
		t.Errorf("truncate of a symlink: %v", e)
	}
	if e := c.fail(Tsetattr, setattrMsg(4, setattrArgs{valid: SetattrMode, mode: 0o600})); e != unix.EOPNOTSUPP {
		t.Errorf("chmod of a symlink: %v", e)
	}
	c.ok(Tsetattr, setattrMsg(0, setattrArgs{valid: SetattrCtime}))
}

func TestStatfsMisc(t *testing.T) {
	c, export, _ := session(t, false)
	d := c.ok(Tstatfs, fidMsg(0))
	typ, bsize, blocks := d.U32(), d.U32(), d.U64()
	d.U64()
	d.U64()
	d.U64()
	d.U64()
	d.U64()
	namelen := d.U32()
	var st unix.Statfs_t
	unix.Statfs(export, &st)
	if d.Err() != nil || d.Remaining() != 0 || typ != uint32(st.Type) || bsize != uint32(st.Bsize) || blocks != st.Blocks || namelen != uint32(st.Namelen) {
		t.Errorf("Rstatfs type %#x bsize %d blocks %d namelen %d (%v)", typ, bsize, blocks, namelen, d.Err())
	}
	c.ok(Tflush, func(e *Encoder) { e.U16(3) })
	c.walk(0, 1, "file")
	c.lopen(1, OReadWrite)
	if st := c.ok(Tlock, func(e *Encoder) {
		e.U32(1)
		e.U8(LockTypeWrlck)
		e.U32(0)
		e.U64(0)
		e.U64(0)
		e.U32(42)
		e.String("guest")
	}).U8(); st != LockSuccess {
		t.Errorf("Rlock status %d", st)
	}
	d = c.ok(Tgetlock, func(e *Encoder) {
		e.U32(1)
		e.U8(LockTypeWrlck)
		e.U64(10)
		e.U64(20)
		e.U32(42)
		e.String("guest")
	})
	if typ, start, length, pid, client := d.U8(), d.U64(), d.U64(), d.U32(), d.String(); typ != LockTypeUnlck || start != 10 || length != 20 || pid != 42 || client != "guest" {
		t.Errorf("Rgetlock %d %d %d %d %q", typ, start, length, pid, client)
	}
	for _, typ := range []uint8{Txattrwalk, Txattrcreate, Tauth, 200, 0, 255, 117} {
		if e := c.fail(typ, func(e *Encoder) { e.U32(0); e.U32(9); e.String("user.x") }); e != unix.EOPNOTSUPP {
			t.Errorf("type %d: %v, want EOPNOTSUPP", typ, e)
		}
	}
	c.ok(Tclunk, fidMsg(1))
	if e := c.fail(Tgetattr, getattrMsg(1)); e != unix.EBADF {
		t.Errorf("getattr of a clunked fid: %v", e)
	}
	if e := c.fail(Tclunk, fidMsg(1)); e != unix.EBADF {
		t.Errorf("second clunk: %v", e)
	}
}

func TestFidLimit(t *testing.T) {
	c, _, _ := session(t, false)
	for i := uint32(1); i < MaxFids; i++ {
		c.walk(0, i, "dir")
	}
	if e := c.fail(Twalk, walkMsg(0, MaxFids, "dir")); e != unix.EMFILE {
		t.Fatalf("fid %d: %v, want EMFILE", MaxFids+1, e)
	}
	if e := c.fail(Tattach, attachMsg(MaxFids, NoFid, "", 0)); e != unix.EMFILE {
		t.Fatalf("attach past the limit: %v", e)
	}
	// Walking a fid onto itself needs no new fid.
	c.walk(1, 1, "sub")
	c.ok(Tclunk, fidMsg(1))
	c.walk(0, MaxFids, "dir")
	for i := uint32(2); i <= MaxFids; i++ {
		c.ok(Tclunk, fidMsg(i))
	}
	if len(c.s.nodes) != 1 {
		t.Errorf("%d nodes live with only the root's fid", len(c.s.nodes))
	}
}

func TestNodeLimit(t *testing.T) {
	c, export, _ := session(t, false)
	// A chain of directories deeper than MaxNodes would pin a descriptor
	// per level: the walk stops at the limit.
	p := export
	const depth = 40
	for range depth {
		p = filepath.Join(p, "d")
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	live := len(c.s.nodes)
	c.walk(0, 1)
	for range depth / 8 {
		c.walk(1, 1, slices.Repeat([]string{"d"}, 8)...)
	}
	if got := len(c.s.nodes) - live; got != depth {
		t.Fatalf("%d nodes for a fid %d deep", got, depth)
	}
	c.walk(1, 1, slices.Repeat([]string{".."}, 16)...)
	c.walk(1, 1, slices.Repeat([]string{".."}, 16)...)
	c.walk(1, 1, slices.Repeat([]string{".."}, 16)...)
	if q := c.getattr(1).qid.Path; q != inode(t, export) {
		t.Fatal(".. 48 times from 40 deep is not the root")
	}
	if got := len(c.s.nodes); got != live {
		t.Fatalf("%d nodes after walking back, %d before", got, live)
	}
	c.ok(Tclunk, fidMsg(1))
	if got := len(c.s.nodes); got != live {
		t.Fatalf("%d nodes after clunk, %d before", got, live)
	}
}

func TestReadOnly(t *testing.T) {
	c, export, _ := session(t, true)
	c.walk(0, 1, "file")
	c.walk(0, 2, "dir")
	c.walk(0, 3, "file")
	for _, tc := range []struct {
		name  string
		typ   uint8
		build func(e *Encoder)
	}{
		{"open for writing", Tlopen, lopenMsg(1, OWriteOnly)},
		{"open read-write", Tlopen, lopenMsg(1, OReadWrite)},
		{"open with O_TRUNC", Tlopen, lopenMsg(1, OReadOnly|OTrunc)},
		{"create", Tlcreate, lcreateMsg(2, "new", OReadWrite|OCreate, 0o644, 0)},
		{"mkdir", Tmkdir, mkdirMsg(2, "new", 0o755, 0)},
		{"symlink", Tsymlink, symlinkMsg(2, "new", "x", 0)},
		{"mknod", Tmknod, mknodMsg(2, "new", unix.S_IFIFO|0o644, 0, 0, 0)},
		{"link", Tlink, linkMsg(2, 1, "new")},
		{"rename", Trename, renameMsg(1, 2, "new")},
		{"renameat", Trenameat, renameatMsg(0, "file", 2, "new")},
		{"unlinkat", Tunlinkat, unlinkatMsg(0, "file", 0)},
		{"setattr mode", Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMode, mode: 0o777})},
		{"setattr size", Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrSize})},
		{"setattr times", Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrMtime})},
		{"remove", Tremove, fidMsg(3)},
	} {
		if e := c.fail(tc.typ, tc.build); e != unix.EROFS {
			t.Errorf("%s: %v, want EROFS", tc.name, e)
		}
	}
	c.lopen(1, OReadOnly)
	if got := c.read(1, 0, 100); string(got) != fileContent {
		t.Errorf("read-only read %q", got)
	}
	if e := c.fail(Twrite, writeMsg(1, 0, []byte("x"))); e != unix.EROFS {
		t.Errorf("write: %v", e)
	}
	if got, _ := os.ReadFile(export + "/file"); string(got) != fileContent {
		t.Error("the file changed")
	}
	if st, _ := os.Stat(export + "/file"); st.Mode().Perm() != 0o644 {
		t.Error("the mode changed")
	}
	if _, err := os.Lstat(export + "/dir/new"); err == nil {
		t.Error("something was created")
	}
	c.readdirAll(2, 4096)
	c.ok(Tstatfs, fidMsg(0))
}

func TestContainment(t *testing.T) {
	c, export, outside := session(t, false)
	rootIno := inode(t, export)
	outsideIno := inode(t, outside)
	secretIno := inode(t, outside+"/secret")
	atRoot := func(fid uint32) bool {
		t.Helper()
		return c.getattr(fid).qid.Path == rootIno
	}
	t.Run("dot dot from the root", func(t *testing.T) {
		qids := c.walk(0, 1, "..")
		if len(qids) != 1 || qids[0].Path != rootIno || !atRoot(1) {
			t.Fatalf("walk .. from the root: %v", qids)
		}
		qids = c.walk(0, 2, slices.Repeat([]string{".."}, 16)...)
		if len(qids) != 16 || !atRoot(2) {
			t.Fatal("16 .. from the root left the root")
		}
		c.walk(0, 3, "dir", "sub", "..", "..", "..", "..", "..")
		if !atRoot(3) {
			t.Fatal("dir/sub/../../../../.. is not the root")
		}
		// Nothing outside is reachable by name after climbing.
		if e := c.fail(Twalk, walkMsg(2, 4, "outside")); e != unix.ENOENT {
			t.Fatalf("walk to the sibling of the export: %v", e)
		}
		for _, id := range []uint32{1, 2, 3} {
			c.ok(Tclunk, fidMsg(id))
		}
	})
	t.Run("symlink to the host root", func(t *testing.T) {
		for _, link := range []string{"escape", "up"} {
			rtyp, d := c.rpc(Twalk, walkMsg(0, 5, link, "etc"))
			if rtyp == Rwalk {
				if n := d.U16(); n != 1 {
					t.Fatalf("walk %s/etc walked %d names", link, n)
				}
				if q := d.Qid(); q.Type != QtSymlink {
					t.Fatalf("walk onto %s gave qid %+v, not the link", link, q)
				}
			}
			if c.errno(Tclunk, fidMsg(5)) == 0 {
				t.Fatalf("walk through %s made a fid", link)
			}
			c.walk(0, 5, link)
			if e := c.fail(Twalk, walkMsg(5, 6, "etc")); e != unix.ENOTDIR {
				t.Fatalf("walk from the link %s: %v", link, e)
			}
			if e := c.fail(Tlopen, lopenMsg(5, OReadOnly|ODirectory)); e != unix.ELOOP {
				t.Fatalf("open of %s: %v", link, e)
			}
			if e := c.fail(Treaddir, readMsg(5, 0, 4096)); e != unix.ENOTDIR {
				t.Fatalf("readdir of %s: %v", link, e)
			}
			if e := c.fail(Tlcreate, lcreateMsg(5, "x", OWriteOnly, 0o644, 0)); e != unix.ENOTDIR {
				t.Fatalf("create under %s: %v", link, e)
			}
			if e := c.fail(Tmkdir, mkdirMsg(5, "x", 0o755, 0)); e != unix.ENOTDIR {
				t.Fatalf("mkdir under %s: %v", link, e)
			}
			c.ok(Tclunk, fidMsg(5))
		}
	})
	t.Run("symlink to an outside file", func(t *testing.T) {
		for _, link := range []string{"abssecret", "relsecret"} {
			q := c.walk(0, 7, link)
			if q[0].Path == secretIno || q[0].Type != QtSymlink {
				t.Fatalf("walk onto %s reached %+v", link, q[0])
			}
			if c.getattr(7).size == uint64(len("secret")) && c.getattr(7).qid.Path == secretIno {
				t.Fatal("getattr followed the link")
			}
			for _, fl := range []uint32{OReadOnly, OReadWrite, OWriteOnly | OTrunc} {
				if e := c.fail(Tlopen, lopenMsg(7, fl)); e != unix.ELOOP {
					t.Fatalf("open %#o of %s: %v", fl, link, e)
				}
			}
			if e := c.fail(Tsetattr, setattrMsg(7, setattrArgs{valid: SetattrSize})); e != unix.EINVAL {
				t.Fatalf("truncate through %s: %v", link, e)
			}
			// lcreate of the link's name must not create or open the target.
			if e := c.fail(Tlcreate, lcreateMsg(0, link, OWriteOnly|OCreate|OTrunc, 0o644, 0)); e == 0 {
				t.Fatal("lcreate over a link succeeded")
			}
			c.ok(Tclunk, fidMsg(7))
		}
		if got, err := os.ReadFile(outside + "/secret"); err != nil || string(got) != "secret" {
			t.Fatalf("the outside file changed: %q, %v", got, err)
		}
	})
	t.Run("symlink to a directory inside", func(t *testing.T) {
		rtyp, d := c.rpc(Twalk, walkMsg(0, 8, "dirlink", "inner"))
		if rtyp == Rwalk && d.U16() == 2 {
			t.Fatal("walked through a symlink")
		}
		c.errno(Tclunk, fidMsg(8))
	})
	t.Run("names with slashes", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			typ   uint8
			build func(e *Encoder)
		}{
			{"walk ../outside", Twalk, walkMsg(0, 9, "../outside")},
			{"walk /etc", Twalk, walkMsg(0, 9, "/etc")},
			{"walk dir/../..", Twalk, walkMsg(0, 9, "dir/../..")},
			{"lcreate ../x", Tlcreate, lcreateMsg(0, "../outside/x", OWriteOnly, 0o644, 0)},
			{"mkdir ../x", Tmkdir, mkdirMsg(0, "../outside/x", 0o755, 0)},
			{"mkdir ..", Tmkdir, mkdirMsg(0, "..", 0o755, 0)},
			{"symlink ../x", Tsymlink, symlinkMsg(0, "../outside/x", "y", 0)},
			{"mknod ../x", Tmknod, mknodMsg(0, "../outside/x", unix.S_IFIFO|0o644, 0, 0, 0)},
			{"renameat to ../x", Trenameat, renameatMsg(0, "file", 0, "../outside/x")},
			{"renameat from ../x", Trenameat, renameatMsg(0, "../outside/secret", 0, "stolen")},
			{"renameat ..", Trenameat, renameatMsg(0, "..", 0, "stolen")},
			{"rename to ../x", Trename, renameMsg(0, 0, "../outside/x")},
			{"unlinkat ../x", Tunlinkat, unlinkatMsg(0, "../outside/secret", 0)},
			{"unlinkat ..", Tunlinkat, unlinkatMsg(0, "..", AtRemoveDir)},
			{"link ../x", Tlink, linkMsg(0, 0, "../outside/x")},
		} {
			if e := c.fail(tc.typ, tc.build); e != unix.EINVAL {
				t.Errorf("%s: %v, want EINVAL", tc.name, e)
			}
		}
		entries, err := os.ReadDir(outside)
		if err != nil || len(entries) != 1 || entries[0].Name() != "secret" {
			t.Fatalf("the outside directory changed: %v, %v", entries, err)
		}
	})
	t.Run("outside inodes never show", func(t *testing.T) {
		for _, de := range c.readdirAll(0, 8192) {
			if de.qid.Path == outsideIno || de.qid.Path == secretIno || (de.name == ".." && de.qid.Path != rootIno) {
				t.Errorf("entry %+v", de)
			}
		}
	})
}

func TestMalformed(t *testing.T) {
	c, _, _ := session(t, false)
	resp := make([]byte, 8192)
	for _, tc := range []struct {
		name  string
		req   []byte
		want  int // 0: no answer; else an Rlerror
		errno unix.Errno
	}{
		{"empty", nil, 0, 0},
		{"six bytes", []byte{6, 0, 0, 0, Tclunk, 1, 0}[:6], 0, 0},
		{"size below the header", []byte{3, 0, 0, 0, Tclunk, 1, 0}, 11, unix.EPROTO},
		{"size beyond the message", []byte{99, 0, 0, 0, Tclunk, 1, 0, 0, 0, 0, 0}, 11, unix.EPROTO},
		{"clunk without a fid", []byte{7, 0, 0, 0, Tclunk, 1, 0}, 11, unix.EPROTO},
		{"string past the end", []byte{13, 0, 0, 0, Tunlinkat, 1, 0, 0, 0, 0, 0, 0xff, 0xff}, 11, unix.EPROTO},
	} {
		n := c.s.Handle(tc.req, resp)
		if n != tc.want {
			t.Errorf("%s: answer of %d bytes, want %d", tc.name, n, tc.want)
			continue
		}
		if n > 0 {
			typ, body := checkAnswer(t, tc.req, resp, n)
			if typ != Rlerror || unix.Errno(binary.LittleEndian.Uint32(body)) != tc.errno {
				t.Errorf("%s: type %d errno %v", tc.name, typ, unix.Errno(binary.LittleEndian.Uint32(body)))
			}
		}
	}
	// A response buffer too small for Rlerror gets nothing.
	if n := c.s.Handle([]byte{11, 0, 0, 0, Tclunk, 1, 0, 0, 0, 0, 0}, make([]byte, 10)); n != 0 {
		t.Errorf("answer of %d bytes into 10", n)
	}
	// An answer that does not fit is ERANGE.
	c.rsize = 20
	if e := c.fail(Tgetattr, getattrMsg(0)); e != unix.ERANGE {
		t.Errorf("getattr into 20 bytes: %v", e)
	}
	// Trailing bytes after the size field's end are ignored.
	req := []byte{11, 0, 0, 0, Tclunk, 1, 0, 0, 0, 0, 0, 0xde, 0xad}
	c.walk(0, 0)
	if n := c.s.Handle(req, resp); n != HeaderSize || resp[4] != Rclunk {
		t.Errorf("clunk with trailing bytes: %d bytes, type %d", n, resp[4])
	}
}

func TestProtoDecoder(t *testing.T) {
	d := NewDecoder([]byte{1, 2, 0, 3, 0, 0, 0, 5, 0, 'a', 'b'})
	if d.U8() != 1 || d.U16() != 2 || d.U32() != 3 || d.Err() != nil {
		t.Fatal("decode")
	}
	if s := d.String(); s != "" || d.Err() == nil {
		t.Fatalf("string of 5 from 2 bytes: %q, %v", s, d.Err())
	}
	if d.U64() != 0 || d.Remaining() != 0 {
		t.Fatal("decoding goes on after an error")
	}
	e := NewEncoder(make([]byte, 10))
	e.Header(Rclunk, 3)
	e.String("abc")
	if !e.Overflow() {
		t.Fatal("no overflow")
	}
	if _, ok := e.Finish(); ok {
		t.Fatal("Finish of an overflowed message")
	}
	e = NewEncoder(make([]byte, 20))
	e.Header(Rattach, 9)
	e.Qid(Qid{Type: QtDir, Version: 1, Path: 2})
	if n, ok := e.Finish(); !ok || n != 20 {
		t.Fatalf("Finish %d %v", n, ok)
	}
}

func TestHostChanges(t *testing.T) {
	c, export, outside := session(t, false)
	// The host replaces a walked file: opening the fid must not open the
	// newcomer.
	c.walk(0, 1, "file")
	if err := os.WriteFile(export+"/replacement", []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(export+"/replacement", export+"/file"); err != nil {
		t.Fatal(err)
	}
	if e := c.fail(Tlopen, lopenMsg(1, OReadOnly)); e != unix.ESTALE {
		t.Errorf("open of a replaced file: %v, want ESTALE", e)
	}
	for _, tc := range []struct {
		name  string
		typ   uint8
		build func(e *Encoder)
	}{
		{"remove", Tremove, fidMsg(1)},
		{"rename", Trename, renameMsg(2, 0, "x")},
	} {
		c.walk(0, 2, "dir", "inner")
		os.Rename(export+"/dir/inner", export+"/dir/inner2")
		os.WriteFile(export+"/dir/inner", nil, 0o644)
		if e := c.fail(tc.typ, tc.build); e != unix.ESTALE {
			t.Errorf("%s of a replaced file: %v, want ESTALE", tc.name, e)
		}
		os.Rename(export+"/dir/inner2", export+"/dir/inner")
		c.errno(Tclunk, fidMsg(2))
	}
	// The host swaps a walked file for a symlink leading out: nothing
	// follows it.
	c.walk(0, 3, "dir", "inner")
	os.Remove(export + "/dir/inner")
	if err := os.Symlink(outside+"/secret", export+"/dir/inner"); err != nil {
		t.Fatal(err)
	}
	if e := c.fail(Tlopen, lopenMsg(3, OReadWrite|OTrunc)); e != unix.ELOOP && e != unix.ESTALE {
		t.Errorf("open of a file swapped for a symlink: %v", e)
	}
	if e := c.fail(Tsetattr, setattrMsg(3, setattrArgs{valid: SetattrSize})); e != unix.ELOOP && e != unix.ESTALE {
		t.Errorf("truncate of a file swapped for a symlink: %v", e)
	}
	if got, _ := os.ReadFile(outside + "/secret"); string(got) != "secret" {
		t.Fatalf("the outside file changed: %q", got)
	}
	// A directory the host swaps for a symlink: the fid keeps the
	// directory it walked to.
	c.walk(0, 4, "dir")
	os.Rename(export+"/dir", export+"/dir.old")
	os.Symlink(outside, export+"/dir")
	c.lopen(4, OReadOnly|ODirectory)
	for _, de := range c.readdirAll(4, 4096) {
		if de.name == "secret" {
			t.Fatal("the listing is the outside directory's")
		}
	}
	if rtyp, d := c.rpc(Twalk, walkMsg(0, 5, "dir", "secret")); rtyp == Rwalk && d.U16() == 2 {
		t.Fatal("walked through the swapped-in symlink")
	}
}

func TestSmallAnswerBufferActsNot(t *testing.T) {
	c, export, _ := session(t, false)
	c.rsize = HeaderSize + 4 // room for Rlerror only
	for _, tc := range []struct {
		name  string
		typ   uint8
		build func(e *Encoder)
	}{
		{"walk", Twalk, walkMsg(0, 1, "dir")},
		{"attach", Tattach, attachMsg(2, NoFid, "", 0)},
		{"mkdir", Tmkdir, mkdirMsg(0, "made", 0o755, 0)},
		{"symlink", Tsymlink, symlinkMsg(0, "made", "x", 0)},
		{"mknod", Tmknod, mknodMsg(0, "made", unix.S_IFIFO|0o644, 0, 0, 0)},
		{"lcreate", Tlcreate, lcreateMsg(0, "made", OWriteOnly, 0o644, 0)},
	} {
		if e := c.fail(tc.typ, tc.build); e != unix.ERANGE {
			t.Errorf("%s: %v, want ERANGE", tc.name, e)
		}
	}
	if _, err := os.Lstat(export + "/made"); err == nil {
		t.Error("something was made")
	}
	c.rsize = MaxMsize
	for _, fid := range []uint32{1, 2} {
		if e := c.fail(Tclunk, fidMsg(fid)); e != unix.EBADF {
			t.Errorf("fid %d exists: %v", fid, e)
		}
	}
}
