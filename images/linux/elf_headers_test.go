package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// TestParseIgnoresNonLoadHeaders: program headers other than PT_LOAD and
// PT_NOTE (PT_TLS with filesz 0 and an offset past the end, as unikernel
// toolchains emit, PT_GNU_STACK, PT_DYNAMIC) place no bytes and must not
// fail the parse; a PT_LOAD or PT_NOTE past the end still does.
func TestParseIgnoresNonLoadHeaders(t *testing.T) {
	elf := readTestdata(t, "testkernel.elf")
	le := binary.LittleEndian
	// Program header 1 is the .bss PT_LOAD (filesz 0); retype it.
	retype := func(ptype uint32, off, filesz uint64) []byte {
		b := bytes.Clone(elf)
		ph := b[64+56:]
		le.PutUint32(ph[0:], ptype)
		le.PutUint64(ph[8:], off)
		le.PutUint64(ph[32:], filesz)
		return b
	}
	const (
		ptTLS       = 7
		ptDynamic   = 2
		ptGNUStack  = 0x6474e551
		ptLoadValue = 1
		ptNoteValue = 4
	)
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"PT_TLS offset past end", retype(ptTLS, 1<<40, 0), nil},
		{"PT_TLS filesz past end", retype(ptTLS, 0x1000, 1<<40), nil},
		{"PT_GNU_STACK garbage", retype(ptGNUStack, ^uint64(0), ^uint64(0)), nil},
		{"PT_DYNAMIC past end", retype(ptDynamic, 1<<30, 16), nil},
		{"PT_LOAD past end", retype(ptLoadValue, 1<<40, 0x400), ErrTruncated},
		{"PT_NOTE past end", retype(ptNoteValue, 1<<40, 16), ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := ParseELF(tt.data)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseELF error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseELF: %v", err)
			}
			if len(info.Segments) != 1 || info.Segments[0].Paddr != 0x1000000 {
				t.Errorf("segments %+v: want only the text PT_LOAD at 0x1000000", info.Segments)
			}
		})
	}
}
