/*
 * microvm synthetic test kernel: the bzImage container.
 *
 * A real setup header (boot.rst, "The Real-Mode Kernel Header"), protocol
 * 2.15, in front of the protected-mode part: a 32-bit stub at offset 0
 * (startup_32, unsupported: halts), the 64-bit program at offset 0x200
 * (startup_64, per XLF_KERNEL_64), then the payload: the test program as a
 * vmlinux-like ELF, gzip-compressed or uncompressed (PAYLOAD, chosen by the
 * Makefile). A boot loader that decompresses on the host boots the ELF at
 * 16 MiB; one that loads the protected-mode part at 1 MiB enters at 1 MiB +
 * 0x200. Both run the same code.
 *
 * Built with: gcc -c -DPAYLOAD='"file"' -DKVERSION='"..."' header.S
 */
#define SETUP_SECTS 1

	.code16
	.text
	.globl	_start
_start:					/* boot sector: not bootable from a BIOS */
	cli
1:	hlt
	jmp	1b

	.org	0x1f1
setup_sects:	.byte	SETUP_SECTS
root_flags:	.word	0
syssize:	.long	SYSSIZE			/* protected-mode size / 16, from the Makefile */
ram_size:	.word	0
vid_mode:	.word	0xffff			/* NORMAL_VGA */
root_dev:	.word	0
boot_flag:	.word	0xaa55

	.org	0x200
	.byte	0xeb				/* jmp short: its offset byte ends the header */
	.byte	setup_header_end - 0x202
header:		.ascii	"HdrS"
version:	.word	0x020f			/* 2.15 */
realmode_swtch:	.long	0
start_sys_seg:	.word	0x1000
kernel_version:	.word	kversion - 0x200
type_of_loader:	.byte	0
loadflags:	.byte	0x01			/* LOADED_HIGH */
setup_move_size: .word	0x8000
code32_start:	.long	0x100000
ramdisk_image:	.long	0
ramdisk_size:	.long	0
bootsect_kludge: .long	0
heap_end_ptr:	.word	0
ext_loader_ver:	.byte	0
ext_loader_type: .byte	0
cmd_line_ptr:	.long	0
initrd_addr_max: .long	0x7fffffff
kernel_alignment: .long	0x200000
relocatable_kernel: .byte 1			/* the program is position-independent */
min_alignment:	.byte	12
xloadflags:	.word	0x0003			/* XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G */
cmdline_size:	.long	2047
hardware_subarch: .long	0
hardware_subarch_data: .quad 0
payload_offset:	.long	payload - pm_start
payload_length:	.long	payload_end - payload
setup_data:	.quad	0
pref_address:	.quad	0x1000000
init_size:	.long	0x200000
handover_offset: .long	0
kernel_info_offset: .long 0
setup_header_end:

kversion:	.asciz	KVERSION

	.org	(SETUP_SECTS + 1) * 512
pm_start:
	.code32
startup_32:				/* 32-bit entry: not supported, halts */
	cli
1:	hlt
	jmp	1b

	.org	pm_start + 0x200
	.code64
startup_64:
	.incbin	"prog.bin"

payload:
	.incbin	PAYLOAD
payload_end:

	.section .note.GNU-stack, "", @progbits
