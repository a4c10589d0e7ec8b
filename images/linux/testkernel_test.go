package linux

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestTestKernelRebuild proves the committed test kernel blobs in testdata/
// are what testkernel/ builds: it rebuilds them with the host toolchain
// (gcc, ld, objcopy, gzip, make) and compares byte for byte.
func TestTestKernelRebuild(t *testing.T) {
	for _, tool := range []string{"make", "gcc", "ld", "objcopy", "gzip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: %s not installed: cannot rebuild the test kernel", tool)
		}
	}
	out := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "testkernel", "OUT="+out, "BUILD="+filepath.Join(out, "build"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make testkernel: %v\n%s", err, b)
	}
	for _, name := range []string{"testkernel.elf", "testkernel-gzip.bzImage", "testkernel-none.bzImage"} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if want := readTestdata(t, name); !bytes.Equal(got, want) {
			t.Errorf("%s: rebuild (%d bytes) differs from testdata (%d bytes): run `make testkernel` and commit the result", name, len(got), len(want))
		}
	}
}
