"""Federated analytics from aggregates: exact Cox proportional hazards (cox)."""
