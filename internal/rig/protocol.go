package rig

import (
	"strconv"
	"strings"
	"time"
)

// Protocol events, as init.sh writes them on the results port after the
// "RIG:<nonce> " prefix.
const (
	evHello = "HELLO"
	evKVM   = "KVM"
	evBegin = "BEGIN"
	evOut   = "O"
	evEnd   = "END"
	evDone  = "DONE"
)

// maxOutput bounds how much output the parser keeps per command and how
// many stray lines it keeps, so a runaway guest cannot exhaust host memory.
const (
	maxOutput     = 16 << 20
	maxStrayLines = 1000
)

// parser turns results-port lines into a Result. It never fails: lines it
// cannot place are kept in Result.Stray, malformed events are ignored there
// too, and what a missing event leaves undone shows as a command with Done
// false or a Result with Complete false.
type parser struct {
	prefix string
	start  time.Time
	res    *Result
	cur    *CommandResult
	out    strings.Builder // output of cur so far
	begun  time.Time
}

func newParser(nonce string, start time.Time, res *Result) *parser {
	return &parser{prefix: "RIG:" + nonce + " ", start: start, res: res}
}

// line feeds one line (without its newline) that arrived at time at.
func (p *parser) line(raw string, at time.Time) {
	l := strings.TrimSuffix(raw, "\r")
	rest, ok := strings.CutPrefix(l, p.prefix)
	if !ok {
		// Tolerate junk before the prefix on the same line (a UART that
		// was not idle when init opened it); anything else is stray.
		if i := strings.Index(l, p.prefix); i > 0 {
			p.line(l[i:], at)
			return
		}
		if l != "" {
			p.stray(l)
		}
		return
	}
	ev, arg, _ := strings.Cut(rest, " ")
	switch ev {
	case evOut:
		if p.cur == nil {
			p.stray(l)
			return
		}
		if p.out.Len()+len(arg)+1 > maxOutput {
			p.cur.Truncated = true
			return
		}
		p.out.WriteString(arg)
		p.out.WriteByte('\n')
	case evHello:
		if p.res.Hello == 0 {
			p.res.Hello = at.Sub(p.start)
			p.res.L1Uptime.Hello = parseUptime(arg)
		}
	case evKVM:
		f := strings.SplitN(arg, " ", 3)
		p.res.KVMChecked = true
		p.res.KVM = f[0] == "ok"
		p.res.ScriptStart = at.Sub(p.start)
		if len(f) > 1 {
			p.res.L1Uptime.KVM = parseUptime(f[1])
		}
		if len(f) > 2 {
			p.res.KVMDetail = strings.TrimSpace(f[2])
		}
	case evBegin:
		f := strings.Fields(arg)
		if len(f) == 0 {
			p.stray(l)
			return
		}
		p.endCurrent(at) // a BEGIN without END before it: close that one
		p.res.Commands = append(p.res.Commands, CommandResult{Name: f[0], Status: -1})
		p.cur = &p.res.Commands[len(p.res.Commands)-1]
		p.begun = at
	case evEnd:
		f := strings.Fields(arg)
		if p.cur == nil || len(f) < 2 || f[0] != p.cur.Name {
			p.stray(l)
			return
		}
		st, err := strconv.Atoi(f[1])
		if err != nil {
			p.stray(l)
			return
		}
		p.cur.Status = st
		p.cur.Done = true
		p.endCurrent(at)
	case evDone:
		p.endCurrent(at)
		p.res.Complete = true
		p.res.L1Uptime.Done = parseUptime(arg)
	default:
		p.stray(l)
	}
}

// endCurrent closes the running command, if any, at time at.
func (p *parser) endCurrent(at time.Time) {
	if p.cur == nil {
		return
	}
	p.cur.Elapsed = at.Sub(p.begun)
	p.cur.Output = p.out.String()
	p.out.Reset()
	p.cur = nil
}

// finish closes a command that never ended (the run stopped inside it).
func (p *parser) finish(at time.Time) { p.endCurrent(at) }

func (p *parser) stray(l string) {
	if len(p.res.Stray) < maxStrayLines {
		p.res.Stray = append(p.res.Stray, l)
	}
}

// parseUptime reads the first field of /proc/uptime ("12.34") as a duration;
// zero when it is not a number.
func parseUptime(s string) time.Duration {
	s, _, _ = strings.Cut(strings.TrimSpace(s), " ")
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 1e9 {
		return 0
	}
	return time.Duration(f*1000) * time.Millisecond
}
