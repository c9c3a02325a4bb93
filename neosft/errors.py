"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2; and
`redact`, which keeps credentials written into URLs out of such messages."""

import re


class UserError(Exception):
    """Bad input, configuration or environment that the user can fix; never a bug."""


class Unreachable(UserError):
    """A service (object storage) that did not answer: the same call may succeed later."""


def redact(text: str) -> str:
    """`text` without the credentials written into its URLs (`scheme://user:secret@host` -> `scheme://host`)."""
    return re.sub(r"(\w+://)[^/@\s]*@", r"\1", text)
