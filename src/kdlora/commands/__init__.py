"""Thin CLI commands over the library's functions; each module owns one area's commands."""
