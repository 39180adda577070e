"""The errors the CLI turns into one clean sentence, and the exit code each one means (docs/operator.md)."""

OK = 0
UNHEALTHY = 1  # status found a problem, an end-to-end check failed
USAGE = 2  # a bad option or value: nothing was touched
OPERATOR = 3  # the command cannot go on until the operator acts (the message says how)
INTERNAL = 70  # a bug (EX_SOFTWARE): the component log has the traceback
BUSY = 75  # another run holds the client's lock (EX_TEMPFAIL): retry later
INTERRUPTED = 130


class UserError(Exception):
    """Something the operator can fix: the message says what is wrong and how to fix it."""

    exit_code = OPERATOR


class InputError(UserError):
    """A value given on the command line (or through make) is not valid: fix the value and re-run."""

    exit_code = USAGE


class Busy(UserError):
    """Another run holds the lock for this client."""

    exit_code = BUSY
