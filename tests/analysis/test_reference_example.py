"""The reference study ships with kdlora: `kdlora example reference` writes its 742 runs out in
their legacy layout, with the licence and provenance beside them."""

from __future__ import annotations

import hashlib

from typer.testing import CliRunner

from kdlora.cli import app
from kdlora.examples import REFERENCE, reference_archive


def test_example_reference_writes_the_legacy_layout_with_its_licence(tmp_path):
    out = tmp_path / "ref"
    res = CliRunner().invoke(app, ["example", "reference", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list((out / "results").rglob("metrics.json"))) == 742
    assert {p.name for p in (out / "results").iterdir()} == {"fft", "lora", "kd-lora"}
    assert "MIT License" in (out / "LICENSE").read_text()
    readme = (out / "README.md").read_text()
    assert "congfeng4/KD-LoRA-CS5483" in readme and "90028be5" in readme
    # licence and provenance also sit beside the archive in the package
    assert (reference_archive().parent / "LICENSE").read_bytes() == (out / "LICENSE").read_bytes()
    assert (reference_archive().parent / "README.md").read_bytes() == (out / "README.md").read_bytes()
    assert reference_archive().name == f"{REFERENCE}.tar.gz" and reference_archive().stat().st_size < 400_000


def test_example_reference_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    res = CliRunner().invoke(app, ["example", "reference", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not an empty folder" in res.output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_archive_is_reproducible_from_its_contents(tmp_path):
    """scripts/pack_reference.py rebuilds the archive byte for byte from the files it wrote."""
    import importlib.util
    from pathlib import Path

    from kdlora.examples import write_reference

    src = write_reference(tmp_path / "src")
    spec = importlib.util.spec_from_file_location(
        "pack_reference", Path(__file__).resolve().parents[2] / "scripts" / "pack_reference.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    rebuilt = tmp_path / "rebuilt.tar.gz"
    pack.pack(src, rebuilt, write_licence=False)
    assert hashlib.sha256(rebuilt.read_bytes()).digest() == hashlib.sha256(reference_archive().read_bytes()).digest()
