package guests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm/microvm/images"
)

// TestGuestsMatchSources rebuilds every tiny guest from src/ and checks the
// committed blobs are exactly what the sources produce.
func TestGuestsMatchSources(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("SKIP: gcc not found; cannot rebuild the tiny guests to compare")
	}
	out := t.TempDir()
	cmd := exec.Command("./build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	built, _ := filepath.Glob(filepath.Join(out, "*.elf"))
	if len(built) != len(Names()) {
		t.Errorf("build.sh made %d guests, %d are embedded (%v)", len(built), len(Names()), Names())
	}
	for _, p := range built {
		name := strings.TrimSuffix(filepath.Base(p), ".elf")
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Get(name)
		if err != nil {
			t.Errorf("%s built but not embedded: %v", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: committed blob (%d bytes) differs from a rebuild (%d bytes): run `make images` and commit bin/", name, len(got), len(want))
		}
	}
}

func TestGuestsAreValidTinyImages(t *testing.T) {
	for _, name := range []string{"hello", "ready", "exit", "smp"} {
		img, err := Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if f, err := images.Detect(img); err != nil || f != images.FormatELF {
			t.Errorf("%s: detected %v, %v", name, f, err)
		}
		if Describe(name) == "" {
			t.Errorf("%s has no description", name)
		}
	}
	if _, err := Get("nope"); err == nil || !strings.Contains(err.Error(), "hello") {
		t.Errorf("Get(nope) = %v, want an error listing the guests", err)
	}
}
