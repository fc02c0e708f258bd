"""Errors of the training loop (kept apart so the CLI can name them without importing torch)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says why and at which step."""
