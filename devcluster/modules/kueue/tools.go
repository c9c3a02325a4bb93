//go:build tools

// Package tools pins the upstream main package this wrapper builds.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
