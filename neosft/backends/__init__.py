"""Where a run executes: one interface over the local machine and the Kubeflow backends."""
