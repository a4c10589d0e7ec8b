//go:build cgo

package sandbox

// builtWithCgo says whether this binary was built with cgo enabled (then
// its threads may be started by glibc). A build tag answers for free what
// parsing the build info (debug.ReadBuildInfo) cost every boot to learn.
const builtWithCgo = true
