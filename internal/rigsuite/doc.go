// Package rigsuite runs the Go tests of the packages that need /dev/kvm
// inside the nested-KVM rig (internal/rig), for hosts that have no
// /dev/kvm of their own: their test binaries, the repository's files and
// the microvm binary are copied into an L1 Linux with a real SVM-backed
// KVM, where each package's tests run as they would on a KVM host. The
// package has no code of its own; see rigsuite_test.go.
package rigsuite
