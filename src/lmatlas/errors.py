"""The one exception type for mistakes a user can fix.

The CLI prints its message as one line and exits non-zero, without a traceback; anything else
that escapes is a bug in lmatlas and keeps its traceback.
"""


class LmatlasError(ValueError):
    """A problem with the user's input: a file, an argument, a model folder, a config field.

    A ``ValueError``, so that code written against transformers' errors still catches it."""
