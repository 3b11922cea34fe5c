"""FedHaem ETL: a hospital's files -> FHIR R4 bundles -> ML-ready table + quality report, and
the node's local dataset registry.

Entry points:
- ``etl.pipeline.run_etl(use_case, sources, out_dir, mapping=None)``: one ETL run.
- ``etl.registry.DatasetRegistry(data_dir)``: register / list / get / load_table (verified).
- ``etl.announce.announce(manager_url, node_token, metadata, ca_file=None)``: metadata to the
  manager.
- ``etl.cli``: the node-operator commands ``etl``, ``report``, ``register``.

Declarative mappings live in ``etl/mappings`` (YAML): ``features.yaml`` (how each schema column
is carried in FHIR and recognised in exports), one file per use case, ``genes.yaml`` and the
IWG-PM layout ``iwgpm.yaml``. Plain Python: never imports the portal or the web stack.
"""
