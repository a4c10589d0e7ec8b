package devices

import (
	"sync"
	"time"
)

// CMOS is the MC146818-style real-time clock and CMOS RAM of a PC, at port
// 0x70 (index, offset 0) and 0x71 (data, offset 1). The clock shows the
// host's time in UTC, in BCD or binary and in 24- or 12-hour form as
// register B asks; register A's update-in-progress bit is set only in the
// last 244 µs before each second, as on the real chip. A guest may set the
// clock (register B's SET bit, then the time registers): from then on it
// runs at the set time's offset from the host's. Bytes 0x15–0x18, 0x30–0x31,
// 0x34–0x35 and 0x5b–0x5d hold the memory sizes that BIOS-era guests read.
// Bit 7 of an index write (the NMI mask) is ignored. No interrupts are
// raised: register C always reads 0.
type CMOS struct {
	mu     sync.Mutex
	now    func() time.Time
	index  byte
	ram    [cmosSize]byte
	offset time.Duration // guest clock minus host clock
	set    bool          // register B's SET bit: the clock is frozen in ram
}

// CMOS ports, registers and bits.
const (
	CMOSBase = 0x70
	CMOSSize = 2

	cmosSize = 128

	cmosSeconds    = 0x00
	cmosMinutes    = 0x02
	cmosHours      = 0x04
	cmosWeekday    = 0x06
	cmosDay        = 0x07
	cmosMonth      = 0x08
	cmosYear       = 0x09
	cmosRegA       = 0x0a
	cmosRegB       = 0x0b
	cmosRegC       = 0x0c
	cmosRegD       = 0x0d
	cmosBaseMemLo  = 0x15
	cmosExtMemLo   = 0x17
	cmosExtMem2Lo  = 0x30
	cmosMem16MLo   = 0x34
	cmosCentury    = 0x32
	cmosMem4GLo    = 0x5b
	cmosRegAUIP    = 0x80
	cmosRegADflt   = 0x26 // 32.768 kHz time base, 1024 Hz rate
	cmosRegBSet    = 0x80
	cmosRegBBinary = 0x04
	cmosRegB24h    = 0x02
	cmosRegDVRT    = 0x80 // valid RAM and time
	cmosHourPM     = 0x80

	// cmosUIPWindow is how long before each second UIP reads as set.
	cmosUIPWindow = 244 * time.Microsecond
)

// NewCMOS returns a CMOS/RTC for a guest with lowMem bytes of RAM below
// 4 GiB and highMem above it; now gives the host time (time.Now when nil).
func NewCMOS(lowMem, highMem uint64, now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[cmosRegA] = cmosRegADflt
	c.ram[cmosRegB] = cmosRegB24h
	c.ram[cmosRegD] = cmosRegDVRT
	put16 := func(at int, v uint64) {
		v = min(v, 0xffff)
		c.ram[at], c.ram[at+1] = byte(v), byte(v>>8)
	}
	put16(cmosBaseMemLo, 640) // KiB below 640 KiB
	ext := uint64(0)
	if lowMem > 1<<20 {
		ext = (lowMem - 1<<20) >> 10 // KiB above 1 MiB
	}
	put16(cmosExtMemLo, ext)
	put16(cmosExtMem2Lo, ext)
	above16 := uint64(0)
	if lowMem > 16<<20 {
		above16 = (lowMem - 16<<20) >> 16 // 64 KiB units above 16 MiB
	}
	put16(cmosMem16MLo, above16)
	high := min(highMem>>16, 0xffffff) // 64 KiB units above 4 GiB, 24 bits
	c.ram[cmosMem4GLo], c.ram[cmosMem4GLo+1], c.ram[cmosMem4GLo+2] = byte(high), byte(high>>8), byte(high>>16)
	return c
}

// Read serves the data port (offset 1): the byte at the current index. The
// index port reads all ones, as on QEMU.
func (c *CMOS) Read(offset uint64, data []byte) {
	clear(data)
	if offset != 1 {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	data[0] = c.read(c.index)
}

// Write sets the index (offset 0) or writes the byte at the index (offset 1).
func (c *CMOS) Write(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := data[0]
	if offset == 0 {
		c.index = v & 0x7f // bit 7 masks NMIs: ignored
		return
	}
	if offset != 1 {
		return
	}
	switch i := c.index; i {
	case cmosRegA:
		c.ram[i] = v &^ cmosRegAUIP // UIP is read-only
	case cmosRegB:
		wasSet := c.set
		c.ram[i] = v
		c.set = v&cmosRegBSet != 0
		switch {
		case c.set && !wasSet:
			c.storeTime(c.clock()) // freeze: the guest edits these bytes
		case !c.set && wasSet:
			if t, ok := c.loadTime(); ok {
				c.offset = t.Sub(c.now())
			}
		}
	case cmosRegC, cmosRegD: // read-only
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury:
		if c.set {
			c.ram[i] = v
		} // otherwise the running clock ignores the write, as the chip's next update would
	default:
		c.ram[i] = v
	}
}

// clock is the guest's current time, in UTC.
func (c *CMOS) clock() time.Time { return c.now().Add(c.offset).UTC() }

func (c *CMOS) read(i byte) byte {
	switch i {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury:
		if !c.set {
			c.storeTime(c.clock())
		}
	case cmosRegA:
		v := c.ram[i]
		if !c.set {
			if t := c.clock(); time.Second-time.Duration(t.Nanosecond()) <= cmosUIPWindow {
				v |= cmosRegAUIP
			}
		}
		return v
	case cmosRegC:
		return 0 // no interrupt flags; reading clears them anyway
	}
	return c.ram[i]
}

// encode renders v in the form register B asks for.
func (c *CMOS) encode(v int) byte {
	if c.ram[cmosRegB]&cmosRegBBinary != 0 {
		return byte(v)
	}
	return byte(v/10<<4 | v%10)
}

// decode reads a register value in the form register B says; ok is false
// for an invalid BCD digit.
func (c *CMOS) decode(b byte) (int, bool) {
	if c.ram[cmosRegB]&cmosRegBBinary != 0 {
		return int(b), true
	}
	hi, lo := int(b>>4), int(b&0xf)
	return hi*10 + lo, hi < 10 && lo < 10
}

// storeTime writes t into the clock registers.
func (c *CMOS) storeTime(t time.Time) {
	c.ram[cmosSeconds] = c.encode(t.Second())
	c.ram[cmosMinutes] = c.encode(t.Minute())
	h := t.Hour()
	if c.ram[cmosRegB]&cmosRegB24h != 0 {
		c.ram[cmosHours] = c.encode(h)
	} else {
		h12 := h % 12
		if h12 == 0 {
			h12 = 12
		}
		b := c.encode(h12)
		if h >= 12 {
			b |= cmosHourPM
		}
		c.ram[cmosHours] = b
	}
	c.ram[cmosWeekday] = c.encode(int(t.Weekday()) + 1) // 1 = Sunday
	c.ram[cmosDay] = c.encode(t.Day())
	c.ram[cmosMonth] = c.encode(int(t.Month()))
	c.ram[cmosYear] = c.encode(t.Year() % 100)
	c.ram[cmosCentury] = c.encode(t.Year() / 100)
}

// loadTime reads the clock registers back as a time; ok is false when
// they do not form a valid date.
func (c *CMOS) loadTime() (time.Time, bool) {
	ok := true
	get := func(i byte) int {
		v, good := c.decode(c.ram[i])
		ok = ok && good
		return v
	}
	sec, min, day, month, year, century := get(cmosSeconds), get(cmosMinutes), get(cmosDay), get(cmosMonth), get(cmosYear), get(cmosCentury)
	hb := c.ram[cmosHours]
	var hour int
	if c.ram[cmosRegB]&cmosRegB24h != 0 {
		h, good := c.decode(hb)
		ok = ok && good
		hour = h
	} else {
		h, good := c.decode(hb &^ cmosHourPM)
		ok = ok && good && h >= 1 && h <= 12
		hour = h % 12
		if hb&cmosHourPM != 0 {
			hour += 12
		}
	}
	if !ok || sec > 59 || min > 59 || hour > 23 || day < 1 || day > 31 || month < 1 || month > 12 || year > 99 {
		return time.Time{}, false
	}
	t := time.Date(century*100+year, time.Month(month), day, hour, min, sec, 0, time.UTC)
	if t.Day() != day { // 31 February and the like
		return time.Time{}, false
	}
	return t, true
}
