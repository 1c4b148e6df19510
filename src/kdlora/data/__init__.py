"""Tasks and data: the GLUE task table, custom tasks, loading, tokenisation, metrics.

Import submodules directly; this package's __init__ stays import-light (no torch) because the
analysis package uses kdlora.data.metrics.
"""
