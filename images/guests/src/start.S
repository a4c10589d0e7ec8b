/* Entry for C tiny guests. ABI v1: rdi = boot info, rsi = vCPU index,
 * rsp = top of this vCPU's stack minus 8, interrupts off, long mode. */
	.section .text.start, "ax"
	.globl _start
_start:
	and	$-16, %rsp		/* main sees the SysV alignment */
	call	main
	mov	%eax, %edi
	call	vm_exit
1:	cli
	hlt
	jmp	1b
