package vmm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/microvm/microvm/kvm"
)

// KVM_GET_SUPPORTED_CPUID costs about 0.3 ms, a fifth of a tiny VM's whole
// life. Its answer depends only on the CPU, the kernel and the KVM module,
// so a process that boots one VM can take it from the last process's
// answer on disk. The file is keyed by the boot id and by /dev/kvm's
// change time (a reloaded KVM module makes a new device node), and carries
// a checksum; anything that does not match is ignored and rewritten.

const cpuidCacheMagic = "microvm-cpuid-1\n"

// RuntimeDir is the per-user directory for state that lives as long as
// the boot (Config.CPUIDCacheDir's usual value): $XDG_RUNTIME_DIR/microvm,
// /run/microvm for root, else $TMPDIR/microvm-UID.
func RuntimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "microvm")
	}
	if os.Geteuid() == 0 {
		return "/run/microvm"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("microvm-%d", os.Geteuid()))
}

// cpuidCacheKey identifies this host's KVM: boot id and the device's ctime.
func cpuidCacheKey(device string) (string, bool) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", false
	}
	st, err := os.Stat(device)
	if err != nil {
		return "", false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%s-%d.%d", strings.TrimSpace(string(boot)), sys.Ctim.Sec, sys.Ctim.Nsec), true
}

// primeCPUID fills sys's supported-CPUID cache from dir, or asks KVM and
// saves the answer there. Failures only cost the ioctl.
func primeCPUID(sys *kvm.System, device, dir string) {
	key, ok := cpuidCacheKey(device)
	if !ok || dir == "" {
		return
	}
	path := filepath.Join(dir, "cpuid-"+key)
	if entries, ok := readCPUIDCache(path); ok {
		sys.PrimeSupportedCPUID(entries)
		return
	}
	entries, err := sys.SupportedCPUID()
	if err != nil {
		return
	}
	writeCPUIDCache(dir, path, entries)
}

func encodeCPUID(entries []kvm.CPUIDEntry) []byte {
	var body bytes.Buffer
	binary.Write(&body, binary.LittleEndian, entries)
	sum := sha256.Sum256(body.Bytes())
	out := append([]byte(cpuidCacheMagic), sum[:]...)
	return append(out, body.Bytes()...)
}

func readCPUIDCache(path string) ([]kvm.CPUIDEntry, bool) {
	b, err := os.ReadFile(path)
	hdr := len(cpuidCacheMagic) + sha256.Size
	const entrySize = 40
	if err != nil || len(b) < hdr || string(b[:len(cpuidCacheMagic)]) != cpuidCacheMagic {
		return nil, false
	}
	body := b[hdr:]
	if len(body) == 0 || len(body)%entrySize != 0 || len(body)/entrySize > 256 {
		return nil, false
	}
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(cpuidCacheMagic):hdr]) {
		return nil, false
	}
	entries := make([]kvm.CPUIDEntry, len(body)/entrySize)
	if binary.Read(bytes.NewReader(body), binary.LittleEndian, entries) != nil {
		return nil, false
	}
	return entries, true
}

// writeCPUIDCache writes atomically: a temporary file renamed into place.
func writeCPUIDCache(dir, path string, entries []kvm.CPUIDEntry) {
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".cpuid-*")
	if err != nil {
		return
	}
	_, werr := f.Write(encodeCPUID(entries))
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), path) != nil {
		os.Remove(f.Name())
	}
}
