package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DefaultRoot is the state root when --root is not given.
const DefaultRoot = "/run/microvm-oci"

// ErrExist is wrapped when create names an ID that is taken.
var ErrExist = errors.New("container already exists")

// ErrNotExist is wrapped when an ID names no container.
var ErrNotExist = errors.New("container does not exist")

// Store is the state directory: ROOT/ID/state.json per container.
type Store struct {
	Root string
}

func (s *Store) dir(id string) string { return filepath.Join(s.Root, id) }

// StartFIFO is the path of the fifo on which a created container's VMM
// waits for start, inside its state directory.
func (s *Store) StartFIFO(id string) string { return filepath.Join(s.dir(id), "start.fifo") }

// ReadyMark is the file the VMM makes when the guest's agent starts the
// workload; start waits for it.
func (s *Store) ReadyMark(id string) string { return filepath.Join(s.dir(id), "ready") }

// Reserve makes the state directory of a new container, failing with
// ErrExist when the ID is taken. Mkdir is atomic: two creates of one ID
// cannot both win.
func (s *Store) Reserve(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := os.MkdirAll(s.Root, 0o711); err != nil {
		return fmt.Errorf("state root: %w", err)
	}
	if err := os.Mkdir(s.dir(id), 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("container %q: %w", id, ErrExist)
		}
		return fmt.Errorf("state dir: %w", err)
	}
	return nil
}

// Save writes st atomically (temp file and rename).
func (s *Store) Save(st *State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := filepath.Join(s.dir(st.ID), ".state.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir(st.ID), "state.json")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// Load reads a container's saved state (its status as last written; see
// Runtime.State for the live one).
func (s *Store) Load(id string) (*State, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(s.dir(id), "state.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("container %q: %w", id, ErrNotExist)
		}
		return nil, fmt.Errorf("load state: %w", err)
	}
	st, err := ParseState(data)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", id, err)
	}
	if st.ID != id {
		return nil, fmt.Errorf("container %q: state file names %q", id, st.ID)
	}
	return st, nil
}

// Remove deletes a container's state directory.
func (s *Store) Remove(id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	if err := os.RemoveAll(s.dir(id)); err != nil {
		return fmt.Errorf("remove state: %w", err)
	}
	return nil
}

// IDs lists the containers with a state directory, sorted.
func (s *Store) IDs() ([]string, error) {
	ents, err := os.ReadDir(s.Root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && ValidateID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// procStart returns the start time of pid (clock ticks since boot) from
// /proc/PID/stat, or an error when there is no such process.
func procStart(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: no process", pid)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("pid %d: exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// alive reports whether st's process still runs (the same process: the
// start time must match when it was recorded).
func alive(st *State) bool {
	start, err := procStart(st.Pid)
	if err != nil {
		return false
	}
	return st.PidStart == 0 || start == st.PidStart
}
