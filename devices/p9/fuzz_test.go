package p9

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fuzzTree makes tmp/a/export (the export, with files, directories and
// symbolic links leading out of it), tmp/a/outside and tmp/top: what the
// guest must never change.
func fuzzTree(t testing.TB) (tmp, export string) {
	t.Helper()
	tmp = t.TempDir()
	a := filepath.Join(tmp, "a")
	export = filepath.Join(a, "export")
	files := map[string]string{
		"export/file":          fileContent,
		"export/dir/inner":     "inner",
		"export/dir/sub/deep":  "deep",
		"outside/secret":       "secret",
		"outside/dir/nested":   "nested",
		"../top":               "top",
		"export/empty/.hidden": "",
	}
	for p, content := range files {
		full := filepath.Join(a, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"escape":    "/",
		"up":        "../outside",
		"up2":       "../..",
		"abssecret": filepath.Join(a, "outside", "secret"),
		"relsecret": "../outside/secret",
		"dirlink":   "dir",
		"tmp":       tmp,
	} {
		if err := os.Symlink(target, filepath.Join(export, link)); err != nil {
			t.Fatal(err)
		}
	}
	return tmp, export
}

// snapshot describes everything under dir except skip (a path inside
// it), not following links: names, types, modes, owners, sizes, times,
// link targets and contents.
func snapshot(t testing.TB, dir, skip string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		// Not the access time: reading for the snapshot changes it.
		sys := st.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d ino %d nlink %d owner %d:%d mtime %v ctime %v\n", p, st.Mode(), st.Size(),
			sys.Ino, sys.Nlink, sys.Uid, sys.Gid, sys.Mtim, sys.Ctim)
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " -> %s\n", target)
		case st.Mode().IsRegular():
			content, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q\n", content)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// fuzzMessages builds a message sequence with the encoder.
func fuzzMessages(msgs ...func(e *Encoder) (uint8, func(e *Encoder))) []byte {
	var out []byte
	for i, m := range msgs {
		buf := make([]byte, 1<<16)
		e := NewEncoder(buf)
		typ, build := m(e)
		e.Header(typ, uint16(i+10))
		build(e)
		n, ok := e.Finish()
		if !ok {
			panic("seed message too long")
		}
		out = append(out, buf[:n]...)
	}
	return out
}

func msg(typ uint8, build func(e *Encoder)) func(e *Encoder) (uint8, func(e *Encoder)) {
	return func(*Encoder) (uint8, func(e *Encoder)) { return typ, build }
}

func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// FuzzHandle feeds message sequences to a server exporting a small tree.
// The input's first byte picks the response buffer size (and, with bit
// 7, a read-only export); the rest is split into messages by their size
// fields. The server is negotiated and fid 0 attached first. Every answer
// must be a well-formed R-message that fits the buffer, the server must
// stay within its limits, nothing outside the export may change (nothing
// inside either when read-only), and Close must release every
// descriptor.
func FuzzHandle(f *testing.F) {
	version := msg(Tversion, func(e *Encoder) { e.U32(8192); e.String(Version) })
	f.Add(append([]byte{0}, fuzzMessages(
		version,
		msg(Tattach, attachMsg(1, NoFid, "", 0)),
		msg(Twalk, walkMsg(1, 2, "dir", "inner")),
		msg(Tlopen, lopenMsg(2, OReadOnly)),
		msg(Tread, readMsg(2, 0, 100)),
		msg(Tgetattr, getattrMsg(2)),
		msg(Tclunk, fidMsg(2)),
	)...))
	f.Add(append([]byte{1}, fuzzMessages(
		msg(Twalk, walkMsg(0, 1, "dir")),
		msg(Tlcreate, lcreateMsg(1, "new", OReadWrite|OCreate, 0o644, 0)),
		msg(Twrite, writeMsg(1, 0, []byte("data"))),
		msg(Tread, readMsg(1, 0, 100)),
		msg(Tsetattr, setattrMsg(1, setattrArgs{valid: SetattrSize | SetattrMode | SetattrMtime, size: 2, mode: 0o600})),
		msg(Tmkdir, mkdirMsg(0, "newdir", 0o755, 0)),
		msg(Tsymlink, symlinkMsg(0, "ln", "../../outside/secret", 0)),
		msg(Trenameat, renameatMsg(0, "file", 0, "file2")),
		msg(Tunlinkat, unlinkatMsg(0, "file2", 0)),
		msg(Treaddir, readMsg(0, 0, 4096)),
		msg(Tstatfs, fidMsg(0)),
	)...))
	f.Add(append([]byte{2}, fuzzMessages(
		msg(Twalk, walkMsg(0, 1, "up2", "a")),
		msg(Twalk, walkMsg(0, 2, "..", "..", "a", "outside")),
		msg(Twalk, walkMsg(0, 3, "escape")),
		msg(Tlopen, lopenMsg(3, OReadOnly|ODirectory)),
		msg(Treadlink, fidMsg(3)),
		msg(Twalk, walkMsg(0, 4, "abssecret")),
		msg(Tlopen, lopenMsg(4, OWriteOnly|OTrunc)),
		msg(Tlcreate, lcreateMsg(0, "relsecret", OWriteOnly|OCreate|OTrunc, 0o644, 0)),
		msg(Tlink, linkMsg(0, 4, "hard")),
		msg(Tremove, fidMsg(3)),
		msg(Trename, renameMsg(0, 0, "x")),
	)...))
	f.Add(append([]byte{0x80}, fuzzMessages(
		msg(Twalk, walkMsg(0, 1, "file")),
		msg(Tlopen, lopenMsg(1, OReadWrite)),
		msg(Tmknod, mknodMsg(0, "fifo", 0o10644, 0, 0, 0)),
		msg(Tlock, func(e *Encoder) {
			e.U32(1)
			e.U8(1)
			e.U32(0)
			e.U64(0)
			e.U64(0)
			e.U32(1)
			e.String("c")
		}),
		msg(Tgetlock, func(e *Encoder) {
			e.U32(1)
			e.U8(1)
			e.U64(0)
			e.U64(0)
			e.U32(1)
			e.String("c")
		}),
		msg(Tfsync, fidMsg(1)),
		msg(Txattrwalk, func(e *Encoder) { e.U32(0); e.U32(5); e.String("user.a") }),
		msg(Tflush, func(e *Encoder) { e.U16(1) }),
	)...))
	f.Add([]byte{3, 7, 0, 0, 0, 120, 1, 0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		sel := byte(0)
		if len(data) > 0 {
			sel, data = data[0], data[1:]
		}
		// The response buffers the first byte picks.
		sizes := [...]int{MaxMsize, 8192, 100, 11, 10, 4096, 30, 24}
		respSize := sizes[int(sel&0x7f)%len(sizes)]
		readOnly := sel&0x80 != 0
		tmp, export := fuzzTree(t)
		before := snapshot(t, tmp, export)
		beforeExport := snapshot(t, export, "")
		fds := openFds(t)

		s, err := NewServer(export, readOnly)
		if err != nil {
			t.Fatal(err)
		}
		c := newTestClient(t, s)
		c.version(64<<10, Version)
		c.attach(0)
		resp := make([]byte, respSize)
		for i := 0; len(data) > 0 && i < 64; i++ {
			n := len(data)
			if len(data) >= 4 {
				n = min(max(int(binary.LittleEndian.Uint32(data)), 4), len(data))
			}
			req := data[:n]
			data = data[n:]
			clear(resp)
			m := s.Handle(req, resp)
			if len(req) < HeaderSize || len(resp) < HeaderSize+4 {
				if m != 0 {
					t.Fatalf("answer of %d bytes to %d bytes into %d", m, len(req), len(resp))
				}
				continue
			}
			typ, _ := checkAnswer(t, req, resp, m)
			if typ != Rlerror && typ != req[4]+1 {
				t.Fatalf("answer type %d to type %d", typ, req[4])
			}
			if len(s.fids) > MaxFids || len(s.nodes) > MaxNodes {
				t.Fatalf("%d fids, %d nodes", len(s.fids), len(s.nodes))
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if got := openFds(t); got != fds {
			t.Errorf("%d descriptors open after Close, %d before the server", got, fds)
		}
		if after := snapshot(t, tmp, export); after != before {
			t.Fatalf("outside the export changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if readOnly {
			if after := snapshot(t, export, ""); after != beforeExport {
				t.Fatalf("a read-only export changed:\nbefore:\n%s\nafter:\n%s", beforeExport, after)
			}
		}
		// Make what the guest left removable by t.TempDir's cleanup.
		filepath.WalkDir(export, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
}
