#!/usr/bin/env bash
# build.sh OUTDIR: build every tiny guest from src/ into OUTDIR/NAME.elf.
# The output is byte-for-byte reproducible with the same gcc; the committed
# blobs in bin/ are checked against a rebuild by TestGuestsMatchSources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
CC=${CC:-gcc}
CFLAGS=(-O2 -std=gnu11 -Wall -Werror -ffreestanding -fno-pic -fno-pie -fno-stack-protector
	-fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none
	-mno-red-zone -mgeneral-regs-only -fno-builtin -ffile-prefix-map="$here"=.)
LDFLAGS=(-nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,"$here/src/link.ld"
	-Wl,-z,noexecstack -Wl,-z,max-page-size=0x1000 -Wl,-s)
cd "$here/src"
for c in hello exit smp hostile virtio cpuid; do
	"$CC" "${CFLAGS[@]}" "${LDFLAGS[@]}" -o "$out/$c.elf" start.S "$c.c" lib.c
done
for s in ready; do
	"$CC" "${CFLAGS[@]}" "${LDFLAGS[@]}" -o "$out/$s.elf" "$s.S"
done
