"""Generator backends. Third-party objects (sdv, pgmpy) stay inside their module."""
