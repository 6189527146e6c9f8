"""The one error type user-facing commands turn into a one-line message and a non-zero exit."""


class E2WMError(Exception):
    """Bad input or a failed job, reported to the user as a single line."""
