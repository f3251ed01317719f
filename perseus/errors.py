"""Errors that Perseus reports to users as one clear line instead of a traceback."""

from __future__ import annotations


class PerseusError(Exception):
    """Base class for errors the CLI prints as a single line and exits with status 2."""


class InputError(PerseusError, ValueError):
    """Bad user input: a file, a line in it, or a named field, and what is wrong with it.

    The message always reads ``WHERE: PROBLEM`` so it can be printed as is, e.g.
    ``profiles/x.csv:14: time must be a positive number, got '-0.1'``.
    """

    def __init__(self, where: str, problem: str, line: int | None = None) -> None:
        self.where = where
        self.line = line
        self.problem = problem
        location = f"{where}:{line}" if line is not None else where
        super().__init__(f"{location}: {problem}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, int | None]]:
        # Pickled by field, so it survives the server's frontier process pool intact.
        return (type(self), (self.where, self.problem, self.line))


class DeviceError(PerseusError, RuntimeError):
    """A GPU could not be queried or controlled; the message says what to do about it."""
