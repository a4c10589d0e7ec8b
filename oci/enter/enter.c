/* enter: how the microvm oci agent starts the workload inside the container.
 *
 *   enter ROOT CWD UID GID GROUPS PROG [ARG...]
 *
 * chroots to ROOT ("-": stays in /), changes to CWD, sets the supplementary
 * groups (GROUPS: comma-separated gids, or "-" for none), the gid and the
 * uid, and execs PROG with the environment it was given: PROG as given when
 * it holds a '/', else the first match in the environment's PATH (the
 * default PATH when it has none), as execvp does. The agent is busybox,
 * outside the container's root, so this last step must stand alone: no
 * libc, raw system calls, a few KiB. Build: make -C oci/enter (the binary
 * is committed and embedded by oci/guest.go). On error it says why on
 * stderr and exits 126 (cannot enter or switch) or 127 (no such program),
 * as shells do. */

typedef unsigned int u32;

static long sys3(long n, long a, long b, long c) {
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

enum {
	SYS_write = 1,
	SYS_execve = 59,
	SYS_exit = 60,
	SYS_chdir = 80,
	SYS_setuid = 105,
	SYS_setgid = 106,
	SYS_setgroups = 116,
	SYS_chroot = 161,
};
enum { ENOENT = 2, EACCES = 13, ENOTDIR = 20 };

static unsigned long len(const char *s) {
	unsigned long n = 0;
	while (s[n]) n++;
	return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, (long)len(s)); }

static void die(const char *what, const char *arg, int status) {
	say("enter: ");
	say(what);
	if (arg) {
		say(" ");
		say(arg);
	}
	say("\n");
	sys3(SYS_exit, status, 0, 0);
	for (;;) {}
}

/* num parses a decimal u32 from s up to end (exclusive) or NUL. */
static int num(const char *s, const char *end, u32 *v) {
	unsigned long x = 0;
	if (s == end || !*s) return 0;
	for (; s != end && *s; s++) {
		if (*s < '0' || *s > '9') return 0;
		x = x * 10 + (unsigned long)(*s - '0');
		if (x > 0xffffffffUL) return 0;
	}
	*v = (u32)x;
	return 1;
}

static int has_slash(const char *s) {
	for (; *s; s++)
		if (*s == '/') return 1;
	return 0;
}

#define MAXGROUPS 64
#define PATHMAX 4096

static const char defpath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/* execp execs prog through path; it returns only on failure, with the
 * errno that describes it best (EACCES when some match was not executable). */
static long execp(const char *prog, char **argv, char **envp) {
	const char *path = defpath;
	char buf[PATHMAX];
	long err = -ENOENT, seen_eacces = 0;
	unsigned long plen = len(prog);
	for (char **e = envp; *e; e++)
		if ((*e)[0] == 'P' && (*e)[1] == 'A' && (*e)[2] == 'T' && (*e)[3] == 'H' && (*e)[4] == '=') path = *e + 5;
	for (const char *p = path;;) {
		const char *q = p;
		while (*q && *q != ':') q++;
		unsigned long dlen = (unsigned long)(q - p), n = 0;
		if (dlen + 1 + plen + 1 <= PATHMAX) {
			if (dlen == 0) buf[n++] = '.'; /* an empty entry is the cwd */
			for (const char *c = p; c != q; c++) buf[n++] = *c;
			buf[n++] = '/';
			for (unsigned long i = 0; i < plen; i++) buf[n++] = prog[i];
			buf[n] = 0;
			err = sys3(SYS_execve, (long)buf, (long)argv, (long)envp);
			if (err == -EACCES) seen_eacces = 1;
			else if (err != -ENOENT && err != -ENOTDIR) return err;
		}
		if (!*q) break;
		p = q + 1;
	}
	return seen_eacces ? -EACCES : err;
}

void start_c(long *sp) {
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	u32 uid, gid, groups[MAXGROUPS];
	long n = 0;
	if (argc < 7) die("usage: enter ROOT CWD UID GID GROUPS PROG [ARG...]", 0, 126);
	const char *root = argv[1], *cwd = argv[2];
	if (!num(argv[3], 0, &uid)) die("bad uid", argv[3], 126);
	if (!num(argv[4], 0, &gid)) die("bad gid", argv[4], 126);
	if (!(argv[5][0] == '-' && argv[5][1] == 0)) {
		const char *p = argv[5];
		for (;;) {
			const char *q = p;
			while (*q && *q != ',') q++;
			if (n == MAXGROUPS || !num(p, q, &groups[n])) die("bad groups", argv[5], 126);
			n++;
			if (!*q) break;
			p = q + 1;
		}
	}
	if (!(root[0] == '-' && root[1] == 0)) {
		if (sys3(SYS_chdir, (long)root, 0, 0) < 0) die("cannot chdir to the root", root, 126);
		if (sys3(SYS_chroot, (long)".", 0, 0) < 0) die("cannot chroot to", root, 126);
	}
	/* The cwd is entered as root (it may be closed to the user, as runc
	 * allows) and again as the user when that first try fails. */
	int in_cwd = sys3(SYS_chdir, (long)cwd, 0, 0) == 0;
	if (sys3(SYS_setgroups, n, (long)groups, 0) < 0) die("setgroups failed for", argv[5], 126);
	if (sys3(SYS_setgid, gid, 0, 0) < 0) die("setgid failed for", argv[4], 126);
	if (sys3(SYS_setuid, uid, 0, 0) < 0) die("setuid failed for", argv[3], 126);
	if (!in_cwd && sys3(SYS_chdir, (long)cwd, 0, 0) < 0) die("cannot chdir to process.cwd", cwd, 126);
	char *prog = argv[6];
	long err = has_slash(prog) ? sys3(SYS_execve, (long)prog, (long)(argv + 6), (long)envp) : execp(prog, argv + 6, envp);
	if (err == -ENOENT || err == -ENOTDIR) die("no such program:", prog, 127);
	die("cannot exec", prog, 126);
}

__asm__(".globl _start\n"
	"_start:\n"
	"\tmov %rsp, %rdi\n"
	"\tand $-16, %rsp\n"
	"\tcall start_c\n"
	"\thlt\n");
