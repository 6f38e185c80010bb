"""The one error the image pipeline raises for bad input: a message a person can act on."""

from __future__ import annotations


class PipelineError(ValueError):
    """An input or option the pipeline cannot use. ``str(e)`` names the file when there is one."""
