// Command gofloor is kvm_floor.c's work done by a Go program: the least a
// VMM written in Go can do, whole process. It opens /dev/kvm, creates a VM
// with 2 MiB of RAM and one vCPU in 64-bit long mode with an identity map,
// runs the 13-byte guest that writes the ready port (0x502) and then the
// exit port (0x501) with status 0, and tears everything down. A write to
// the ready port also writes one byte to fd 3 (ignored when fd 3 is not
// open), as the bench's kvm_floor.c does.
//
// It uses the standard library's syscall package (no fmt, no os: their
// initialisers are not the floor), has no flags and starts no goroutine:
// what it costs beyond kvm_floor.c is the Go runtime.
// `microvm bench` builds it (go build, into its cache) for the go-floor
// path, beside kvm-floor and vm-proc.
//
// Exit status: the guest's status (0), or 1 with a message when a step
// fails.
package main

import (
	"errors"
	"strconv"
	"syscall"
	"unsafe"
)

// The ioctls, as in <linux/kvm.h>.
const (
	kvmCreateVM           = 0xae01
	kvmGetVCPUMmapSize    = 0xae04
	kvmCreateVCPU         = 0xae41
	kvmSetUserMemRegion   = 0x4020ae46
	kvmRun                = 0xae80
	kvmSetRegs            = 0x4090ae82
	kvmGetSregs           = 0x8138ae83
	kvmSetSregs           = 0x4138ae84
	kvmExitIO             = 2
	kvmExitHLT            = 5
	memSize               = 2 << 20
	guestEntry            = 0x100000 - 0x1000
	portReady, portExit   = 0x502, 0x501
	runExitReason         = 8  // kvm_run.exit_reason
	runIOPort             = 34 // kvm_run.io.port
	runIODataOffset       = 40 // kvm_run.io.data_offset
	pml4, pdpt, pd        = 0x2000, 0x3000, 0x4000
	pagePresentWritable   = 3
	pageSize2MPresentRW   = 0x83
	cr0PEPGWP, cr4PAE     = 0x80000001 | 1<<16, 1 << 5
	eferLMELMA            = 1<<8 | 1<<10
	codeSelector, dataSel = 8, 16
)

// mov dx,0x502; out dx,al; mov dx,0x501; xor eax,eax; out dx,al; hlt
var guest = []byte{0x66, 0xba, 0x02, 0x05, 0xee, 0x66, 0xba, 0x01, 0x05, 0x31, 0xc0, 0xee, 0xf4}

type segment struct {
	base                                uint64
	limit                               uint32
	selector                            uint16
	typ, present, dpl, db, s, l, g, avl uint8
	unusable, _                         uint8
}

type dtable struct {
	base  uint64
	limit uint16
	_     [3]uint16
}

type sregs struct {
	cs, ds, es, fs, gs, ss, tr, ldt segment
	gdt, idt                        dtable
	cr0, cr2, cr3, cr4, cr8, efer   uint64
	apicBase                        uint64
	interruptBitmap                 [4]uint64
}

type regs struct {
	rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags uint64
}

type memRegion struct {
	slot, flags                  uint32
	guestPhys, size, userAddress uint64
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	for {
		r, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}

func main() {
	status, err := run()
	if err != nil {
		syscall.Write(2, []byte("gofloor: "+err.Error()+"\n"))
		syscall.Exit(1)
	}
	syscall.Exit(status)
}

// fail wraps err with what failed.
func fail(what string, err error) (int, error) {
	return 0, errors.New(what + ": " + err.Error())
}

func run() (int, error) {
	kvm, err := syscall.Open("/dev/kvm", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail("open /dev/kvm", err)
	}
	defer syscall.Close(kvm)
	runSize, err := ioctl(kvm, kvmGetVCPUMmapSize, nil)
	if err != nil {
		return fail("KVM_GET_VCPU_MMAP_SIZE", err)
	}
	vm, err := ioctl(kvm, kvmCreateVM, nil)
	if err != nil {
		return fail("KVM_CREATE_VM", err)
	}
	defer syscall.Close(vm)
	mem, err := syscall.Mmap(-1, 0, memSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_ANONYMOUS|syscall.MAP_NORESERVE)
	if err != nil {
		return fail("mmap guest memory", err)
	}
	defer syscall.Munmap(mem)
	region := memRegion{size: memSize, userAddress: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemRegion, unsafe.Pointer(&region)); err != nil {
		return fail("KVM_SET_USER_MEMORY_REGION", err)
	}
	cpu, err := ioctl(vm, kvmCreateVCPU, nil)
	if err != nil {
		return fail("KVM_CREATE_VCPU", err)
	}
	defer syscall.Close(cpu)
	kvmRunPage, err := syscall.Mmap(cpu, 0, runSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fail("mmap kvm_run", err)
	}
	defer syscall.Munmap(kvmRunPage)

	put64 := func(off int, v uint64) { *(*uint64)(unsafe.Pointer(&mem[off])) = v }
	put64(pml4, pdpt|pagePresentWritable)
	put64(pdpt, pd|pagePresentWritable)
	put64(pd, pageSize2MPresentRW) // one 2 MiB page
	copy(mem[guestEntry:], guest)

	var s sregs
	if _, err := ioctl(cpu, kvmGetSregs, unsafe.Pointer(&s)); err != nil {
		return fail("KVM_GET_SREGS", err)
	}
	s.cr3, s.cr4, s.cr0, s.efer = pml4, cr4PAE, cr0PEPGWP, eferLMELMA
	s.cs = segment{limit: 0xffffffff, selector: codeSelector, present: 1, typ: 11, s: 1, l: 1, g: 1}
	data := segment{limit: 0xffffffff, selector: dataSel, present: 1, typ: 3, s: 1, db: 1, g: 1}
	s.ds, s.es, s.fs, s.gs, s.ss = data, data, data, data, data
	if _, err := ioctl(cpu, kvmSetSregs, unsafe.Pointer(&s)); err != nil {
		return fail("KVM_SET_SREGS", err)
	}
	r := regs{rip: guestEntry, rflags: 2, rsp: 0x80000}
	if _, err := ioctl(cpu, kvmSetRegs, unsafe.Pointer(&r)); err != nil {
		return fail("KVM_SET_REGS", err)
	}

	for {
		if _, err := ioctl(cpu, kvmRun, nil); err != nil {
			return fail("KVM_RUN", err)
		}
		switch reason := *(*uint32)(unsafe.Pointer(&kvmRunPage[runExitReason])); reason {
		case kvmExitIO:
			port := *(*uint16)(unsafe.Pointer(&kvmRunPage[runIOPort]))
			off := *(*uint64)(unsafe.Pointer(&kvmRunPage[runIODataOffset]))
			switch port {
			case portReady:
				syscall.Write(3, []byte{'r'})
			case portExit:
				if off >= uint64(len(kvmRunPage)) {
					return 0, errors.New("KVM_RUN: I/O data offset " + strconv.FormatUint(off, 10) + " outside kvm_run")
				}
				return int(kvmRunPage[off]), nil
			}
		case kvmExitHLT:
			return 0, nil
		default:
			return 0, errors.New("unexpected exit reason " + strconv.FormatUint(uint64(reason), 10))
		}
	}
}
