"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2; `redact`,
which keeps credentials written into URLs out of such messages; and `path_error`, an OS error on a path in words."""

import re


class UserError(Exception):
    """Bad input, configuration or environment that the user can fix; never a bug."""


class Unreachable(UserError):
    """A service (object storage) that did not answer: the same call may succeed later."""


def redact(text: str) -> str:
    """`text` without the credentials written into its URLs (`scheme://user:secret@host` -> `scheme://host`)."""
    return re.sub(r"(\w+://)[^/@\s]*@", r"\1", text)


def path_error(path: object, error: OSError) -> str:
    """One line for any OS error on `path`: a missing file, a folder, no permission, a file where a folder was
    expected (ENOTDIR), a loop of symbolic links (ELOOP), a name too long (ENAMETOOLONG), ..."""
    import errno

    reasons = {
        errno.ENOENT: "does not exist",
        errno.EISDIR: "is a folder, not a file",
        errno.EACCES: "is not readable (permission denied)",
        errno.EPERM: "is not readable (permission denied)",
        errno.ENOTDIR: "does not exist (a part of its path is a file, not a folder)",
        errno.ELOOP: "cannot be opened: its symbolic links form a loop",
        errno.ENAMETOOLONG: "cannot be opened: the name is too long",
    }
    return f"{path} {reasons.get(error.errno or 0, 'cannot be read: ' + (error.strerror or type(error).__name__))}"
