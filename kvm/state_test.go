package kvm

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// Values printed by a C program including linux/kvm.h on x86-64.
func TestStateIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000aea4},
		{"KVM_SET_XSAVE", kvmSetXSave, 0x5000aea5},
		{"KVM_GET_XSAVE2", kvmGetXSave2, 0x9000aecf},
		{"KVM_GET_XCRS", kvmGetXCRs, 0x8188aea6},
		{"KVM_SET_XCRS", kvmSetXCRs, 0x4188aea7},
		{"KVM_GET_DEBUGREGS", kvmGetDebugRegs, 0x8080aea1},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, 0x4080aea2},
		{"KVM_GET_IRQCHIP", kvmGetIRQChip, 0xc208ae62},
		{"KVM_SET_IRQCHIP", kvmSetIRQChip, 0x8208ae63},
		{"KVM_GET_PIT2", kvmGetPIT2, 0x8070ae9f},
		{"KVM_SET_PIT2", kvmSetPIT2, 0x4070aea0},
		{"KVM_GET_CLOCK", kvmGetClock, 0x8030ae7c},
		{"KVM_SET_CLOCK", kvmSetClock, 0x4030ae7b},
		{"KVM_CAP_DEBUGREGS", uintptr(CapDebugRegs), 0x32},
		{"KVM_CAP_XCRS", uintptr(CapXCRs), 0x38},
		{"KVM_CAP_XSAVE2", uintptr(CapXSave2), 0xd0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
		if n, ok := IoctlNumber(tc.name); len(tc.name) > 8 && tc.name[:8] != "KVM_CAP_" && (!ok || n != tc.want) {
			t.Errorf("IoctlNumber(%s) = %#x, %v", tc.name, n, ok)
		}
	}
}

func TestStateStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_xcrs", unsafe.Sizeof(XCRs{}), 392},
		{"kvm_debugregs", unsafe.Sizeof(DebugRegs{}), 128},
		{"kvm_irqchip", unsafe.Sizeof(IRQChip{}), 520},
		{"kvm_pit_channel_state", unsafe.Sizeof(PITChannel{}), 24},
		{"kvm_pit_state2", unsafe.Sizeof(PITState2{}), 112},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), 48},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof %s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// TestStateRoundTrip sets each piece of state a snapshot carries to a
// value it would not have by default, reads it back and compares.
func TestStateRoundTrip(t *testing.T) {
	s := openKVM(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(PITSpeakerDummy); err != nil {
		t.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpu.Close() })
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}

	t.Run("debugregs", func(t *testing.T) {
		d, err := cpu.DebugRegs()
		if err != nil {
			t.Fatal(err)
		}
		d.DB[0], d.DB[3] = 0x1234000, 0xdead0000
		if err := cpu.SetDebugRegs(&d); err != nil {
			t.Fatal(err)
		}
		got, err := cpu.DebugRegs()
		if err != nil {
			t.Fatal(err)
		}
		if got.DB != d.DB {
			t.Errorf("DR0-3 = %#x, want %#x", got.DB, d.DB)
		}
	})

	t.Run("xsave", func(t *testing.T) {
		if n, _ := s.CheckExtension(CapXSave); n == 0 {
			t.Skip("SKIP: no KVM_CAP_XSAVE on this host")
		}
		x, err := cpu.XSave(XSaveSize)
		if err != nil {
			t.Fatal(err)
		}
		// Legacy region: MXCSR at 24, XMM0 at 160; XSTATE_BV at 512. A
		// component whose XSTATE_BV bit is clear is in its init state, so
		// mark x87 and SSE present.
		binary.LittleEndian.PutUint32(x.Region[24:], 0x1f00)
		x.Region[160+3*16] = 0x5a
		bv := binary.LittleEndian.Uint64(x.Region[512:])
		binary.LittleEndian.PutUint64(x.Region[512:], bv|3)
		if err := cpu.SetXSave(x); err != nil {
			t.Fatal(err)
		}
		f, err := cpu.FPU()
		if err != nil {
			t.Fatal(err)
		}
		// (KVM_GET_FPU's MXCSR is not compared: in the nested rig it reads
		// 0 after KVM_SET_XSAVE although the XSAVE area holds the value.)
		if f.XMM[3][0] != 0x5a {
			t.Errorf("after SET_XSAVE: FPU XMM3[0] %#x, want 0x5a", f.XMM[3][0])
		}
		y, err := cpu.XSave(XSaveSize)
		if err != nil {
			t.Fatal(err)
		}
		if m := binary.LittleEndian.Uint32(y.Region[24:]); m != 0x1f00 || y.Region[160+3*16] != 0x5a {
			t.Errorf("XSAVE read back MXCSR %#x XMM3[0] %#x, want 0x1f00 0x5a", m, y.Region[160+3*16])
		}
		if err := cpu.SetXSave(XSave{Region: make([]byte, 10)}); err == nil {
			t.Error("SetXSave accepted a 10-byte region")
		}
	})

	t.Run("xcrs", func(t *testing.T) {
		if n, _ := s.CheckExtension(CapXCRs); n == 0 {
			t.Skip("SKIP: no KVM_CAP_XCRS on this host")
		}
		x, err := cpu.XCRs()
		if err != nil {
			t.Fatal(err)
		}
		if err := cpu.SetXCRs(&x); err != nil {
			t.Fatal(err)
		}
		if x.N > 0 && x.XCRs[0].Value&1 == 0 {
			t.Errorf("XCR0 = %#x: x87 bit clear", x.XCRs[0].Value)
		}
		bad := x
		bad.N = MaxXCRs + 1
		if err := cpu.SetXCRs(&bad); err == nil {
			t.Error("SetXCRs accepted 17 registers")
		}
	})

	t.Run("msrs", func(t *testing.T) {
		list, err := s.MSRIndexList()
		if err != nil {
			t.Fatal(err)
		}
		const msrTSCAux = 0xc0000103
		if err := cpu.SetAllMSRs([]MSREntry{{Index: msrTSCAux, Data: 9}}); err != nil {
			t.Fatal(err)
		}
		all, err := cpu.AllMSRs(list)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 0 {
			t.Fatalf("no MSR readable of %d listed", len(list))
		}
		found := false
		for _, e := range all {
			if e.Index == msrTSCAux {
				found = e.Data == 9
			}
		}
		if !found {
			t.Errorf("TSC_AUX=9 not among %d MSRs read", len(all))
		}
		t.Logf("%d of %d listed MSRs readable", len(all), len(list))
	})

	t.Run("ioapic", func(t *testing.T) {
		c, err := vm.IRQChip(IRQChipIOAPIC)
		if err != nil {
			t.Fatal(err)
		}
		// kvm_ioapic_state: redirtbl[24] u64 at offset 24.
		const entry = 24 + 5*8
		want := uint64(0x10035) // masked, vector 0x35
		binary.LittleEndian.PutUint64(c.Chip[entry:], want)
		if err := vm.SetIRQChip(&c); err != nil {
			t.Fatal(err)
		}
		got, err := vm.IRQChip(IRQChipIOAPIC)
		if err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint64(got.Chip[entry:]); v != want {
			t.Errorf("IOAPIC redirtbl[5] = %#x, want %#x", v, want)
		}
		for _, id := range []uint32{IRQChipPICMaster, IRQChipPICSlave} {
			p, err := vm.IRQChip(id)
			if err != nil {
				t.Fatal(err)
			}
			if err := vm.SetIRQChip(&p); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("pit", func(t *testing.T) {
		p, err := vm.PIT2()
		if err != nil {
			t.Fatal(err)
		}
		p.Channels[2].Gate = 1
		p.Channels[2].Mode = 3
		if err := vm.SetPIT2(&p); err != nil {
			t.Fatal(err)
		}
		got, err := vm.PIT2()
		if err != nil {
			t.Fatal(err)
		}
		if got.Channels[2].Mode != 3 || got.Channels[2].Gate != 1 {
			t.Errorf("PIT channel 2 mode %d gate %d, want 3 1", got.Channels[2].Mode, got.Channels[2].Gate)
		}
	})

	t.Run("clock", func(t *testing.T) {
		const base = 1 << 40
		if err := vm.SetClock(&ClockData{Clock: base}); err != nil {
			t.Fatal(err)
		}
		c, err := vm.Clock()
		if err != nil {
			t.Fatal(err)
		}
		if c.Clock < base || c.Clock > base+60e9 {
			t.Errorf("clock = %d after setting %d", c.Clock, uint64(base))
		}
	})
}
