"""Synthetic-data generators (CTGAN, Bayesian network, VAE-BGM, synthetic-data sharing) behind
one interface, their federated node/manager protocol, the SAFE validation and the release gate.

Plain Python (numpy, pandas, torch, scikit-learn, pgmpy); never imports the portal.
"""
from .aggregation import MessageError, sum_counts, weighted_fedavg
from .base import BaseGenerator, FederatedGenerator, NotFittedError, Step
from .federated import (FEDERATED, GENERATORS, federated_class, federated_generator, federated_summary,
                        make_generator, train_federated)
from .gate import GateThresholds, build_data_card, evaluate_gate
from .safe import SafeConfig, fit_tstr_model, manager_pool, node_validate, validate_federation
from .spec import ColumnSpec, SpecError, TableSpec
from .transform import manager_merge_summaries, node_column_summaries

__all__ = [
    "BaseGenerator", "NotFittedError", "ColumnSpec", "TableSpec", "SpecError", "MessageError",
    "weighted_fedavg", "sum_counts", "node_column_summaries", "manager_merge_summaries",
    "GENERATORS", "make_generator", "federated_summary", "train_federated",
    "FederatedGenerator", "Step", "FEDERATED", "federated_class", "federated_generator",
    "SafeConfig", "node_validate", "manager_pool", "validate_federation", "fit_tstr_model",
    "GateThresholds", "evaluate_gate", "build_data_card",
]
