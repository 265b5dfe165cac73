"""One exception type for mistakes a user can make, so the CLI can print one line instead of a traceback."""


class DeepprobeError(Exception):
    """A problem the user can fix (bad path, unknown class, unfitting weights, bad option value)."""


class ImageError(DeepprobeError):
    """An input image that is missing, unreadable, empty, truncated or too large."""


class OptimizationStopped(DeepprobeError):
    """The optimization hit a NaN/inf loss; carries the best result so far when there is one."""

    def __init__(self, message: str, best=None):
        super().__init__(message)
        self.best = best
