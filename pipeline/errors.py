"""The one exception type a stage raises for problems a user can fix."""


class PipelineError(Exception):
    """A bad input, param or environment: the message names what, where, and the fix.

    `mt` prints the message (no traceback) and exits with `exit_code`.
    """

    exit_code = 2


class ConfigError(PipelineError):
    """params.yaml has a wrong key, type or value."""


class DataError(PipelineError):
    """A corpus file is missing, unreadable or breaks a data rule."""


class ValidationFailed(PipelineError):
    """Great Expectations found rows that break the data contract."""

    exit_code = 3
