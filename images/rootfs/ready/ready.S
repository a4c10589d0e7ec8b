# ready: the benchmark workload for the container paths.
#
# Its first instructions write one byte to fd 3 (the "ready" pipe the launcher
# passes in; ignored when fd 3 is not open), then it exits with status 0. It is
# the container-side twin of the "ready" tiny guest, which writes port 0x502
# and then port 0x501 with status 0. Apart from the one write it does what
# /bin/true does.
#
# Rebuild (ready_test.go checks the committed binary matches):
#   gcc -nostdlib -static -s -Wl,--build-id=none -Wl,-n -o ready ready.S
	.text
	.globl	_start
_start:
	mov	$1, %eax		# write(3, "r", 1)
	mov	$3, %edi
	lea	msg(%rip), %rsi
	mov	$1, %edx
	syscall
	mov	$60, %eax		# exit(0)
	xor	%edi, %edi
	syscall
msg:
	.byte	'r'
	.section .note.GNU-stack,"",@progbits
