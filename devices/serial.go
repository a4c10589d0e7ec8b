package devices

import (
	"io"
	"sync"
)

// Serial is a 16550A UART as guests drive it: transmit goes straight to an
// io.Writer (the transmitter is always empty), receive comes from Enqueue
// into a bounded FIFO, and interrupts (received data, transmitter empty)
// are raised on an optional IRQ. It sits at 8 consecutive ports (COM1 is
// 0x3f8, IRQ 4).
type Serial struct {
	mu  sync.Mutex
	out io.Writer
	irq IRQ

	ier, lcr, mcr, scr, dll, dlm, fcr byte
	thrEmptyPending                   bool // THRE interrupt raised and not yet acknowledged
	in                                []byte
	inCap                             int
	outErr                            error
	tx                                [1]byte // the byte being written, without an allocation
}

// COM1 and COM2 placement (the PC's legacy ports, which Linux probes).
const (
	COM1Base = 0x3f8
	COM1IRQ  = 4
	COM2Base = 0x2f8
	COM2IRQ  = 3
	// SerialSize is the number of ports a UART occupies.
	SerialSize = 8
)

// UART registers (offsets) and bits.
const (
	uartData = 0 // RBR (read) / THR (write); DLL when DLAB
	uartIER  = 1 // DLM when DLAB
	uartIIR  = 2 // IIR (read) / FCR (write)
	uartLCR  = 3
	uartMCR  = 4
	uartLSR  = 5
	uartMSR  = 6
	uartSCR  = 7

	lcrDLAB      = 0x80
	ierRDA       = 0x01
	ierTHRE      = 0x02
	iirNone      = 0x01
	iirTHRE      = 0x02
	iirRDA       = 0x04
	iirFIFO      = 0xc0
	fcrEnable    = 0x01
	fcrClearRX   = 0x02
	lsrDR        = 0x01
	lsrTHRE      = 0x20
	lsrTEMT      = 0x40
	mcrLoop      = 0x10
	msrDefault   = 0xb0 // DCD, DSR, CTS
	serialInSize = 4096
)

// NewSerial returns a UART writing guest output to out. irq may be nil
// (a guest then polls the line status register).
func NewSerial(out io.Writer, irq IRQ) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{out: out, irq: irq, inCap: serialInSize, dll: 0x0c}
}

// Enqueue offers bytes to the receiver and returns how many it took; the
// FIFO holds up to 4 KiB, so a caller pumping input retries the rest later.
func (s *Serial) Enqueue(b []byte) int {
	s.mu.Lock()
	n := min(len(b), s.inCap-len(s.in))
	wasEmpty := len(s.in) == 0
	s.in = append(s.in, b[:n]...)
	raise := n > 0 && wasEmpty && s.ier&ierRDA != 0
	s.mu.Unlock()
	if raise {
		s.trigger()
	}
	return n
}

// OutputError returns the first error writing guest output, if any.
func (s *Serial) OutputError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outErr
}

func (s *Serial) trigger() {
	if s.irq != nil {
		s.irq.Trigger()
	}
}

// Read handles a guest read of a UART register.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	clear(data)
	var v byte
	switch offset {
	case uartData:
		if s.lcr&lcrDLAB != 0 {
			v = s.dll
		} else if len(s.in) > 0 {
			v = s.in[0]
			s.in = s.in[1:]
			if len(s.in) == 0 {
				s.in = nil
			}
		}
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			v = s.dlm
		} else {
			v = s.ier
		}
	case uartIIR:
		v = s.iir()
		if v&0x0f == iirTHRE {
			s.thrEmptyPending = false
		}
		if s.fcr&fcrEnable != 0 {
			v |= iirFIFO
		}
	case uartLCR:
		v = s.lcr
	case uartMCR:
		v = s.mcr
	case uartLSR:
		v = lsrTHRE | lsrTEMT
		if len(s.in) > 0 {
			v |= lsrDR
		}
	case uartMSR:
		if s.mcr&mcrLoop != 0 {
			// Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
			m := s.mcr
			v = (m&0x01)<<5 | (m&0x02)<<3 | (m&0x04)<<4 | (m&0x08)<<4
		} else {
			v = msrDefault
		}
	case uartSCR:
		v = s.scr
	}
	data[0] = v
	s.mu.Unlock()
}

// iir computes the interrupt identification, highest priority first.
func (s *Serial) iir() byte {
	switch {
	case s.ier&ierRDA != 0 && len(s.in) > 0:
		return iirRDA
	case s.ier&ierTHRE != 0 && s.thrEmptyPending:
		return iirTHRE
	}
	return iirNone
}

// Write handles a guest write to a UART register.
func (s *Serial) Write(offset uint64, data []byte) {
	v := data[0]
	s.mu.Lock()
	raise := false
	switch offset {
	case uartData:
		if s.lcr&lcrDLAB != 0 {
			s.dll = v
			break
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.in) < s.inCap {
				s.in = append(s.in, v)
			}
			raise = s.ier&ierRDA != 0
		} else if s.outErr == nil {
			s.tx[0] = v
			if _, err := s.out.Write(s.tx[:]); err != nil {
				s.outErr = err
			}
		}
		// The byte left at once: the transmitter is empty again.
		if s.ier&ierTHRE != 0 {
			s.thrEmptyPending = true
			raise = true
		}
	case uartIER:
		if s.lcr&lcrDLAB != 0 {
			s.dlm = v
			break
		}
		old := s.ier
		s.ier = v & 0x0f
		// Enabling THRE interrupts with an empty transmitter raises one at
		// once (Linux's 8250 driver relies on this); so does enabling RDA
		// with data waiting.
		if s.ier&ierTHRE != 0 && old&ierTHRE == 0 {
			s.thrEmptyPending = true
			raise = true
		}
		if s.ier&ierRDA != 0 && old&ierRDA == 0 && len(s.in) > 0 {
			raise = true
		}
	case uartIIR:
		s.fcr = v
		if v&fcrClearRX != 0 {
			s.in = nil
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v
	case uartSCR:
		s.scr = v
	}
	s.mu.Unlock()
	if raise {
		s.trigger()
	}
}

// SerialState is a UART's guest-visible state, for snapshots: its
// registers, a THRE interrupt not yet acknowledged and received bytes the
// guest has not read.
type SerialState struct {
	IER, LCR, MCR, SCR, DLL, DLM, FCR byte
	THREPending                       bool
	RX                                []byte `json:",omitempty"`
}

// State returns the UART's state.
func (s *Serial) State() SerialState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SerialState{IER: s.ier, LCR: s.lcr, MCR: s.mcr, SCR: s.scr, DLL: s.dll, DLM: s.dlm, FCR: s.fcr,
		THREPending: s.thrEmptyPending, RX: append([]byte(nil), s.in...)}
}

// SetState replaces the UART's state (at most 4 KiB of received bytes
// are kept). It raises no interrupt: the interrupt controller's own
// restored state holds any that was pending.
func (s *Serial) SetState(st SerialState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ier, s.lcr, s.mcr, s.scr, s.dll, s.dlm, s.fcr = st.IER, st.LCR, st.MCR, st.SCR, st.DLL, st.DLM, st.FCR
	s.thrEmptyPending = st.THREPending
	s.in = append(s.in[:0], st.RX[:min(len(st.RX), s.inCap)]...)
}
