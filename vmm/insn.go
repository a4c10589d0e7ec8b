package vmm

// insnName names the x86-64 instruction at the start of b, for the
// instructions a guest on kvm_pvm is likely to stop at (the emulator lacks
// them) — "" when it is none of those. It skips legacy and REX prefixes and
// knows VEX/EVEX-encoded (AVX) instructions only by their prefix.
func insnName(b []byte) string {
	var rep, repne, opsize, rexW bool
	i := 0
	for ; i < len(b) && i < 14; i++ {
		switch c := b[i]; {
		case c == 0xf3:
			rep = true
		case c == 0x66:
			opsize = true
		case c == 0xf2:
			repne = true
		case c == 0x2e, c == 0x36, c == 0x3e, c == 0x26, c == 0x64, c == 0x65, c == 0x67, c == 0xf0:
		case c >= 0x40 && c <= 0x4f:
			rexW = c&8 != 0
			i++
			goto opcode
		default:
			goto opcode
		}
	}
opcode:
	b = b[min(i, len(b)):]
	if len(b) == 0 {
		return ""
	}
	switch b[0] {
	case 0xc4, 0xc5:
		return "VEX-encoded (AVX) instruction"
	case 0x62:
		return "EVEX-encoded (AVX-512) instruction"
	case 0xcc:
		return "int3"
	case 0x9b:
		return "fwait"
	case 0x0f:
	default:
		return ""
	}
	if len(b) < 2 {
		return ""
	}
	var modrm byte
	hasModRM := len(b) >= 3
	if hasModRM {
		modrm = b[2]
	}
	reg := modrm >> 3 & 7
	mem := modrm>>6 != 3
	switch b[1] {
	case 0x01:
		switch modrm {
		case 0xd0:
			return "xgetbv"
		case 0xd1:
			return "xsetbv"
		case 0xca:
			return "clac"
		case 0xcb:
			return "stac"
		case 0xf9:
			return "rdtscp"
		}
	case 0xae:
		if !hasModRM {
			return ""
		}
		if rep && !mem && reg <= 3 {
			return [...]string{"rdfsbase", "rdgsbase", "wrfsbase", "wrgsbase"}[reg]
		}
		if mem {
			names := [...]string{"fxsave", "fxrstor", "ldmxcsr", "stmxcsr", "xsave", "xrstor", "xsaveopt", "clflush"}
			n := names[reg]
			if rexW && reg != 2 && reg != 3 && reg != 7 {
				n += "64"
			}
			return n
		}
		switch reg {
		case 5:
			return "lfence"
		case 6:
			return "mfence"
		case 7:
			return "sfence"
		}
	case 0xc7:
		if !hasModRM {
			return ""
		}
		switch {
		case mem && reg == 1 && rexW:
			return "cmpxchg16b"
		case mem && reg == 1:
			return "cmpxchg8b"
		case mem && reg == 3:
			return "xrstors"
		case mem && reg == 4:
			return "xsavec"
		case mem && reg == 5:
			return "xsaves"
		case !mem && reg == 6:
			return "rdrand"
		case !mem && reg == 7:
			return "rdseed"
		}
	case 0xb8:
		if rep {
			return "popcnt"
		}
	case 0xbc:
		if rep {
			return "tzcnt"
		}
	case 0xbd:
		if rep {
			return "lzcnt"
		}
	case 0x38:
		if len(b) >= 3 {
			switch {
			case b[2] == 0xf0 || b[2] == 0xf1:
				if repne {
					return "crc32"
				}
				return "movbe"
			case b[2] == 0x82 && opsize:
				return "invpcid"
			case b[2] >= 0xc8 && b[2] <= 0xcd:
				return "SHA instruction"
			case b[2] >= 0xdb && b[2] <= 0xdf && opsize:
				return "AES-NI instruction"
			case opsize:
				return "SSSE3/SSE4 instruction"
			default:
				return "SSSE3 instruction"
			}
		}
	case 0x3a:
		if len(b) >= 3 && b[2] == 0x44 && opsize {
			return "pclmulqdq"
		}
		return "SSSE3/SSE4 instruction"
	case 0x0b:
		return "ud2"
	}
	return ""
}
