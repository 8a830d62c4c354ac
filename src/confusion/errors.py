"""The one exception family of the toolkit.

Errors are raised where input enters (files, arrays, names, run directories); the command
line turns any of them into one line on stderr and exit code 2.
"""

from __future__ import annotations


class ConfusionError(Exception):
    """Base class: something the user gave us cannot be used as it is."""


class InputError(ConfusionError):
    """An array, file or option that is malformed: wrong shape, NaN, not probabilities..."""


class RunStoreError(ConfusionError):
    """A directory that is not a run store, or one whose contents contradict run.json."""


class RunLockedError(RunStoreError):
    """Another live process is writing to this run directory."""


class UnknownNameError(ConfusionError):
    """A dataset, architecture or method name that is not registered."""


class WorkerDiedError(ConfusionError):
    """A training process ended without a word (killed, out of memory); rerunning resumes."""
