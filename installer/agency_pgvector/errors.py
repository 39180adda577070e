"""The one error type the CLI turns into a clean message."""


class UserError(Exception):
    """Something the operator can fix: the message says what is wrong and how to fix it."""

    exit_code = 2


class Busy(UserError):
    """Another run holds the lock for this client."""

    exit_code = 75
