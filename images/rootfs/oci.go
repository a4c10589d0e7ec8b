package rootfs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// OCIVersion is the runtime-spec version the bundles declare.
const OCIVersion = "1.0.2"

// Config is the subset of the OCI runtime specification's config.json that
// microvm writes and reads. Field names and JSON keys follow the
// specification (github.com/opencontainers/runtime-spec, config.md).
type Config struct {
	OCIVersion string   `json:"ociVersion"`
	Process    *Process `json:"process,omitempty"`
	Root       *Root    `json:"root,omitempty"`
	Hostname   string   `json:"hostname,omitempty"`
	Mounts     []Mount  `json:"mounts,omitempty"`
	Linux      *Linux   `json:"linux,omitempty"`
}

// Process is the container's process.
type Process struct {
	Terminal        bool          `json:"terminal"`
	User            User          `json:"user"`
	Args            []string      `json:"args"`
	Env             []string      `json:"env,omitempty"`
	Cwd             string        `json:"cwd"`
	Capabilities    *Capabilities `json:"capabilities,omitempty"`
	Rlimits         []Rlimit      `json:"rlimits,omitempty"`
	NoNewPrivileges bool          `json:"noNewPrivileges,omitempty"`
}

// User is the uid/gid the process runs as.
type User struct {
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
}

// Capabilities are the process's capability sets.
type Capabilities struct {
	Bounding    []string `json:"bounding,omitempty"`
	Effective   []string `json:"effective,omitempty"`
	Inheritable []string `json:"inheritable,omitempty"`
	Permitted   []string `json:"permitted,omitempty"`
	Ambient     []string `json:"ambient,omitempty"`
}

// Rlimit is one POSIX resource limit.
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Root is the container's root filesystem.
type Root struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly,omitempty"`
}

// Mount is one filesystem mounted into the container.
type Mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Linux holds the Linux-specific settings.
type Linux struct {
	Resources     *Resources  `json:"resources,omitempty"`
	Namespaces    []Namespace `json:"namespaces,omitempty"`
	MaskedPaths   []string    `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string    `json:"readonlyPaths,omitempty"`
}

// Namespace names one namespace the container gets.
type Namespace struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

// Resources are the cgroup limits.
type Resources struct {
	Devices []DeviceCgroup `json:"devices,omitempty"`
	Memory  *Memory        `json:"memory,omitempty"`
	CPU     *CPU           `json:"cpu,omitempty"`
	Pids    *Pids          `json:"pids,omitempty"`
}

// DeviceCgroup is one device cgroup rule.
type DeviceCgroup struct {
	Allow  bool   `json:"allow"`
	Type   string `json:"type,omitempty"`
	Access string `json:"access,omitempty"`
}

// Memory limits memory use.
type Memory struct {
	Limit *int64 `json:"limit,omitempty"`
}

// CPU limits CPU time: Quota microseconds per Period microseconds.
type CPU struct {
	Quota  *int64  `json:"quota,omitempty"`
	Period *uint64 `json:"period,omitempty"`
}

// Pids limits the number of tasks.
type Pids struct {
	Limit int64 `json:"limit"`
}

// validNamespaces are the namespace types of the runtime spec.
var validNamespaces = map[string]bool{
	"pid": true, "network": true, "mount": true, "ipc": true, "uts": true,
	"user": true, "cgroup": true, "time": true,
}

// BundleOptions describes the container a generated config.json runs.
type BundleOptions struct {
	// Args is the command line; required.
	Args []string
	// Env is the environment; empty gets a default PATH.
	Env []string
	// Hostname defaults to "microvm".
	Hostname string
	// MemoryBytes limits memory (0: no limit).
	MemoryBytes int64
	// CPUs limits CPU time to this many CPUs (0: no limit).
	CPUs float64
	// NoNetwork leaves out the network namespace (the container shares the
	// host's network). By default the container gets its own.
	NoNetwork bool
	// NoCgroupMount leaves out the /sys/fs/cgroup mount.
	NoCgroupMount bool
}

// DefaultEnv is the environment of a container when none is given.
var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}

// DefaultEnv returns the environment used when a container's is not given.
func DefaultEnv() []string { return append([]string(nil), defaultEnv...) }

// NewConfig returns the config of a container that runs opts.Args in rootfs
// with terminal false, the standard namespaces (pid, network, ipc, uts,
// mount) and mounts (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys,
// /sys/fs/cgroup), the default capability set of runc's `runc spec`, and no
// rlimits (raising one needs CAP_SYS_RESOURCE, which some hosts lack).
// rootfs may be absolute or relative to the bundle directory.
func NewConfig(rootfs string, opts BundleOptions) (*Config, error) {
	if len(opts.Args) == 0 {
		return nil, errors.New("oci config: no command given")
	}
	if rootfs == "" {
		return nil, errors.New("oci config: no rootfs given")
	}
	env := opts.Env
	if len(env) == 0 {
		env = DefaultEnv()
	}
	host := opts.Hostname
	if host == "" {
		host = "microvm"
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	c := &Config{
		OCIVersion: OCIVersion,
		Process: &Process{
			Args: append([]string(nil), opts.Args...),
			Env:  append([]string(nil), env...),
			Cwd:  "/",
			Capabilities: &Capabilities{
				Bounding: caps, Effective: caps, Permitted: caps, Ambient: caps,
			},
			NoNewPrivileges: true,
		},
		Root:     &Root{Path: rootfs, Readonly: true},
		Hostname: host,
		Mounts: []Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &Linux{
			Resources: &Resources{Devices: []DeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []Namespace{
				{Type: "pid"}, {Type: "network"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	if !opts.NoCgroupMount {
		c.Mounts = append(c.Mounts, Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}})
	}
	if opts.NoNetwork {
		c.Linux.Namespaces = []Namespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}}
	}
	if opts.MemoryBytes < 0 || opts.CPUs < 0 {
		return nil, errors.New("oci config: negative resource limit")
	}
	if opts.MemoryBytes > 0 {
		m := opts.MemoryBytes
		c.Linux.Resources.Memory = &Memory{Limit: &m}
	}
	if opts.CPUs > 0 {
		period := uint64(100000)
		quota := int64(opts.CPUs * float64(period))
		if quota < 1000 {
			quota = 1000
		}
		c.Linux.Resources.CPU = &CPU{Quota: &quota, Period: &period}
	}
	return c, nil
}

// Validate checks the fields a runtime needs: a 1.x ociVersion, a root path,
// a process with arguments and an absolute cwd, known namespace types, and
// absolute mount destinations.
func (c *Config) Validate() error {
	if !strings.HasPrefix(c.OCIVersion, "1.") {
		return fmt.Errorf("oci config: unsupported ociVersion %q (want 1.x)", c.OCIVersion)
	}
	if c.Root == nil || c.Root.Path == "" {
		return errors.New("oci config: root.path missing")
	}
	if c.Process == nil {
		return errors.New("oci config: process missing")
	}
	if len(c.Process.Args) == 0 || c.Process.Args[0] == "" {
		return errors.New("oci config: process.args is empty")
	}
	if !strings.HasPrefix(c.Process.Cwd, "/") {
		return fmt.Errorf("oci config: process.cwd %q is not absolute", c.Process.Cwd)
	}
	for i, m := range c.Mounts {
		if !strings.HasPrefix(m.Destination, "/") {
			return fmt.Errorf("oci config: mounts[%d].destination %q is not absolute", i, m.Destination)
		}
	}
	if c.Linux != nil {
		seen := map[string]bool{}
		for _, ns := range c.Linux.Namespaces {
			if !validNamespaces[ns.Type] {
				return fmt.Errorf("oci config: unknown namespace type %q", ns.Type)
			}
			if seen[ns.Type] {
				return fmt.Errorf("oci config: namespace %q listed twice", ns.Type)
			}
			seen[ns.Type] = true
		}
		if r := c.Linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit < -1 {
			return fmt.Errorf("oci config: memory limit %d is invalid", *r.Memory.Limit)
		}
	}
	return nil
}

// ParseConfig decodes and validates a config.json. Unknown fields are
// ignored (real configs carry many this package does not model).
func ParseConfig(data []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("oci config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("oci config: trailing data after the JSON object")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ReadConfig reads and validates bundleDir/config.json.
func ReadConfig(bundleDir string) (*Config, error) {
	data, err := os.ReadFile(filepath.Join(bundleDir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	return ParseConfig(data)
}

// WriteBundle writes c as bundleDir/config.json (creating bundleDir). A
// relative c.Root.Path is taken relative to bundleDir, per the spec.
func WriteBundle(bundleDir string, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(bundleDir, 0o755); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	data, err := json.MarshalIndent(c, "", "\t")
	if err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return writeFileAtomic(filepath.Join(bundleDir, "config.json"), append(data, '\n'), 0o644)
}
