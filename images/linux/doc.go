// Package linux loads Linux kernels for the x86-64 64-bit boot protocol
// (Documentation/arch/x86/boot.rst): it parses bzImage and vmlinux images,
// decompresses a bzImage's payload on the host (the in-guest decompressor is
// hopelessly slow on an instruction-emulating host), places the vmlinux ELF
// at its physical addresses, and writes the zero page (struct boot_params),
// command line, initrd, e820 map, an MP table and ACPI tables into guest
// memory.
//
// Following the rust-vmm linux-loader split, a loader places bytes and
// returns what it placed; a separate step writes the boot parameters:
//
//	k, err := linux.Parse(image)                     // bzImage or vmlinux, checked
//	vmlinux, dinfo, err := linux.Decompress(ctx, k, cacheDir) // host-side, cached by SHA-256
//	lr, err := linux.LoadELF(mem, vmlinux)           // PT_LOADs at p_paddr; lr.Entry
//	bp := linux.BootParams{Header: k.Header, Cmdline: cmdline, Initrd: initrd}
//	layout, err := bp.Write(mem, lr)                 // zero page, cmdline, initrd, e820
//	err = linux.WriteMPTable(mem, cpus)              // CPUs, IOAPIC, IRQ routing
//	err = linux.WriteACPI(mem, cpus, devices)        // the same and virtio-mmio, for ACPI kernels
//
// or all of it at once with Load. Everything is placed through the
// images.Memory interface; the package knows nothing of vCPUs.
//
// # Guest-physical layout
//
//	0x7000   ZeroPageAddr   struct boot_params (4 KiB)
//	0x20000  CmdlineAddr    command line, NUL-terminated (≤ CmdlineMax)
//	0x9fc00  MPTableAddr    MP floating pointer + configuration table
//	0xe0000  ACPIAddr       RSDP, then XSDT, FADT, MADT, DSDT (WriteACPI)
//	         [EBDAStart, HighMemStart) = [0x9fc00, 0x100000) reserved in e820
//	≥1 MiB   the kernel's PT_LOAD segments at their p_paddr (16 MiB for
//	         x86-64 kernels built with the default CONFIG_PHYSICAL_START)
//	top      the initrd, page-aligned, at the top of the RAM region above
//	         1 MiB and below initrd_addr_max (2 GiB − 1 for x86-64 kernels)
//
// The e820 map (E820) makes all RAM usable except [0x9fc00, 0x100000); the
// 3–4 GiB hole (control page 0xc0000000, virtio-mmio, IOAPIC, LAPIC) is left
// out, as on a PC.
//
// # What the VMM must set up before entering the kernel
//
// The boot CPU (vCPU 0) enters at Boot.Entry (LoadResult.Entry, the
// physical address of startup_64; 0x1000000 for a default x86-64 kernel) in
// 64-bit mode, as boot.rst's "64-bit Boot Protocol" requires:
//
//   - RIP = Entry; RSI = ZeroPageAddr (0x7000); RFLAGS = 0x2 (IF=0,
//     interrupts off); all other general registers 0. RSP may be anything
//     mapped (startup_64 loads its own stack first thing); 0x8ff0 is fine.
//   - Long mode: EFER = LME|LMA (0x500); CR0 = PE|MP|ET|NE|WP|PG
//     (0x80050033; at least PE|PG); CR4 = PAE (0x20); CR3 = a PML4 that
//     identity-maps at least the kernel [Start, End), the zero page and the
//     command line — simplest: identity-map the low 4 GiB (2 MiB or 1 GiB
//     pages), as for tiny guests. startup_64 builds and switches to its own
//     page tables immediately.
//   - GDT with __BOOT_CS = 0x10 (entry 2: 64-bit code, 0x00af9b000000ffff:
//     base 0, limit 4 GiB, type 0xb execute/read/accessed, S=1, DPL 0, P=1,
//     L=1, D=0, G=1) and __BOOT_DS = 0x18 (entry 3: data,
//     0x00cf93000000ffff: type 0x3 read/write/accessed, S=1, P=1, D/B=1,
//     G=1). CS = 0x10; DS, ES, SS (and FS, GS) = 0x18, with KVM segment
//     descriptors matching those GDT entries. Note these selectors differ
//     from the tiny-guest ABI (code 0x08, data 0x10): the GDT must be built
//     per guest kind. No IDT is needed (the kernel installs its own).
//   - CPUID: KVM_GET_SUPPORTED_CPUID passed to KVM_SET_CPUID2 (with the
//     feature masking DESIGN.md describes on kvm_pvm hosts).
//   - With an in-kernel irqchip (KVM_CREATE_IRQCHIP: IOAPIC at 0xfec00000,
//     LAPIC at 0xfee00000) and WriteMPTable: set each vCPU's LAPIC LVT
//     LINT0 to ExtINT and LINT1 to NMI (KVM_GET_LAPIC/KVM_SET_LAPIC, as
//     Firecracker does). Only vCPU 0 gets the register state above; the
//     other vCPUs are created but left in their reset state: Linux wakes
//     them with INIT/SIPI through the LAPIC (they start in real mode at the
//     kernel's trampoline). The kernel learns the CPU count from the MP
//     table (CONFIG_X86_MPPARSE); the I/O APIC id is cpus.
//
// A bzImage's own 64-bit entry (Kernel.Protected loaded at 1 MiB, entered
// at 1 MiB + 0x200) also works with the same register state but runs the
// in-guest decompressor; Load never uses it.
package linux
