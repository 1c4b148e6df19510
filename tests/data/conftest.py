"""Fixtures of the data tests: a GLUE folder in the original TSV layout, written once."""

from __future__ import annotations

import pytest

from kdlora.testing.synthetic_data import write_glue_fixture


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), n_train=64, n_eval=32, seed=0)
