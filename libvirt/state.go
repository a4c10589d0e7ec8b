package libvirt

import (
	"encoding/json"
	"fmt"
)

// State is a domain's state, numbered as libvirt's virDomainState.
type State int

// The domain states, with the words virsh prints for them.
const (
	StateNoState     State = 0 // "no state"
	StateRunning     State = 1 // "running"
	StateBlocked     State = 2 // "idle"
	StatePaused      State = 3 // "paused"
	StateShutdown    State = 4 // "in shutdown"
	StateShutoff     State = 5 // "shut off"
	StateCrashed     State = 6 // "crashed"
	StatePMSuspended State = 7 // "pmsuspended"
)

var stateWords = [...]string{
	StateNoState:     "no state",
	StateRunning:     "running",
	StateBlocked:     "idle",
	StatePaused:      "paused",
	StateShutdown:    "in shutdown",
	StateShutoff:     "shut off",
	StateCrashed:     "crashed",
	StatePMSuspended: "pmsuspended",
}

// String returns the word virsh uses for the state ("shut off", "idle", ...).
// A number libvirt may add later reads "no state", as in virsh.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateWords) {
		return stateWords[s]
	}
	return "no state"
}

// Active reports whether a domain in this state has a running hypervisor
// process (an Id).
func (s State) Active() bool {
	switch s {
	case StateRunning, StateBlocked, StatePaused, StateShutdown, StatePMSuspended:
		return true
	}
	return false
}

// MarshalJSON writes the state as its virsh word.
func (s State) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads a virsh word (or a number).
func (s *State) UnmarshalJSON(b []byte) error {
	var w string
	if err := json.Unmarshal(b, &w); err != nil {
		var n int
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("domain state: %w", err)
		}
		*s = State(n)
		return nil
	}
	st, err := ParseState(w)
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// ParseState maps a virsh state word back to a State.
func ParseState(w string) (State, error) {
	for i, word := range stateWords {
		if word == w {
			return State(i), nil
		}
	}
	return StateNoState, fmt.Errorf("unknown domain state %q", w)
}

// lifecycle event numbers (virDomainEventType).
const (
	eventDefined     = 0
	eventUndefined   = 1
	eventStarted     = 2
	eventSuspended   = 3
	eventResumed     = 4
	eventStopped     = 5
	eventShutdown    = 6
	eventPMSuspended = 7
	eventCrashed     = 8
)

var eventWords = [...]string{
	eventDefined:     "defined",
	eventUndefined:   "undefined",
	eventStarted:     "started",
	eventSuspended:   "suspended",
	eventResumed:     "resumed",
	eventStopped:     "stopped",
	eventShutdown:    "shutdown",
	eventPMSuspended: "pmsuspended",
	eventCrashed:     "crashed",
}

// stoppedDetails names the detail of a "stopped" event (virDomainEventStoppedDetailType).
var stoppedDetails = [...]string{
	"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot",
}

// EventName returns a readable name of a lifecycle event and its detail,
// e.g. "stopped (shutdown)".
func EventName(event, detail int32) string {
	name := fmt.Sprintf("event %d", event)
	if event >= 0 && int(event) < len(eventWords) {
		name = eventWords[event]
	}
	if event == eventStopped && detail >= 0 && int(detail) < len(stoppedDetails) {
		return name + " (" + stoppedDetails[detail] + ")"
	}
	return name
}
