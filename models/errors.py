"""Errors that name what is wrong, for users pointing tandem at a checkpoint."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file, or a file disagrees with config.json."""
