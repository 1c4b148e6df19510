"""Test support shipped with the package (tests, benchmarks and CI use it; runs never do):
tiny random models (tiny), synthetic task data (synthetic_data), synthetic run records
(synthetic_records)."""
