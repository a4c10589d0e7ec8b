package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/kvm"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
)

// capCheck is one capability row of `microvm check`.
type capCheck struct {
	Name     string `json:"name"`
	Value    int    `json:"value"`
	Required bool   `json:"required"`
	Use      string `json:"use"`
}

// checkReport is the result of `microvm check`.
type checkReport struct {
	Device           string     `json:"device"`
	Usable           bool       `json:"usable"`
	Error            string     `json:"error,omitempty"`
	APIVersion       int        `json:"api_version,omitempty"`
	HostKind         string     `json:"host_kind"`
	HardwareAssisted bool       `json:"hardware_assisted"`
	HostDescription  string     `json:"host_description"`
	Capabilities     []capCheck `json:"capabilities,omitempty"`
	TestBoot         string     `json:"test_boot,omitempty"`
	TestBootMillis   float64    `json:"test_boot_ms,omitempty"`
	CanBoot          bool       `json:"can_boot"`
}

var checkedCaps = []struct {
	cap      kvm.Cap
	required bool
	use      string
}{
	{kvm.CapUserMemory, true, "guest RAM"},
	{kvm.CapSetTSSAddr, true, "TSS placement (Intel)"},
	{kvm.CapExtCPUID, true, "CPUID for guests"},
	{kvm.CapImmediateExit, true, "stopping vCPUs without races"},
	{kvm.CapIRQChip, false, "in-kernel interrupt controllers (Linux guests)"},
	{kvm.CapPIT2, false, "in-kernel timer (Linux guests)"},
	{kvm.CapIRQFD, false, "device interrupts without a VM exit"},
	{kvm.CapIOEventFD, false, "device notifications without a user-space exit"},
	{kvm.CapVCPUEvents, false, "instruction assists on PVM hosts"},
	{kvm.CapGetTSCKHz, false, "TSC frequency in the boot info"},
	{kvm.CapMaxVCPUs, false, "most vCPUs per VM"},
}

func (a *app) newCheckCmd() *cobra.Command {
	var asJSON bool
	var device string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this host can boot guests through /dev/kvm",
		Long: `Check opens /dev/kvm, reports its API version and the capabilities microvm
relies on, tells what kind of KVM this host has (VT-x, AMD-V or kvm_pvm, and
what that means), and boots the embedded ready guest to prove it works.
It exits 0 when the host can boot guests and 125 when it cannot.`,
		Example: `  microvm check
  microvm check --json | jq .host_kind`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep := runCheck(device)
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return withCode(exitHost, err)
				}
			} else {
				printCheck(a, rep)
			}
			if !rep.CanBoot {
				return silentExit(exitHost)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().StringVar(&device, "device", kvm.DevicePath, "KVM device `PATH`")
	return cmd
}

func runCheck(device string) *checkReport {
	kind := vmm.DetectHost()
	rep := &checkReport{Device: device, HostKind: string(kind), HardwareAssisted: kind.HardwareAssisted(), HostDescription: kind.Describe()}
	sys, err := kvm.Open(device)
	if err != nil {
		rep.Error = fmt.Sprintf("%v (microvm needs read/write access to %s: run as root or join the kvm group)", err, device)
		return rep
	}
	defer sys.Close()
	rep.Usable = true
	rep.APIVersion, _ = sys.APIVersion()
	missing := false
	for _, c := range checkedCaps {
		v, _ := sys.CheckExtension(c.cap)
		rep.Capabilities = append(rep.Capabilities, capCheck{Name: c.cap.String(), Value: v, Required: c.required, Use: c.use})
		if c.required && v == 0 {
			missing = true
		}
	}
	if missing {
		rep.Error = "a required KVM capability is missing"
		return rep
	}
	img, err := guests.Get("ready")
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	start := time.Now()
	m, err := vmm.New(vmm.Config{Image: img, MemoryBytes: vmm.MinMemory, System: sys})
	if err != nil {
		rep.TestBoot = "failed: " + err.Error()
		return rep
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := m.Run(ctx)
	switch {
	case err != nil:
		rep.TestBoot = "failed: " + err.Error()
	case res.Reason != vmm.ReasonExit || res.Status != 0 || !res.Ready:
		rep.TestBoot = "failed: " + res.Summary()
	default:
		rep.TestBoot = "ok"
		rep.TestBootMillis = ms(time.Since(start))
		rep.CanBoot = true
	}
	return rep
}

func printCheck(a *app, r *checkReport) {
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(w, "device\t%s\n", r.Device)
	fmt.Fprintf(w, "usable\t%s\n", yes(r.Usable))
	if r.Usable {
		fmt.Fprintf(w, "KVM API version\t%d\n", r.APIVersion)
	}
	fmt.Fprintf(w, "host kind\t%s (%s)\n", r.HostKind, r.HostDescription)
	fmt.Fprintf(w, "hardware-assisted\t%s\n", yes(r.HardwareAssisted))
	for _, c := range r.Capabilities {
		need := "optional"
		if c.Required {
			need = "required"
		}
		state := "missing"
		if c.Value > 0 {
			state = fmt.Sprintf("yes (%d)", c.Value)
		}
		fmt.Fprintf(w, "  %s\t%s, %s: %s\n", c.Name, state, need, c.Use)
	}
	if r.TestBoot != "" {
		fmt.Fprintf(w, "test boot (ready guest)\t%s", r.TestBoot)
		if r.CanBoot {
			fmt.Fprintf(w, " in %.2f ms", r.TestBootMillis)
		}
		fmt.Fprintln(w)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error\t%s\n", r.Error)
	}
	verdict := "this host can boot microvm guests"
	if !r.CanBoot {
		verdict = "this host CANNOT boot microvm guests"
	} else if r.HostKind == string(vmm.HostPVM) {
		verdict += " (instruction-emulated: expect tiny guests to work and Linux to boot only to its init)"
	}
	fmt.Fprintf(w, "verdict\t%s\n", verdict)
	w.Flush()
}

func (a *app) newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print microvm's version",
		Example: "  microvm version\n  microvm version --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(struct {
					Version string `json:"version"`
					Go      string `json:"go"`
					OS      string `json:"os"`
					Arch    string `json:"arch"`
				}{version, runtime.Version(), runtime.GOOS, runtime.GOARCH})
			}
			fmt.Fprintf(a.stdout, "microvm %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the version as JSON on stdout")
	return cmd
}
