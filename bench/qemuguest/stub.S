# stub.S: the PVH entry that lets QEMU boot a microvm tiny guest unchanged.
#
# QEMU (-M microvm -kernel X) enters an ELF that carries a Xen PVH note in
# 32-bit protected mode with paging off. A tiny guest (ABI v1) expects what
# microvm's VMM sets up from the host before the first instruction: 64-bit
# long mode, an identity map of the low 4 GiB, a flat GDT (code 0x08, data
# 0x10), RDI = boot info, RSI = vCPU index, RSP 16-byte aligned minus 8,
# RFLAGS = 0x2. This stub does exactly that and jumps to the guest's entry;
# the guest's own bytes run unchanged. The page tables are prebuilt data
# (no loop runs at boot), so the stub costs ~20 instructions.
#
# Layout (linked at STUB_BASE = 0x1000000, flat binary; TestStubMatchesSource in
# wrap_test.go rebuilds it):
#   +0x0000 PML4   +0x1000 PDPT   +0x2000..0x5fff four PDs (2 MiB pages)
#   +0x6000 u64 guest entry (patched by Wrap)   +0x6008 magic "MVMPVH01"
#   +0x6010 PVH entry (32-bit code)   +0x7000 boot info   stack to +0x9000
#
# Rebuild:
#   gcc -c -o stub.o stub.S
#   ld -m elf_x86_64 -N -Ttext=0x1000000 --oformat binary -o stub.bin stub.o
	.text
	.globl	_start
_start:
pml4:
	.quad	pdpt + 0x3
	.fill	511, 8, 0
pdpt:
	.quad	pd + 0x0000 + 0x3
	.quad	pd + 0x1000 + 0x3
	.quad	pd + 0x2000 + 0x3
	.quad	pd + 0x3000 + 0x3
	.fill	508, 8, 0
pd:
	.set	i, 0
	.rept	2048
	.quad	(i << 21) | 0x83	# present, writable, 2 MiB page
	.set	i, i + 1
	.endr
guest_entry:
	.quad	0
	.ascii	"MVMPVH01"

	.code32
pvh_entry:
	cli
	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	%cr4, %eax
	or	$0x20, %eax		# PAE
	mov	%eax, %cr4
	mov	$0xc0000080, %ecx	# EFER
	rdmsr
	or	$0x100, %eax		# LME
	wrmsr
	mov	%cr0, %eax
	or	$0x80010001, %eax	# PG | WP | PE
	mov	%eax, %cr0
	lgdt	gdt_desc
	ljmp	$0x08, $long_entry

	.code64
long_entry:
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$stack_top - 8, %rsp
	mov	$bootinfo, %edi
	xor	%esi, %esi
	pushq	$0x2
	popfq
	jmp	*guest_entry

	.balign	8
gdt:
	.quad	0
	.quad	0x00af9b000000ffff	# 0x08: 64-bit code
	.quad	0x00cf93000000ffff	# 0x10: data
gdt_desc:
	.word	gdt_desc - gdt - 1
	.long	gdt

	.balign	0x1000
bootinfo:
	.ascii	"MVMBOOT1"		# magic
	.long	1			# version
	.long	1			# cpus
	.quad	0			# mem_size: patched by Wrap
	.quad	0			# cmdline_addr
	.long	0			# cmdline_len
	.long	0
	.quad	0			# tsc_khz: unknown
	.balign	0x1000
stack:
	.fill	0x1000, 1, 0
stack_top:
	.section .note.GNU-stack,"",@progbits
