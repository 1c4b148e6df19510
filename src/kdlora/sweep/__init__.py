"""Sweeps: run a grid's expected runs resumably on an executor, and report their status.

Submodules: claims (no two sweeps on one run), scheduler (resume, dependencies, retries), progress
(the bar), status (completion against a grid). One run in its own process: kdlora.executors.child.
"""
