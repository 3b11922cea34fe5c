"""Federated survival studies: pure numerics (core), the manager loop (loop), the in-process
executor (executor) and the thin Flower apps (server_app, client_app; app/ holds the Flower
app config)."""
from fl_engine.federation.config import DEFAULT_RUN_CONFIG, RunConfig, parse_run_config
from fl_engine.federation.core import FederationError
from fl_engine.federation.executor import run_in_process
from fl_engine.federation.loop import History, load_model

__all__ = ["DEFAULT_RUN_CONFIG", "FederationError", "History", "RunConfig", "load_model",
           "parse_run_config", "run_in_process"]
