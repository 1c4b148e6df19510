"""`kdlora report --grid` on a grid with param_budget stays torch-free: the adapter sizes the
sweep (or `kdlora plan --results`) counted are read back from RESULTS/param_budget.json, and the
grid expands to the same runs, run_ids included, as when they are counted. Without the file:
counted with torch and a note, or, without torch, refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from kdlora.cli import app

BUDGET = {"reference": "lora", "r": 8}
EXPECTED = (
    "import json, sys\n"
    "{block}"
    "from kdlora.analysis.report import expected_from_grid\n"
    "keys = expected_from_grid(sys.argv[1], [sys.argv[2]])\n"
    "print(json.dumps({{'torch': 'torch' in sys.modules, 'keys': [[str(v) for v in row] for row in keys.itertuples(index=False)]}}))\n"
)
NO_TORCH = (  # as on a laptop without torch: `import torch` fails
    "class NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.partition('.')[0] == 'torch':\n"
    "            raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, NoTorch())\n")


@pytest.fixture(scope="module")
def budget_grid(tmp_path_factory):
    """A small param_budget grid on real-width, 2-layer shapes (config.json only; counted on meta)."""
    from transformers import CONFIG_MAPPING

    root = tmp_path_factory.mktemp("budget_grid")
    widths = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}
    CONFIG_MAPPING["bert"](vocab_size=1000, num_hidden_layers=2, **widths).save_pretrained(root / "teacher")
    CONFIG_MAPPING["distilbert"](vocab_size=1000, n_layers=2, dim=768, hidden_dim=3072,
                                 n_heads=12).save_pretrained(root / "student")
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "families": ["bert"], "tasks": ["sst2", "mnli"], "seeds": [1, 2], "strategies": ["fft", "lora", "kd-lora"],
        "variants": ["lora", "dora", "mrlora"], "param_budget": BUDGET,
        "hyperparameters": {"teacher_model": str(root / "teacher")},
        "kd-lora": {"student_model": str(root / "student")}}))
    return grid


def _expected(grid, results, block: str = "") -> subprocess.CompletedProcess:
    code = EXPECTED.format(block=block)
    return subprocess.run([sys.executable, "-c", code, str(grid), str(results)], capture_output=True, text=True,
                          timeout=300)


def test_report_grid_reads_the_saved_sizes_without_torch(budget_grid, tmp_path):
    from kdlora.analysis.report import expected_from_grid

    keys = expected_from_grid(budget_grid)  # no results: counted (torch)
    counted = [[str(v) for v in row] for row in keys.itertuples(index=False)]
    results = tmp_path / "results"
    plan = CliRunner().invoke(app, ["plan", str(budget_grid), "--results", str(results)])
    assert plan.exit_code == 0, plan.output
    saved = json.loads((results / "param_budget.json").read_text())
    assert saved["version"] == 1 and saved["sizes"]

    done = _expected(budget_grid, results)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["torch"] is False
    assert out["keys"] == counted  # the same runs, run_ids included
    assert any("-mrlora-" in row[0] for row in counted)

    blocked = _expected(budget_grid, results, NO_TORCH)  # torch not even importable: still fine
    assert blocked.returncode == 0, blocked.stderr[-2000:]
    assert json.loads(blocked.stdout)["keys"] == counted


def test_report_grid_without_saved_sizes(budget_grid, tmp_path, capsys):
    from kdlora.analysis.report import expected_from_grid

    empty = tmp_path / "results"
    (empty / "runs").mkdir(parents=True)
    blocked = _expected(budget_grid, empty, NO_TORCH)  # no sizes, no torch: one line saying how to get them
    assert blocked.returncode != 0
    last = blocked.stderr.strip().splitlines()[-1]
    assert "param_budget.json" in last and f"kdlora plan {budget_grid} --results {empty}" in last, last
    assert "needs torch" in last
    assert not (empty / "param_budget.json").exists()

    keys = expected_from_grid(budget_grid, [empty])  # with torch: counted, with a note saying how to skip it
    assert keys.equals(expected_from_grid(budget_grid))
    assert "note:" in capsys.readouterr().err
    assert not (empty / "param_budget.json").exists()  # the report writes nothing beside the results


def test_missing_sizes_name_every_results_directory(budget_grid, tmp_path):
    """`--results A --results B` without sizes and without torch: the line names both files."""
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        (d / "runs").mkdir(parents=True)
    code = (NO_TORCH + "from kdlora.analysis.report import expected_from_grid\n"
            "expected_from_grid(sys.argv[1], sys.argv[2:])\n")
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(budget_grid), str(first), str(second)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert str(first / "param_budget.json") in last and str(second / "param_budget.json") in last, last


def test_sizes_file_is_checked(budget_grid, tmp_path):
    from kdlora.analysis.report import expected_from_grid
    from kdlora.errors import UserError

    (tmp_path / "param_budget.json").write_text("{not json")
    with pytest.raises(UserError, match="not a param_budget sizes file"):
        expected_from_grid(budget_grid, [tmp_path])


def test_report_grid_reads_sizes_from_every_results_directory(budget_grid, tmp_path):
    """`kdlora report --results A --results B`: sizes saved beside B count as well as A's."""
    from kdlora.analysis.report import expected_from_grid

    first, second = tmp_path / "first", tmp_path / "second"
    (first / "runs").mkdir(parents=True)
    assert CliRunner().invoke(app, ["plan", str(budget_grid), "--results", str(second)]).exit_code == 0
    code = (NO_TORCH + "from kdlora.analysis.report import expected_from_grid\n"
            "print(len(expected_from_grid(sys.argv[1], sys.argv[2:])))\n")
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(budget_grid), str(first), str(second)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) == len(expected_from_grid(budget_grid))
