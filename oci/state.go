// Package oci is microvm's OCI runtime: the container lifecycle of the OCI
// runtime specification (create, start, state, kill, delete) over a state
// directory, and the translation of a bundle's config.json into what a
// micro-VM needs (a VM plan and the guest agent's configuration).
//
// The package holds no global state: a Runtime names its state root.
package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// SpecVersion is the runtime-spec version reported in state.
const SpecVersion = "1.0.2"

// Status is a container's state in the OCI lifecycle.
type Status string

// The statuses of the runtime specification (runtime.md, "State").
const (
	StatusCreating Status = "creating"
	StatusCreated  Status = "created"
	StatusRunning  Status = "running"
	StatusStopped  Status = "stopped"
)

// Op is a lifecycle operation that depends on the container's status.
type Op string

// Lifecycle operations.
const (
	OpStart       Op = "start"
	OpKill        Op = "kill"
	OpDelete      Op = "delete"
	OpForceDelete Op = "delete --force"
)

// ErrState is wrapped by every error that refuses an operation because of
// the container's status.
var ErrState = errors.New("operation not allowed in this state")

// Check reports whether op is allowed in status s, as the runtime
// specification says: start only a created container, kill only a created
// or running one, delete only a stopped one (any, with force).
func (s Status) Check(op Op) error {
	ok := false
	switch op {
	case OpStart:
		ok = s == StatusCreated
	case OpKill:
		ok = s == StatusCreated || s == StatusRunning
	case OpDelete:
		ok = s == StatusStopped
	case OpForceDelete:
		ok = s.valid()
	default:
		return fmt.Errorf("unknown operation %q", op)
	}
	if !ok {
		return fmt.Errorf("cannot %s a container that is %s: %w", op, s, ErrState)
	}
	return nil
}

func (s Status) valid() bool {
	switch s {
	case StatusCreating, StatusCreated, StatusRunning, StatusStopped:
		return true
	}
	return false
}

// State is the OCI state of a container, as `state` prints it, plus the
// fields microvm keeps for itself.
type State struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      Status            `json:"status"`
	Pid         int               `json:"pid,omitempty"`
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Created is when create finished (runc reports it too).
	Created time.Time `json:"created"`
	// PidStart is the VMM process's start time in clock ticks since boot
	// (/proc/PID/stat field 22): a recycled pid is not taken for ours.
	PidStart uint64 `json:"microvmPidStart,omitempty"`
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_+\-.]+$`)

// ValidateID checks a container ID: letters, digits and _+-. only, not "."
// or "..", so it is always one safe path element.
func ValidateID(id string) error {
	if len(id) > 1024 || !idRE.MatchString(id) || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q (want [A-Za-z0-9_+.-]+)", id)
	}
	return nil
}

// ParseState decodes and checks a state file's bytes.
func ParseState(data []byte) (*State, error) {
	var s State
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("state: trailing data after the JSON object")
	}
	if err := ValidateID(s.ID); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if !s.Status.valid() {
		return nil, fmt.Errorf("state: unknown status %q", s.Status)
	}
	if s.Pid < 0 {
		return nil, fmt.Errorf("state: negative pid %d", s.Pid)
	}
	return &s, nil
}
