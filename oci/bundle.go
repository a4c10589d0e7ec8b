package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/vmm"
)

// KernelAnnotation names the guest kernel in config.json's annotations.
const KernelAnnotation = "org.microvm.kernel"

// RootfsAnnotation chooses how the bundle's rootfs reaches the guest:
// RootfsImage (the default; $MICROVM_OCI_ROOTFS sets another default) or
// RootfsShare.
const RootfsAnnotation = "org.microvm.rootfs"

// Rootfs modes.
const (
	// RootfsImage: a read-only ext4 image of the rootfs (cached by
	// content) on virtio-blk, under an overlay whose writable layer is a
	// tmpfs in the VM. Fast to boot, shared between containers of one
	// image; the container's writes stay in the VM.
	RootfsImage = "image"
	// RootfsShare: the rootfs directory itself over virtio-9p, as runc
	// has it: the container's writes land in the bundle's directory.
	RootfsShare = "9p"
	// rootTag is the 9p tag of a shared rootfs.
	rootTag = "mvroot"
)

// Bundle is a loaded, checked OCI bundle.
type Bundle struct {
	Dir    string         // absolute bundle directory
	Rootfs string         // absolute root file system directory
	Config *rootfs.Config // the parsed config.json
	Agent  *AgentConfig   // what the guest agent applies
	Plan   VMPlan         // the VM to build
	Notes  []string       // what of config.json is not honoured, one line each
	// Shares are the bind-mounted host directories, served to the guest
	// over virtio-9p; Files are the bind-mounted host files, copied into
	// the guest at create.
	Shares []vmm.ShareConfig
	Files  []GuestFile
}

// GuestFile is a host file copied into the guest's initramfs at Guest.
type GuestFile struct {
	Guest, Host string
}

// Limits of bind mounts: a VM has room for MaxVirtioDevices devices (the
// rootfs image is one); a file bind is copied, so it must be small.
const (
	maxShares    = vmm.MaxVirtioDevices - 1
	maxFileBind  = 1 << 20
	guestFileDir = GuestDir + "/files"
	// p9Options are the mount options of a share: 9P2000.L over virtio,
	// permissions checked by the guest kernel (the server acts as root),
	// no caching (the host directory is live), 256 KiB messages.
	p9Options = "trans=virtio,version=9p2000.L,access=client,cache=none,msize=262144"
)

// AgentConfig is what the in-guest agent (init) applies before it execs
// the workload. It travels to the guest as JSON.
type AgentConfig struct {
	Args     []string `json:"args"`
	Env      []string `json:"env"`
	Cwd      string   `json:"cwd"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	Groups   []uint32 `json:"groups,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	Terminal bool     `json:"terminal"`
	Readonly bool     `json:"readonlyRoot"`
	// RootShare: the root is the 9p share rootTag, not the disk image.
	RootShare bool         `json:"rootShare,omitempty"`
	Mounts    []AgentMount `json:"mounts"`
	// ReadonlyPaths are made read-only and MaskedPaths hidden inside the
	// root (linux.readonlyPaths, linux.maskedPaths), as runc does.
	ReadonlyPaths []string      `json:"readonlyPaths,omitempty"`
	MaskedPaths   []string      `json:"maskedPaths,omitempty"`
	Rlimits       []AgentRlimit `json:"rlimits,omitempty"`
}

// AgentMount is one mount the agent makes inside the guest's root.
type AgentMount struct {
	Target string   `json:"target"`
	Type   string   `json:"type"`
	Source string   `json:"source"`
	Flags  []string `json:"flags,omitempty"`
}

// AgentRlimit is one setrlimit call (Resource is the RLIMIT_* number).
type AgentRlimit struct {
	Resource int    `json:"resource"`
	Soft     uint64 `json:"soft"`
	Hard     uint64 `json:"hard"`
}

// VMPlan is the micro-VM a bundle asks for.
type VMPlan struct {
	Kernel   string // guest kernel path ("" = the default in the cache)
	MemoryMB int
	CPUs     int
	Network  string // "none": the VM gets no network device
	Rootfs   string // RootfsImage or RootfsShare
}

// rlimits maps the spec's rlimit names to Linux x86-64 RLIMIT_* numbers.
var rlimits = map[string]int{
	"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
	"RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
	"RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
	"RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}

// guestFS are the mount types the lean guest kernel can make by itself.
var guestFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "tmpfs": true, "devpts": true,
}

const (
	defaultMemoryMB = 128
	minMemoryMB     = 64
	maxMemoryMB     = 16 << 10
	maxCPUs         = 64
)

// LoadBundle reads and checks the bundle in dir and translates it. Every
// error names what is wrong with the bundle; nothing is created.
func LoadBundle(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w", dir, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("bundle %q: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %q: not a directory", dir)
	}
	cfg, err := rootfs.ReadConfig(abs)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w", dir, err)
	}
	var extra struct {
		Annotations map[string]string `json:"annotations"`
	}
	if data, err := os.ReadFile(filepath.Join(abs, "config.json")); err == nil {
		_ = json.Unmarshal(data, &extra) // already parsed once: only the annotations are new
	}
	b, err := Translate(abs, cfg, extra.Annotations)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w", dir, err)
	}
	fi, err := os.Stat(b.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: root file system: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %q: root file system %s is not a directory", dir, b.Rootfs)
	}
	if err := checkExecutable(b.Rootfs, b.Agent.Args[0], b.Agent.Env); err != nil {
		return nil, fmt.Errorf("bundle %q: process.args[0]: %w", dir, err)
	}
	if b.Plan.Rootfs == "" {
		b.Plan.Rootfs = RootfsImage
		if env := os.Getenv("MICROVM_OCI_ROOTFS"); env != "" {
			if env != RootfsImage && env != RootfsShare {
				return nil, fmt.Errorf("MICROVM_OCI_ROOTFS=%q: want %q or %q", env, RootfsImage, RootfsShare)
			}
			b.Plan.Rootfs = env
		}
	}
	if b.Plan.Rootfs == RootfsShare {
		b.Shares = append(b.Shares, vmm.ShareConfig{Tag: rootTag, Path: b.Rootfs, ReadOnly: b.Agent.Readonly})
	}
	b.Agent.RootShare = b.Plan.Rootfs == RootfsShare
	resolveBinds(b)
	return b, nil
}

// resolveBinds turns the agent's bind mounts into what the guest can have:
// a host directory becomes a virtio-9p share (Bundle.Shares, mount type
// "9p"), a regular file up to 1 MiB a copy in the initramfs (Bundle.Files,
// mount type "file"); anything else is skipped with a note. A relative
// source is relative to the bundle, as runc has it.
func resolveBinds(b *Bundle) {
	kept := b.Agent.Mounts[:0]
	for _, m := range b.Agent.Mounts {
		if m.Type != "bind" {
			kept = append(kept, m)
			continue
		}
		src := m.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(b.Dir, src)
		}
		ro := hasOption(m.Flags, "ro")
		var opts []string
		for _, o := range m.Flags {
			switch o {
			case "ro", "nosuid", "nodev", "noexec":
				opts = append(opts, o)
			}
		}
		skip := func(why string) {
			b.Notes = append(b.Notes, fmt.Sprintf("bind mount %s of %q: %s (skipped)", m.Target, m.Source, why))
		}
		fi, err := os.Stat(src)
		switch {
		case err != nil:
			skip(err.Error())
		case fi.IsDir():
			if len(b.Shares) == maxShares {
				skip(fmt.Sprintf("a VM takes at most %d shared directories", maxShares))
				continue
			}
			tag := fmt.Sprintf("mvbind%d", len(b.Shares)) // after rootTag, if any
			b.Shares = append(b.Shares, vmm.ShareConfig{Tag: tag, Path: src, ReadOnly: ro})
			kept = append(kept, AgentMount{Target: m.Target, Type: "9p", Source: tag, Flags: append([]string{p9Options}, opts...)})
		case fi.Mode().IsRegular() && fi.Size() <= maxFileBind:
			g := fmt.Sprintf("%s/%d", guestFileDir, len(b.Files))
			b.Files = append(b.Files, GuestFile{Guest: g, Host: src})
			kept = append(kept, AgentMount{Target: m.Target, Type: "file", Source: g, Flags: opts})
		case fi.Mode().IsRegular():
			skip(fmt.Sprintf("a file bind is copied into the VM, and this one is over %d KiB", maxFileBind>>10))
		default:
			skip("only directories and regular files can be offered to the guest")
		}
	}
	b.Agent.Mounts = kept
}

// Translate turns a validated config into the agent's configuration and the
// VM plan, without touching the file system. bundleDir must be absolute.
func Translate(bundleDir string, cfg *rootfs.Config, ann map[string]string) (*Bundle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := cfg.Process
	b := &Bundle{Dir: bundleDir, Config: cfg}
	b.Rootfs = cfg.Root.Path
	if !filepath.IsAbs(b.Rootfs) {
		b.Rootfs = filepath.Join(bundleDir, b.Rootfs)
	}
	env := append([]string(nil), p.Env...)
	if lookupEnv(env, "PATH") == "" {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	a := &AgentConfig{
		Args: append([]string(nil), p.Args...), Env: env, Cwd: p.Cwd,
		UID: p.User.UID, GID: p.User.GID, Groups: append([]uint32(nil), p.User.AdditionalGids...), Hostname: cfg.Hostname,
		Terminal: p.Terminal, Readonly: cfg.Root.Readonly,
	}
	for i, m := range cfg.Mounts {
		t := m.Type
		switch {
		case guestFS[t]:
			a.Mounts = append(a.Mounts, AgentMount{Target: path.Clean(m.Destination), Type: t, Source: m.Source, Flags: m.Options})
		case t == "bind" || hasOption(m.Options, "bind") || hasOption(m.Options, "rbind"):
			// Resolved against the host by LoadBundle (resolveBinds).
			a.Mounts = append(a.Mounts, AgentMount{Target: path.Clean(m.Destination), Type: "bind", Source: m.Source, Flags: m.Options})
		default:
			b.Notes = append(b.Notes, fmt.Sprintf("mounts[%d] %s: file system type %q not in the guest kernel (skipped)", i, m.Destination, t))
		}
	}
	for _, r := range p.Rlimits {
		n, ok := rlimits[r.Type]
		if !ok {
			return nil, fmt.Errorf("process.rlimits: unknown type %q", r.Type)
		}
		if r.Soft > r.Hard {
			return nil, fmt.Errorf("process.rlimits: %s soft %d above hard %d", r.Type, r.Soft, r.Hard)
		}
		a.Rlimits = append(a.Rlimits, AgentRlimit{Resource: n, Soft: r.Soft, Hard: r.Hard})
	}
	if cfg.Linux != nil {
		a.ReadonlyPaths = append([]string(nil), cfg.Linux.ReadonlyPaths...)
		a.MaskedPaths = append([]string(nil), cfg.Linux.MaskedPaths...)
	}
	b.Agent = a
	b.Plan = VMPlan{MemoryMB: defaultMemoryMB, CPUs: 1, Network: "none"}
	b.Plan.Kernel = ann[KernelAnnotation]
	switch r := ann[RootfsAnnotation]; r {
	case "", RootfsImage, RootfsShare:
		b.Plan.Rootfs = r
	default:
		return nil, fmt.Errorf("annotation %s: %q: want %q or %q", RootfsAnnotation, r, RootfsImage, RootfsShare)
	}
	if l := cfg.Linux; l != nil {
		if r := l.Resources; r != nil {
			if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
				mb := int((*r.Memory.Limit + (1<<20 - 1)) >> 20)
				if mb < minMemoryMB {
					b.Notes = append(b.Notes, fmt.Sprintf("memory limit %d MiB raised to the guest minimum %d MiB", mb, minMemoryMB))
					mb = minMemoryMB
				}
				if mb > maxMemoryMB {
					return nil, fmt.Errorf("linux.resources.memory.limit: %d MiB above %d MiB", mb, maxMemoryMB)
				}
				b.Plan.MemoryMB = mb
			}
			if c := r.CPU; c != nil && c.Quota != nil && c.Period != nil && *c.Quota > 0 && *c.Period > 0 {
				n := int((uint64(*c.Quota) + *c.Period - 1) / *c.Period)
				if n > maxCPUs {
					n = maxCPUs
				}
				b.Plan.CPUs = n
			}
		}
		for _, ns := range l.Namespaces {
			if ns.Type == "network" && ns.Path != "" {
				b.Notes = append(b.Notes, fmt.Sprintf("network namespace %s: not joined; the VM has no network device", ns.Path))
			}
		}
	}
	return b, nil
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// checkExecutable finds name in the root file system (through PATH when it
// has no slash) and checks it is an executable regular file.
func checkExecutable(root, name string, env []string) error {
	if strings.Contains(name, "/") {
		return isExec(root, name)
	}
	for _, d := range strings.Split(lookupEnv(env, "PATH"), ":") {
		if d == "" {
			continue
		}
		if isExec(root, path.Join(d, name)) == nil {
			return nil
		}
	}
	return fmt.Errorf("%q not found in the root file system's PATH", name)
}

// isExec resolves p inside root, following symbolic links as the guest
// would (an absolute link target is relative to root), at most 40 deep.
func isExec(root, p string) error {
	cur := path.Clean("/" + p)
	for hops := 0; hops < 40; hops++ {
		host := filepath.Join(root, filepath.FromSlash(cur))
		fi, err := os.Lstat(host)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no such file in the root file system", p)
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(host)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if !path.IsAbs(t) {
				t = path.Join(path.Dir(cur), t)
			}
			cur = path.Clean("/" + t)
			continue
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s: not executable", p)
		}
		return nil
	}
	return fmt.Errorf("%s: too many levels of symbolic links", p)
}
