"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    """Bad input, configuration or environment that the user can fix; never a bug."""


class Unreachable(UserError):
    """A service (object storage) that did not answer: the same call may succeed later."""
