"""Object storage behind one abstract interface: `location(uri)` gives a `Location` for a local path,
`file://` or `s3://bucket/key`; `readable(uri)` also accepts the read-only sources of a build
(`https://`, `hf://datasets/...`, and `sample`, the corpus shipped with neosft).

Only `neosft.storage.s3` imports boto3; every user-fixable failure is a `UserError` naming the URI, never a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from neosft.errors import UserError
from neosft.storage.base import Location, Readable

EMBEDDED_STORE = ".neosft/store"  # the embedded default's object store: a local folder, one sub-folder per bucket
SAMPLE = "sample"  # the SOURCE word for the shipped sample corpus


def location(uri: str | os.PathLike, endpoint: str | None = None) -> Location:
    """The `Location` for a local path, a `file://` URI or an `s3://bucket/key` URI (on the S3 server at
    `endpoint`, '' for AWS; None: NEOSFT_S3_ENDPOINT, or AWS when unset)."""
    uri = os.fspath(uri)
    if not uri:
        raise UserError("an empty path: name a folder or s3://bucket/prefix")
    if uri.startswith("s3://"):
        from neosft.storage.s3 import s3_location  # boto3 behind it: only for s3://

        return s3_location(uri, endpoint)
    if uri.startswith("file://"):
        uri = uri[7:]
        if not uri:
            raise UserError("file:// has an empty path: name a folder, as in file:///data/neosft")
    elif "://" in uri:
        raise UserError(f"{uri}: unsupported storage scheme; use a local path or s3://bucket/key")
    from neosft.storage.local import LocalLocation  # local.py imports base: no cycle through this package

    return LocalLocation(Path(uri))


def readable(uri: str) -> Readable:
    """A build's SOURCE: what `location` accepts, `https://` and `http://` URLs, `hf://datasets/...`, or `sample`."""
    if uri == SAMPLE:
        from neosft.sample import SAMPLE_CORPUS  # the sample's package: only when asked for

        return location(SAMPLE_CORPUS)
    if uri.startswith("hf://"):
        from neosft.storage.http import hub_file  # huggingface_hub and urllib3: only for hf://

        return hub_file(uri)
    if uri.startswith(("https://", "http://")):
        from neosft.storage.http import HttpFile  # urllib3: only for http(s)://

        return HttpFile(uri)
    return location(uri)


def forget_clients() -> None:
    """Drop pooled connections, e.g. in a forked child, which must open its own."""
    from neosft.storage import http, s3  # the clients' modules, whichever were used

    s3.forget_clients()
    http._POOL = None
