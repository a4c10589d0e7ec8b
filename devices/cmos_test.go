package devices

import (
	"testing"
	"time"
)

// cmosAt returns a CMOS whose host clock reads *now.
func cmosAt(now *time.Time, low, high uint64) *CMOS {
	return NewCMOS(low, high, func() time.Time { return *now })
}

func cmosGet(c *CMOS, i byte) byte {
	c.Write(0, []byte{i})
	var b [1]byte
	c.Read(1, b[:])
	return b[0]
}

func cmosPut(c *CMOS, i, v byte) {
	c.Write(0, []byte{i})
	c.Write(1, []byte{v})
}

func TestCMOSClock(t *testing.T) {
	// Tuesday 2026-12-01 15:04:05.5 UTC, seen from a host in another zone.
	host := time.Date(2026, 12, 1, 15, 4, 5, 500_000_000, time.FixedZone("X", 5*3600)).Add(5 * time.Hour)
	tests := []struct {
		name  string
		regB  byte
		index byte
		want  byte
	}{
		{"seconds BCD", 0x02, cmosSeconds, 0x05},
		{"minutes BCD", 0x02, cmosMinutes, 0x04},
		{"hours BCD 24h", 0x02, cmosHours, 0x15},
		{"hours BCD 12h PM", 0x00, cmosHours, 0x83},
		{"hours binary 24h", 0x06, cmosHours, 15},
		{"hours binary 12h PM", 0x04, cmosHours, 0x80 | 3},
		{"weekday (Tuesday = 3)", 0x02, cmosWeekday, 0x03},
		{"day BCD", 0x02, cmosDay, 0x01},
		{"month BCD", 0x02, cmosMonth, 0x12},
		{"month binary", 0x06, cmosMonth, 12},
		{"year BCD", 0x02, cmosYear, 0x26},
		{"year binary", 0x06, cmosYear, 26},
		{"century BCD", 0x02, cmosCentury, 0x20},
		{"century binary", 0x06, cmosCentury, 20},
		{"register A: UIP clear mid-second", 0x02, cmosRegA, cmosRegADflt},
		{"register B reads back", 0x06, cmosRegB, 0x06},
		{"register C", 0x02, cmosRegC, 0},
		{"register D: valid RAM and time", 0x02, cmosRegD, 0x80},
		{"NMI-mask bit ignored", 0x02, 0x80 | cmosMinutes, 0x04},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := host
			c := cmosAt(&now, 128<<20, 0)
			cmosPut(c, cmosRegB, tt.regB)
			if got := cmosGet(c, tt.index); got != tt.want {
				t.Errorf("register %#x = %#x, want %#x", tt.index, got, tt.want)
			}
		})
	}
}

func TestCMOSMidnightNoon12h(t *testing.T) {
	for _, tt := range []struct {
		hour int
		want byte
	}{{0, 0x12}, {12, 0x92}, {23, 0x91}, {1, 0x01}} {
		now := time.Date(2000, 1, 1, tt.hour, 0, 0, 0, time.UTC)
		c := cmosAt(&now, 2<<20, 0)
		cmosPut(c, cmosRegB, 0) // BCD, 12h
		if got := cmosGet(c, cmosHours); got != tt.want {
			t.Errorf("hour %d: %#x, want %#x", tt.hour, got, tt.want)
		}
	}
}

// TestCMOSUpdateInProgress: UIP reads as set only in the last 244 µs of a
// second, so a guest that waits for it to clear (or to rise and fall) goes on.
func TestCMOSUpdateInProgress(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		ns  int
		uip bool
	}{{0, false}, {500_000_000, false}, {999_700_000, false}, {999_756_000, true}, {999_999_999, true}} {
		now := base.Add(time.Duration(tt.ns))
		c := cmosAt(&now, 2<<20, 0)
		if got := cmosGet(c, cmosRegA)&cmosRegAUIP != 0; got != tt.uip {
			t.Errorf("at +%d ns UIP = %v, want %v", tt.ns, got, tt.uip)
		}
	}
	// With SET the clock is frozen and UIP stays clear.
	now := base.Add(999_900_000)
	c := cmosAt(&now, 2<<20, 0)
	cmosPut(c, cmosRegB, cmosRegBSet|cmosRegB24h)
	if cmosGet(c, cmosRegA)&cmosRegAUIP != 0 {
		t.Error("UIP set while SET holds the clock")
	}
	// Writes to A keep UIP read-only.
	cmosPut(c, cmosRegA, 0xff)
	if got := cmosGet(c, cmosRegA); got != 0x7f {
		t.Errorf("register A after writing 0xff = %#x, want 0x7f", got)
	}
}

// TestCMOSSetClock: a guest sets the time with SET; the clock then runs
// from there at the host's pace. Bad dates are refused (the offset stays).
func TestCMOSSetClock(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	c := cmosAt(&now, 2<<20, 0)
	set := func(vals map[byte]byte) {
		cmosPut(c, cmosRegB, cmosRegBSet|cmosRegB24h)
		for i, v := range vals {
			cmosPut(c, i, v)
		}
		cmosPut(c, cmosRegB, cmosRegB24h)
	}
	set(map[byte]byte{cmosYear: 0x99, cmosCentury: 0x19, cmosMonth: 0x12, cmosDay: 0x31, cmosHours: 0x23, cmosMinutes: 0x59, cmosSeconds: 0x58})
	now = now.Add(3 * time.Second)
	want := map[byte]byte{cmosYear: 0x00, cmosCentury: 0x20, cmosMonth: 0x01, cmosDay: 0x01, cmosHours: 0x00, cmosMinutes: 0x00, cmosSeconds: 0x01}
	for i, w := range want {
		if got := cmosGet(c, i); got != w {
			t.Errorf("after set + 3 s register %#x = %#x, want %#x", i, got, w)
		}
	}
	// 30 February: refused, the clock keeps its offset.
	set(map[byte]byte{cmosMonth: 0x02, cmosDay: 0x30})
	if got := cmosGet(c, cmosMonth); got != 0x01 {
		t.Errorf("month after an invalid set = %#x, want 0x01", got)
	}
	// Writes to the running clock are ignored.
	cmosPut(c, cmosYear, 0x42)
	if got := cmosGet(c, cmosYear); got != 0x00 {
		t.Errorf("year after a write without SET = %#x, want 0x00", got)
	}
}

func TestCMOSMemorySizes(t *testing.T) {
	word := func(c *CMOS, i byte) int { return int(cmosGet(c, i)) | int(cmosGet(c, i+1))<<8 }
	for _, tt := range []struct {
		name               string
		low, high          uint64
		base, ext, above16 int
		above4G            int
	}{
		{"2 MiB", 2 << 20, 0, 640, 1024, 0, 0},
		{"32 MiB", 32 << 20, 0, 640, 31 * 1024, 16 * 16, 0},
		{"128 MiB: 0x17 capped", 128 << 20, 0, 640, 0xffff, (128 - 16) * 16, 0},
		{"3 GiB + 1 GiB high", 3 << 30, 1 << 30, 640, 0xffff, (3<<14 - 256), 1 << 14},
	} {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Now()
			c := cmosAt(&now, tt.low, tt.high)
			if got := word(c, cmosBaseMemLo); got != tt.base {
				t.Errorf("base memory %d KiB, want %d", got, tt.base)
			}
			if got := word(c, cmosExtMemLo); got != tt.ext {
				t.Errorf("extended memory (0x17) %d KiB, want %d", got, tt.ext)
			}
			if got := word(c, cmosExtMem2Lo); got != tt.ext {
				t.Errorf("extended memory (0x30) %d KiB, want %d", got, tt.ext)
			}
			if got := word(c, cmosMem16MLo); got != tt.above16 {
				t.Errorf("memory above 16 MiB %d × 64 KiB, want %d", got, tt.above16)
			}
			if got := word(c, cmosMem4GLo) | int(cmosGet(c, cmosMem4GLo+2))<<16; got != tt.above4G {
				t.Errorf("memory above 4 GiB %d × 64 KiB, want %d", got, tt.above4G)
			}
		})
	}
}

func TestCMOSRAMAndPorts(t *testing.T) {
	now := time.Now()
	c := cmosAt(&now, 2<<20, 0)
	cmosPut(c, 0x40, 0xab)
	cmosPut(c, cmosRegC, 0xff)
	cmosPut(c, cmosRegD, 0x00)
	for _, tt := range []struct {
		index, want byte
	}{{0x40, 0xab}, {cmosRegC, 0}, {cmosRegD, 0x80}} {
		if got := cmosGet(c, tt.index); got != tt.want {
			t.Errorf("register %#x = %#x, want %#x", tt.index, got, tt.want)
		}
	}
	var b [2]byte
	c.Read(0, b[:1])
	if b[0] != 0xff {
		t.Errorf("index port reads %#x, want 0xff", b[0])
	}
	c.Write(0, []byte{0x40, 0})
	c.Read(1, b[:]) // a 16-bit read at the data port: low byte only
	if b != [2]byte{0xab, 0} {
		t.Errorf("16-bit data read % x", b)
	}
}
