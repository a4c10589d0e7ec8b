package kvm

import (
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Values printed by a C program including linux/kvm.h on x86-64.
func TestIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xae01},
		{"KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, 0xc004ae02},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0xae03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0xae04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0xae41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xae47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008ae48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0xae60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008ae61},
		{"KVM_IRQFD", kvmIRQFD, 0x4020ae76},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040ae79},
		{"KVM_RUN", kvmRun, 0xae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_TRANSLATE", kvmTranslate, 0xc018ae85},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xc008ae88},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008ae89},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_FPU", kvmGetFPU, 0x81a0ae8c},
		{"KVM_SET_FPU", kvmSetFPU, 0x41a0ae8d},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400ae8e},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400ae8f},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004ae98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004ae99},
		{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, 0x8040ae9f},
		{"KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, 0x4040aea0},
		{"KVM_GET_TSC_KHZ", kvmGetTSCKHz, 0xaea3},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"kvm_dtable", unsafe.Sizeof(DTable{}), 16},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 16},
		{"kvm_vcpu_events", unsafe.Sizeof(VCPUEvents{}), 64},
		{"kvm_vcpu_events.exception_payload", unsafe.Offsetof(VCPUEvents{}.ExceptionPayload), 56},
		{"kvm_translation", unsafe.Sizeof(Translation{}), 24},
		{"kvm_userspace_memory_region", unsafe.Sizeof(userspaceMemoryRegion{}), 32},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), 8},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), 64},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), 64},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
		{"kvm_cpuid2 header", unsafe.Offsetof(cpuid2{}.Entries), 8},
		{"kvm_msrs header", unsafe.Offsetof(msrs{}.Entries), 8},
		{"kvm_msr_list header", unsafe.Offsetof(msrList{}.Indices), 4},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof %s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

// openKVM opens /dev/kvm or skips the test, loudly, saying why.
func openKVM(t testing.TB) *System {
	t.Helper()
	s, err := Open(DevicePath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			t.Skipf("SKIP: this test needs a usable %s: %v", DevicePath, err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSystem(t *testing.T) {
	s := openKVM(t)
	if v, err := s.APIVersion(); err != nil || v != StableAPIVersion {
		t.Fatalf("APIVersion = %d, %v", v, err)
	}
	if s.VCPUMmapSize() < 4096 {
		t.Errorf("VCPUMmapSize = %d, want at least a page", s.VCPUMmapSize())
	}
	for _, c := range []Cap{CapUserMemory, CapSetTSSAddr, CapExtCPUID} {
		v, err := s.CheckExtension(c)
		if err != nil {
			t.Fatal(err)
		}
		if v == 0 {
			t.Errorf("%v not supported", c)
		}
	}
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	var leaf0 *CPUIDEntry
	for i := range cpuid {
		if cpuid[i].Function == 0 {
			leaf0 = &cpuid[i]
		}
	}
	if leaf0 == nil || leaf0.EAX == 0 {
		t.Fatalf("supported CPUID has no leaf 0 with a max leaf: %+v", leaf0)
	}
	// The cache hands out copies.
	cpuid[0].EAX = 0xdead
	again, _ := s.SupportedCPUID()
	if again[0].EAX == 0xdead {
		t.Error("SupportedCPUID returned the cached slice itself")
	}
	if msrs, err := s.MSRIndexList(); err != nil || len(msrs) == 0 {
		t.Errorf("MSRIndexList = %d entries, %v", len(msrs), err)
	}
}

// realModeVM builds a VM with one page of RAM at 0 holding code, and one
// vCPU in real mode about to execute it at 0x0.
func realModeVM(t *testing.T, s *System, code []byte) (*VM, *VCPU) {
	t.Helper()
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	copy(mem, code)
	if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpu.Close() })
	sr, err := cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := cpu.SetSregs(&sr); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetRegs(&Regs{RIP: 0, RFLAGS: 2, RAX: 0x2a}); err != nil {
		t.Fatal(err)
	}
	return vm, cpu
}

func TestRunIOAndHalt(t *testing.T) {
	s := openKVM(t)
	// mov dx, 0x502; out dx, al; in al, dx; mov dx, 0x501; out dx, al; hlt
	code := []byte{0xba, 0x02, 0x05, 0xee, 0xec, 0xba, 0x01, 0x05, 0xee, 0xf4}
	_, cpu := realModeVM(t, s, code)

	step := func(want ExitReason) {
		t.Helper()
		if err := cpu.Run(); err != nil {
			t.Fatal(err)
		}
		if got := cpu.ExitReason(); got != want {
			t.Fatalf("exit %v, want %v", got, want)
		}
	}
	step(ExitIO)
	io, err := cpu.IO()
	if err != nil {
		t.Fatal(err)
	}
	if !io.Out || io.Port != 0x502 || io.Size != 1 || io.Count != 1 || io.Data[0] != 0x2a {
		t.Fatalf("first exit = %+v, want out 0x2a to 0x502", io)
	}
	step(ExitIO)
	if io, _ = cpu.IO(); io.Out || io.Port != 0x502 {
		t.Fatalf("second exit = %+v, want in from 0x502", io)
	}
	io.Data[0] = 0x07 // the IN's result
	step(ExitIO)
	if io, _ = cpu.IO(); !io.Out || io.Port != 0x501 || io.Data[0] != 0x07 {
		t.Fatalf("third exit = %+v, want out 0x07 (the IN result) to 0x501", io)
	}
	step(ExitHLT)
	r, err := cpu.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if r.RIP != uint64(len(code)) {
		t.Errorf("RIP after hlt = %#x, want %#x", r.RIP, len(code))
	}
}

func TestImmediateExit(t *testing.T) {
	s := openKVM(t)
	if v, _ := s.CheckExtension(CapImmediateExit); v == 0 {
		t.Skip("SKIP: KVM_CAP_IMMEDIATE_EXIT not supported on this host")
	}
	_, cpu := realModeVM(t, s, []byte{0xeb, 0xfe}) // jmp $
	cpu.SetImmediateExit(true)
	if err := cpu.Run(); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run with immediate_exit = %v, want ErrInterrupted", err)
	}
}

func TestMMIOExit(t *testing.T) {
	s := openKVM(t)
	// mov byte [0x8000], 0x5a   (RAM is only 64 KiB, so 0x8000 is RAM; use
	// ES with a base far outside RAM instead): es: mov byte [0], 0x5a; hlt
	_, cpu := realModeVM(t, s, []byte{0x26, 0xc6, 0x06, 0x00, 0x00, 0x5a, 0xf4})
	sr, _ := cpu.Sregs()
	sr.ES.Base = 0xd0000000
	if err := cpu.SetSregs(&sr); err != nil {
		t.Fatal(err)
	}
	if err := cpu.Run(); err != nil {
		t.Fatal(err)
	}
	if cpu.ExitReason() != ExitMMIO {
		t.Fatalf("exit %v, want mmio", cpu.ExitReason())
	}
	m, err := cpu.MMIO()
	if err != nil {
		t.Fatal(err)
	}
	if !m.Write || m.Addr != 0xd0000000 || len(m.Data) != 1 || m.Data[0] != 0x5a {
		t.Fatalf("mmio = %+v, want write of 0x5a at 0xd0000000", m)
	}
}

func TestIRQChipAndEventFDs(t *testing.T) {
	s := openKVM(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(PITSpeakerDummy); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.IRQFD(efd, 5); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveIRQFD(efd, 5); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.CheckExtension(CapIOEventFD); v == 0 {
		t.Log("KVM_CAP_IOEVENTFD not supported; skipping ioeventfd part")
		return
	}
	ev := IOEvent{Addr: 0xd0000050, Len: 4}
	if err := vm.IOEventFD(efd, ev); err != nil {
		t.Fatal(err)
	}
	if err := vm.RemoveIOEventFD(efd, ev); err != nil {
		t.Fatal(err)
	}
}

func TestVCPUState(t *testing.T) {
	s := openKVM(t)
	_, cpu := realModeVM(t, s, []byte{0xf4})
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	const msrTSCAux = 0xc0000103
	if err := cpu.SetMSRs([]MSREntry{{Index: msrTSCAux, Data: 7}}); err != nil {
		t.Fatal(err)
	}
	got, err := cpu.MSRs(msrTSCAux)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Data != 7 {
		t.Errorf("TSC_AUX = %d, want 7", got[0].Data)
	}
	if _, err := cpu.FPU(); err != nil {
		t.Error(err)
	}
	ev, err := cpu.VCPUEvents()
	if err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetVCPUEvents(&ev); err != nil {
		t.Error(err)
	}
	if st, err := cpu.MPState(); err != nil || st != MPStateRunnable {
		t.Errorf("MPState = %d, %v", st, err)
	}
	if khz, err := cpu.TSCKHz(); err != nil || khz == 0 {
		t.Logf("TSC kHz = %d, %v", khz, err)
	}
	tr, err := cpu.Translate(0x123)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Valid == 1 && tr.PhysicalAddress != 0x123 {
		t.Errorf("real-mode translate 0x123 -> %#x", tr.PhysicalAddress)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open("/nonexistent/kvm"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(nonexistent) = %v, want ErrNotExist", err)
	}
	if _, err := Open("/dev/null"); err == nil {
		t.Error("Open(/dev/null) succeeded")
	}
}

func TestCapString(t *testing.T) {
	if CapIRQFD.String() != "KVM_CAP_IRQFD" || Cap(9999).String() != "KVM_CAP_9999" {
		t.Errorf("Cap.String: %v %v", CapIRQFD, Cap(9999))
	}
	if ExitIO.String() != "io" || ExitReason(99).String() != "exit-99" {
		t.Errorf("ExitReason.String: %v %v", ExitIO, ExitReason(99))
	}
}
