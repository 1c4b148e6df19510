"""docs/tasks.md states the GLUE table the code implements."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlora.data.loading import GLUE_TSV, SPLIT_FILES
from kdlora.data.metrics import GLUE_TASKS, primary_parts
from kdlora.data.tasks import resolve_task

DOC = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


def _primary(task: str, policy: str) -> str:
    parts = primary_parts(task, policy)
    return parts[0] if len(parts) == 1 else "mean(" + ",".join(parts) + ")"


def _row(task: str) -> str:
    spec = resolve_task(task)
    files = ", ".join(SPLIT_FILES[s] for s in ("train", *(e for e, _ in spec.eval_splits)))
    labels = "regression" if spec.is_regression else ", ".join(spec.label_names)
    cells = [task, ", ".join(spec.text_fields), labels, ", ".join(spec.metrics), _primary(task, "glue"),
             _primary(task, "legacy"), f"{GLUE_TSV[task][0]}/: {files}"]
    return "| " + " | ".join(cells) + " |"


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_doc_table_row_matches_code(task):
    assert _row(task) in DOC.read_text().splitlines()
