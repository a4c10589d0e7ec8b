package vmm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/microvm/microvm/kvm"
)

func TestCPUIDCache(t *testing.T) {
	sys := openKVM(t)
	want, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fresh, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	primeCPUID(fresh, kvm.DevicePath, dir) // asks KVM, writes the file
	files, _ := filepath.Glob(filepath.Join(dir, "cpuid-*"))
	if len(files) != 1 {
		t.Fatalf("cache files %v", files)
	}
	got, ok := readCPUIDCache(files[0])
	if !ok || len(got) != len(want) {
		t.Fatalf("cache read back %d entries (ok %v), want %d", len(got), ok, len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// A damaged file is ignored, and rewritten by the next prime.
	b, _ := os.ReadFile(files[0])
	b[len(b)-1] ^= 0xff
	os.WriteFile(files[0], b, 0o600)
	if _, ok := readCPUIDCache(files[0]); ok {
		t.Error("corrupt cache accepted")
	}
	for _, junk := range [][]byte{nil, []byte(cpuidCacheMagic), []byte("something else entirely, long enough to pass the size check ............")} {
		os.WriteFile(files[0], junk, 0o600)
		if _, ok := readCPUIDCache(files[0]); ok {
			t.Errorf("junk %q accepted", junk)
		}
	}
	other, _ := kvm.Open(kvm.DevicePath)
	defer other.Close()
	primeCPUID(other, kvm.DevicePath, dir)
	if _, ok := readCPUIDCache(files[0]); !ok {
		t.Error("corrupt cache not rewritten")
	}
	// A machine built with the cache boots as before.
	res, _ := boot(t, Config{Image: guest(t, "ready"), CPUIDCacheDir: dir}, 0)
	if res.Reason != ReasonExit || !res.Ready {
		t.Errorf("boot with a CPUID cache: %s", res.Summary())
	}
}
