//go:build tools

// Package tools pins the upstream main package this wrapper builds.
package tools

import _ "github.com/kubeflow/training-operator/cmd/training-operator.v1"
