/* ready: the benchmark guest. Marks ready (port 0x502), then exits 0 (port
 * 0x501): four instructions, two VM exits. */
	.section .text.start, "ax"
	.globl _start
_start:
	mov	$0x502, %dx
	out	%al, %dx
	mov	$0x501, %dx
	xor	%eax, %eax
	out	%al, %dx
1:	cli
	hlt
	jmp	1b
