"""Source readers: each turns a hospital's files into canonical ``PatientRecord`` objects."""
from .common import SourceResult

__all__ = ["SourceResult"]
