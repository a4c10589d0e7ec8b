/*
 * microvm synthetic test kernel: the 64-bit program.
 *
 * Entered in 64-bit mode at startup_64 with RSI = struct boot_params (the
 * Linux 64-bit boot protocol). It prints over COM1 (port 0x3f8, polling
 * LSR.THRE at 0x3fd) what the boot loader told it, then writes 0 to the
 * microvm exit port 0x501:
 *
 *	testkernel: entry 0x<address of startup_64>
 *	boot_params: 0x<RSI>
 *	cmdline: <the command line>
 *	e820: 0x<addr> 0x<size> <type>        (one line per entry)
 *	initrd: 0x<addr> 0x<size> fnv1a 0x<FNV-1a 32 of the initrd bytes>
 *	testkernel: exit 0
 *
 * Numbers are lower-case hex, 16 digits (8 for the checksum). Lines end
 * in "\n". The code is position-independent (RIP-relative only), so the
 * same bytes run from the ELF (at 16 MiB) and from the bzImage's own 64-bit
 * entry (1 MiB + 0x200). It is short in instructions: a guest on an
 * instruction-emulating host runs ~0.6 us per instruction; the initrd
 * checksum costs 6 instructions per byte, so keep test initrds small.
 */
	.code64
	.text
	.globl	startup_64
startup_64:
	cli
	mov	%rsi, %r12			/* boot_params */
	lea	stack_top(%rip), %rsp

	lea	msg_entry(%rip), %rbx
	call	puts
	lea	startup_64(%rip), %r8
	call	puthex16
	call	newline

	lea	msg_bp(%rip), %rbx
	call	puts
	mov	%r12, %r8
	call	puthex16
	call	newline

	lea	msg_cmdline(%rip), %rbx
	call	puts
	mov	0x228(%r12), %ebx		/* cmd_line_ptr */
	mov	0xc8(%r12), %eax		/* ext_cmd_line_ptr */
	shl	$32, %rax
	or	%rax, %rbx
	jz	1f
	call	puts
1:	call	newline

	movzbl	0x1e8(%r12), %r13d		/* e820_entries */
	lea	0x2d0(%r12), %r14		/* e820_table */
2:	test	%r13d, %r13d
	jz	3f
	lea	msg_e820(%rip), %rbx
	call	puts
	mov	(%r14), %r8
	call	puthex16
	call	space
	mov	8(%r14), %r8
	call	puthex16
	call	space
	mov	16(%r14), %edi
	add	$'0', %edi
	call	putc
	call	newline
	add	$20, %r14
	dec	%r13d
	jmp	2b

3:	lea	msg_initrd(%rip), %rbx
	call	puts
	mov	0x218(%r12), %r13d		/* ramdisk_image */
	mov	0xc0(%r12), %eax		/* ext_ramdisk_image */
	shl	$32, %rax
	or	%rax, %r13
	mov	%r13, %r8
	call	puthex16
	call	space
	mov	0x21c(%r12), %r14d		/* ramdisk_size */
	mov	0xc4(%r12), %eax		/* ext_ramdisk_size */
	shl	$32, %rax
	or	%rax, %r14
	mov	%r14, %r8
	call	puthex16
	lea	msg_fnv(%rip), %rbx
	call	puts
	mov	$0x811c9dc5, %r8d		/* FNV-1a 32 offset basis */
	mov	$0x01000193, %ecx		/* FNV prime */
	test	%r14, %r14
	jz	5f
4:	movzbl	(%r13), %eax
	xor	%eax, %r8d
	imul	%ecx, %r8d
	inc	%r13
	dec	%r14
	jnz	4b
5:	mov	$8, %ecx
	call	puthex
	call	newline

	lea	msg_exit(%rip), %rbx
	call	puts
	xor	%eax, %eax
	mov	$0x501, %edx			/* microvm exit port: status 0 */
	out	%al, %dx
halt:	cli
	hlt
	jmp	halt

/* putc: write %dil to COM1 once the transmitter is empty. Clobbers rax, rdx. */
putc:
	mov	$0x3fd, %edx
1:	in	%dx, %al
	test	$0x20, %al
	jz	1b
	mov	$0x3f8, %edx
	mov	%edi, %eax
	out	%al, %dx
	ret

/* puts: write the NUL-terminated string at %rbx (at most 4096 bytes).
 * Clobbers rax, rbx, rcx, rdx, rdi. */
puts:
	mov	$4096, %ecx
1:	movzbl	(%rbx), %edi
	test	%edi, %edi
	jz	2f
	call	putc
	inc	%rbx
	dec	%ecx
	jnz	1b
2:	ret

newline:
	mov	$'\n', %edi
	jmp	putc
space:
	mov	$' ', %edi
	jmp	putc

/* puthex16: "0x" and 16 hex digits of %r8. puthex: the low %ecx digits.
 * Clobbers rax, rcx, rdx, rdi, r8, r9. */
puthex16:
	mov	$16, %ecx
puthex:
	mov	%ecx, %r9d
	mov	$'0', %edi
	call	putc
	mov	$'x', %edi
	call	putc
	mov	%r9d, %ecx
	shl	$2, %ecx
	neg	%ecx
	add	$64, %ecx			/* 64 - 4*digits */
	shl	%cl, %r8
1:	rol	$4, %r8
	mov	%r8d, %edi
	and	$0xf, %edi
	lea	hexdigits(%rip), %rax
	movzbl	(%rax,%rdi), %edi
	call	putc
	dec	%r9d
	jnz	1b
	ret

/* PVH entry (XEN_ELFNOTE_PHYS32_ENTRY in the ELF): not supported, halts. */
	.globl	pvh_start
pvh_start:
	hlt
	jmp	pvh_start

hexdigits:	.ascii	"0123456789abcdef"
msg_entry:	.asciz	"testkernel: entry "
msg_bp:		.asciz	"boot_params: "
msg_cmdline:	.asciz	"cmdline: "
msg_e820:	.asciz	"e820: "
msg_initrd:	.asciz	"initrd: "
msg_fnv:	.asciz	" fnv1a "
msg_exit:	.asciz	"testkernel: exit 0\n"

	.bss
	.balign	16
stack:	.skip	1024
stack_top:

	.section .note.Xen, "a"
	.balign	4
	.long	4				/* namesz */
	.long	8				/* descsz */
	.long	18				/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.quad	pvh_start - 0xffffffff80000000	/* physical, as Linux does */

	.section .note.GNU-stack, "", @progbits
