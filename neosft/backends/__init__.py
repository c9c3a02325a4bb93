"""Where a run executes: one abstract backend (`base.ExecutionBackend`), on this machine or on a cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neosft.backends.base import ExecutionBackend
    from neosft.storage import Location


def backend_for(
    run: str | None = None,
    *,
    local: bool = False,
    namespace: str | None = None,
    store: str | None = None,
    offline: bool = False,
    on_dataset: Callable[[Location], None] | None = None,
) -> ExecutionBackend:
    """The backend of a run: `Local` for a new local run (`local`) and for a run this machine holds, else
    the cluster's namespace (`offline`: rendering only, no cluster asked)."""
    # each backend imports what it drives (a local S3 server, the Kubernetes client): only the one chosen
    from neosft.backends.local import Local

    if local:
        return Local(store, on_dataset=on_dataset)
    if run is not None and Local().holds(run):
        return Local()
    from neosft.backends.kubernetes import Kubernetes

    return Kubernetes(namespace, offline)
