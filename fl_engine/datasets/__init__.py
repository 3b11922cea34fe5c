"""Loaders of public research cohorts into FedHaem tables (quick research path, no FHIR)."""
from fl_engine.datasets.classic import CLASSIC_DATASETS, ClassicEncoder, load_classic
from fl_engine.datasets.iwgpm import load_iwgpm

__all__ = ["CLASSIC_DATASETS", "ClassicEncoder", "load_classic", "load_iwgpm"]
