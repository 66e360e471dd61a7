"""The registry's one error type."""

from pipeline.errors import PipelineError


class RegistryError(PipelineError):
    """The tracking store is unreachable or refused a step, or a registry input is missing.

    Raised before anything is half-made: no model version without its tags, no alias moved.
    """
