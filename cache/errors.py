"""The user's mistakes, as types: what the command line shows as one line instead of a traceback.

`UserError` is something the user can fix (a run folder in the way, a learning rate that makes training diverge);
`InvalidOption` is also a `ValueError` (an argument of the right type with a value that cannot be used), so library
callers can catch either. A plain `ValueError` elsewhere is a programming error and keeps its traceback. The cache,
dataset, vendor and service settings have their own error types beside these (`CacheError`, `DatasetError`,
`VendorError`, `ConfigError`).
"""


class UserError(Exception):
    """The user can fix this; the message says what happened and what to do."""


class InvalidOption(UserError, ValueError):
    """An option, argument or setting the user gave cannot be used; the message names it and says what would do."""
