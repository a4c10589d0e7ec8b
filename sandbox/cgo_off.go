//go:build !cgo

package sandbox

// builtWithCgo says whether this binary was built with cgo enabled (then
// its threads may be started by glibc).
const builtWithCgo = false
