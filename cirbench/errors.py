"""Errors that mean "the user asked for something wrong": the CLI prints them without a traceback."""


class CirbenchError(Exception):
    """A user-facing error; the message says what is wrong and how to fix it."""


class DataError(CirbenchError):
    """A dataset folder, annotation file or prediction file is missing or malformed."""


class ConfigError(CirbenchError):
    """A bad option, spec file, method name, noise rate, ..."""
