//go:build tools

// Package runtimetools pins the OCI runtime validation suite
// (github.com/opencontainers/runtime-tools: its validation/ programs and
// runtimetest) at versions that build together, for
// scripts/oci-validation.sh. v0.9.0 is the newest release the Go module
// proxy serves (@master is refused); it predates modules, so its
// dependencies are pinned here to the API it was written against
// (runtime-spec v1.0.2, selinux v1.8.0).
package runtimetools

import (
	_ "github.com/opencontainers/runtime-tools/cmd/runtimetest"
	_ "github.com/opencontainers/runtime-tools/validation/util"
)
