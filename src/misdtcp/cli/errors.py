"""The CLI's error for people."""


class UsageError(Exception):
    """A problem with what the user asked for: printed as one sentence, exit status 2."""
