"""Running neosft on Kubernetes: render the chart, validate what it renders, and drive the cluster.

`render` (Helm engine) -> `validate` (Kubernetes and PyTorchJob schemas) -> `cluster` (official client).
"""
