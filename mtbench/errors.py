"""User-facing errors. The CLI prints each as one line and exits with code 2."""
from __future__ import annotations


class MtbenchError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class UnknownNameError(MtbenchError, KeyError):
    """A suite, algorithm, dataset, metric or backbone name that nothing registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(MtbenchError):
    """Two plugins registered the same name."""


class ProtocolError(MtbenchError):
    """An N-way K-shot request that the data cannot satisfy."""


class DataError(MtbenchError):
    """Missing or corrupt data files."""


class PluginLoadError(MtbenchError):
    """A plugin module failed to import or does not follow the hook specs."""


class SuiteError(MtbenchError):
    """A malformed suite file."""


class DivergedError(MtbenchError):
    """A fit whose loss became NaN, infinite or exploded (e.g. a learning rate far too large)."""
