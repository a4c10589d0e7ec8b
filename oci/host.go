package oci

import (
	"errors"
	"fmt"
	"os"

	"github.com/microvm/microvm/vmm"
)

// ErrHost is wrapped when this host cannot run a container-VM: no usable
// /dev/kvm, or kvm_pvm, where Linux user space (the agent, the workload)
// cannot run. The CLI gives it a status of its own.
var ErrHost = errors.New("host cannot run container VMs")

// CheckHost refuses hosts on which a container-VM cannot run. It opens
// devKVM (normally /dev/kvm) and looks at kind; it takes well under a
// second and starts nothing.
func CheckHost(devKVM string, kind vmm.HostKind) error {
	f, err := os.OpenFile(devKVM, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%v: %w", err, ErrHost)
	}
	f.Close()
	if kind == vmm.HostPVM {
		return fmt.Errorf("KVM here is kvm_pvm, on which Linux user space (the agent and the workload) cannot run: %w", ErrHost)
	}
	return nil
}
