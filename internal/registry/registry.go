// Package registry is the table of running microvm VMs that other shells
// see: one JSON file per VM in a state directory (like runc's --root),
// named after the VM. The process that runs a VM holds an exclusive flock
// on its file for as long as it lives, so an entry whose lock can be taken
// belongs to a process that is gone — it crashed, was killed, or ended
// under a seccomp filter that keeps it from removing its own file — and is
// pruned by the next reader. A reused pid can never be mistaken for the VM.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Entry describes one running VM.
type Entry struct {
	Name        string    `json:"name"`
	PID         int       `json:"pid"`
	Image       string    `json:"image"`
	CPUs        int       `json:"cpus"`
	MemoryBytes uint64    `json:"memory_bytes"`
	Created     time.Time `json:"created"`
	Jailed      bool      `json:"jailed,omitempty"`
}

var (
	// ErrNotFound is returned for a name no running VM has.
	ErrNotFound = errors.New("no such VM")
	// ErrNameInUse is returned when a running VM already has the name.
	ErrNameInUse = errors.New("name in use")
	// ErrBadName is returned for a name that is not allowed.
	ErrBadName = errors.New("bad VM name")
)

// ValidName checks a VM name: 1-63 letters, digits, '_', '.' or '-',
// starting with a letter or digit (docker's rule, shorter). A loop rather
// than a regexp: compiling `{0,62}` at package init cost every microvm
// process 1.4 ms (GODEBUG=inittrace=1), on the boot path too.
func ValidName(name string) error {
	if !validName(name) {
		return fmt.Errorf("%w %q: want 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", ErrBadName, name)
	}
	return nil
}

func validName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Dir is a state directory.
type Dir struct {
	path string
}

// Open opens (creating, mode 0700) the state directory at path.
func Open(path string) (*Dir, error) {
	if path == "" {
		return nil, errors.New("registry: empty state directory path")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return &Dir{path: path}, nil
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

func (d *Dir) file(name string) string { return filepath.Join(d.path, name+".json") }

// lockDir serialises the mutations of the directory (register, prune).
func (d *Dir) lockDir() (func(), error) {
	f, err := os.OpenFile(filepath.Join(d.path, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("state directory: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// Registration is a live entry: its file stays locked until Close or the
// process's end.
type Registration struct {
	f    *os.File
	path string
}

// Register adds e under e.Name. A stale entry of that name is replaced; a
// live one is ErrNameInUse.
func (d *Dir) Register(e Entry) (*Registration, error) {
	if err := ValidName(e.Name); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	unlock, err := d.lockDir()
	if err != nil {
		return nil, err
	}
	defer unlock()
	path := d.file(e.Name)
	if live, err := d.pruneLocked(path); err != nil {
		return nil, err
	} else if live {
		return nil, fmt.Errorf("%w: a VM named %q is running (microvm ps lists them)", ErrNameInUse, e.Name)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", e.Name, err)
	}
	// Readers take the directory lock before they judge an entry, so the
	// file is never seen unlocked between its creation and this flock.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("register %s: lock: %w", e.Name, err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("register %s: %w", e.Name, err)
	}
	return &Registration{f: f, path: path}, nil
}

// Close removes the entry and releases it. A process that cannot remove
// files any more (under a seccomp filter) calls Release instead and leaves
// the file to be pruned.
func (r *Registration) Close() error {
	err := os.Remove(r.path)
	r.f.Close()
	return err
}

// Release gives up the lock without removing the file: the entry is stale
// from now on and the next reader prunes it. It makes no system call but
// close.
func (r *Registration) Release() { r.f.Close() }

// pruneLocked removes the entry at path if its process is gone and says
// whether a live one is there. The caller holds the directory lock.
func (d *Dir) pruneLocked(path string) (live bool, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("state directory: %w", err)
	}
	defer f.Close()
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
	case errors.Is(err, unix.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("state directory: lock %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("state directory: remove stale %s: %w", path, err)
	}
	return false, nil
}

// List returns the running VMs by name, pruning stale entries on the way.
// A missing directory is an empty list.
func (d *Dir) List() ([]Entry, error) {
	names, err := filepath.Glob(filepath.Join(d.path, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	unlock, err := d.lockDir()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []Entry
	for _, path := range names {
		live, err := d.pruneLocked(path)
		if err != nil {
			return nil, err
		}
		if !live {
			continue
		}
		e, err := readEntry(path)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Get returns the running VM called name.
func (d *Dir) Get(name string) (Entry, error) {
	if err := ValidName(name); err != nil {
		return Entry{}, err
	}
	unlock, err := d.lockDir()
	if err != nil {
		return Entry{}, err
	}
	defer unlock()
	path := d.file(name)
	live, err := d.pruneLocked(path)
	if err != nil {
		return Entry{}, err
	}
	if !live {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return readEntry(path)
}

// Alive says whether the VM called name is still running (its process
// holds its entry).
func (d *Dir) Alive(name string) (bool, error) {
	_, err := d.Get(name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func readEntry(path string) (Entry, error) {
	var e Entry
	data, err := os.ReadFile(path)
	if err != nil {
		return e, fmt.Errorf("state directory: %w", err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("state directory: %s: %w", path, err)
	}
	if want := strings.TrimSuffix(filepath.Base(path), ".json"); e.Name != want {
		return e, fmt.Errorf("state directory: %s holds the entry of %q", path, e.Name)
	}
	return e, nil
}
