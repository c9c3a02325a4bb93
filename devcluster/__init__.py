"""The dev cluster's parts of our own (test infrastructure, not the product): the process node."""
