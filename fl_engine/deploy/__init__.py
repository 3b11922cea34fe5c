"""Deployment of the federation runtime: dev PKI and node keys (pki), SuperLink / SuperNode
processes (processes), the prefork ClientApp launcher (prefork), the Control API wrapper used
by the portal (control), opt-in Flower wait tuning (flower_tuning), and a whole federation on
one machine for tests and benchmarks (local)."""
