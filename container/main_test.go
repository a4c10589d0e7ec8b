package container

import (
	"fmt"
	"os"
	"testing"

	"github.com/microvm/microvm/images/rootfs"
)

// testRootfs is a busybox rootfs built once for the package's tests ("" when
// it could not be built; tests that need it then skip, saying why).
var testRootfs, testRootfsErr = "", error(nil)

func TestMain(m *testing.M) {
	Init() // the test binary is also the container init helper
	dir, err := os.MkdirTemp("", "microvm-container-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := rootfs.Build(dir, rootfs.Options{}); err != nil {
		testRootfsErr = err
	} else {
		testRootfs = dir
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needRoot skips unless the test can create namespaces and cgroups and a
// rootfs was built.
func needRootfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: container tests need root (namespaces, pivot_root, cgroups)")
	}
	if testRootfsErr != nil {
		t.Skipf("SKIPPED LOUDLY: no busybox rootfs (make deps installs busybox-static): %v", testRootfsErr)
	}
	return testRootfs
}
