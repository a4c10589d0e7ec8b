package vmm

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// thirdParty reads a guest from Debian's archive named by env (`make
// guests` fetches them; `make test` sets the variables), or skips.
func thirdParty(t *testing.T, env string) []byte {
	t.Helper()
	path := os.Getenv(env)
	if path == "" {
		t.Skipf("SKIP: %s is not set; `make guests` fetches the Debian guests and `make test` sets it", env)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// watchWriter collects console output and closes seen once every wanted
// string has appeared.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want []string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, s := range w.want {
		if !bytes.Contains(w.buf.Bytes(), []byte(s)) {
			return len(p), nil
		}
	}
	w.once.Do(func() { close(w.seen) })
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestMemtest86Plus boots Debian's memtest86+ (memtest86+x64.bin: a
// bzImage of boot protocol 2.12 that declares no payload, entered at its
// 64-bit entry with a zero page) to its first test screen on COM1: its
// banner, its status line reading "Testing" and no errors; the VM is then
// stopped (memtest86+ never ends by itself).
func TestMemtest86Plus(t *testing.T) {
	img := thirdParty(t, "MICROVM_MEMTEST")
	if DetectHost() == HostPVM && testing.Short() {
		t.Skip("SKIP: -short: on kvm_pvm memtest86+'s memory tests are instruction-emulated (minutes)")
	}
	sys := openKVM(t)
	w := &watchWriter{want: []string{"Memtest86+", "Status: Testing", "Errors: 0"}, seen: make(chan struct{})}
	m, err := New(Config{System: sys, Image: img, MemoryBytes: 128 << 20, Console: w,
		Cmdline: "console=ttyS0,115200 nopause"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		select {
		case <-w.seen:
			m.Stop()
		case <-m.Done():
		}
	}()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := w.String()
	select {
	case <-w.seen:
	default:
		t.Fatalf("%s: memtest86+'s test screen did not appear; console tail:\n%q", res.Summary(), tail(out, 2000))
	}
	if res.Reason != ReasonStopped {
		t.Errorf("%s, want stopped by the test", res.Summary())
	}
	if res.Kernel == nil || !strings.HasPrefix(res.Kernel.Version, "Memtest86+") || res.Kernel.Entry != 0x100200 {
		t.Errorf("kernel info %+v, want memtest86+'s version and the 64-bit entry 0x100200", res.Kernel)
	}
	t.Logf("memtest86+ testing after %v (%d console bytes)", res.ExitAfter, len(out))
}

// vgaText reads the 80x25 VGA text screen at 0xb8000 (characters only).
func vgaText(m *Machine) ([]byte, error) {
	cells := make([]byte, 80*25*2)
	if _, err := m.Memory().ReadAt(cells, 0xb8000); err != nil {
		return nil, err
	}
	chars := make([]byte, 80*25)
	for i := range chars {
		chars[i] = cells[2*i]
	}
	return chars, nil
}

// TestGrubInvaders boots Debian's grub-invaders (/boot/invaders.exec, a
// Multiboot ELF32) with the in-kernel irqchip (it drives the PIT and
// takes its ticks as IRQ 0 through the PIC): it must reach its main loop,
// which is observed on its VGA text screen in guest RAM — drawn, and
// animated (the invaders march on their own) — and run until the timeout
// without a fault.
func TestGrubInvaders(t *testing.T) {
	img := thirdParty(t, "MICROVM_GRUB_INVADERS")
	if DetectHost() == HostPVM && testing.Short() {
		t.Skip("SKIP: -short: on kvm_pvm the game is instruction-emulated")
	}
	sys := openKVM(t)
	m, err := New(Config{System: sys, Image: img, MemoryBytes: 64 << 20, IRQChip: true})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	snap := make(chan []byte, 1)
	go func() {
		select {
		case <-time.After(1500 * time.Millisecond):
			b, _ := vgaText(m)
			snap <- b
		case <-m.Done():
			snap <- nil
		}
	}()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := <-snap
	last, err := vgaText(m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != ReasonTimeout {
		t.Fatalf("%s, want the game still running at the timeout", res.Summary())
	}
	drawn := 0
	for _, c := range last {
		if c != 0 && c != ' ' {
			drawn++
		}
	}
	if drawn < 20 {
		t.Fatalf("the VGA screen holds %d non-blank cells, want the game's screen:\n%s", drawn, screen(last))
	}
	if first == nil {
		t.Fatalf("no early screen snapshot")
	}
	if bytes.Equal(first, last) {
		t.Errorf("the screen did not change between 1.5 s and %v: the game is not running its loop:\n%s", res.ExitAfter, screen(last))
	}
	t.Logf("grub-invaders: %d drawn cells, animated; %v exits; screen at the timeout:\n%s", drawn, res.Exits, screen(last))
}

func screen(chars []byte) string {
	var b strings.Builder
	for r := 0; r < 25; r++ {
		for _, c := range chars[r*80 : r*80+80] {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			b.WriteByte(c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
