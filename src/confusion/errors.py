"""The one exception family of the toolkit.

Errors are raised where input enters (files, arrays, names, run directories); the command
line turns any of them into one line on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "DISTRIBUTION",
    "ConfusionError",
    "InputError",
    "OccupiedError",
    "ParameterError",
    "RunLockedError",
    "RunStoreError",
    "UnknownNameError",
    "WorkerDiedError",
    "install_extra",
    "python_name",
]

# The name the toolkit installs under: `confusion` on PyPI is an unrelated package (a TOML
# pre-processor). The import package stays `confusion`.
DISTRIBUTION = "ensemble-confusion"


def install_extra(extra: str) -> str:
    """The command that installs an optional extra, as every hint gives it.

    Parameters
    ----------
    extra : str
        An extra of pyproject.toml (train, lightning, transformers, text, dask, all).

    Returns
    -------
    str
        ``pip install 'ensemble-confusion[EXTRA]'``.
    """
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class ConfusionError(Exception):
    """Base class: something the user gave us cannot be used as it is."""


class InputError(ConfusionError):
    """An array, file or option that is malformed: wrong shape, NaN, not probabilities..."""


class ParameterError(InputError):
    """A value of a named parameter of a public Python entry that cannot be used.

    The message is written once, with each parameter it names as ``{name}``; ``str()`` reads
    with the Python parameter (``lr must be ...``), and the command line renders the same
    message with its flag (``--lr must be ...``) through `render`.

    Parameters
    ----------
    template : str
        The message, naming parameters as ``{name}``.
    *parameters : str
        The Python names of the parameters it names.

    Examples
    --------
    >>> str(ParameterError("{lr} must be a positive number, got -1", "lr"))
    'lr must be a positive number, got -1'
    >>> ParameterError("{lr} must be a positive number", "lr").render(lambda name: "--" + name)
    '--lr must be a positive number'
    """

    def __init__(self, template: str, *parameters: str):
        self.template = template
        self.parameters = parameters
        super().__init__(self.render(python_name))

    def render(self, name: Callable[[str], str]) -> str:
        """The message with each parameter written as `name(parameter)`.

        Parameters
        ----------
        name : callable
            Maps a Python parameter name to how it is written (e.g. its command-line flag).

        Returns
        -------
        str
            The message.
        """
        message = self.template
        for parameter in self.parameters:
            message = message.replace("{" + parameter + "}", name(parameter))
        return message


def python_name(parameter: str) -> str:
    """How a Python caller reads a parameter: its own name.

    Parameters
    ----------
    parameter : str
        The parameter's name.

    Returns
    -------
    str
        The same name.
    """
    return parameter


class RunStoreError(ConfusionError):
    """A directory that is not a run store, or one whose contents contradict run.json."""


class RunLockedError(RunStoreError):
    """Another live process is writing to this run directory."""


class OccupiedError(ParameterError, RunStoreError):
    """A directory chosen for a new run (by the parameter the message names) holds something else."""


class UnknownNameError(ConfusionError):
    """A dataset, architecture or method name that is not registered."""


class WorkerDiedError(ConfusionError):
    """A training process ended without a word (killed, out of memory); rerunning resumes."""
