"""Errors that name the problem and the fix; every user-facing failure raises one of these."""

from __future__ import annotations


class BlindspotsError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class DataError(BlindspotsError):
    """A dataset is missing, corrupt, truncated or fails its checksum."""


class SpecError(BlindspotsError):
    """A model spec string, split name or other identifier is not recognised."""


class CheckpointError(BlindspotsError):
    """A checkpoint is missing, truncated, or does not match the model it claims to hold."""


class InputError(BlindspotsError, ValueError):
    """Images, labels or targets handed to an attack or model are invalid."""


class OutputError(BlindspotsError):
    """An output folder cannot be used: it is a file, cannot be written, or another run holds it."""


class DeviceError(BlindspotsError):
    """A torch device is named that does not exist here."""
