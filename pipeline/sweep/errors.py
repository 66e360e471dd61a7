"""The error a sweep stops with (exit 2, one line): what failed, where, and what to do."""

from pipeline.errors import PipelineError


class SweepError(PipelineError):
    """A sweep cannot go on: a point failed, the baseline moved, no point has a score."""
