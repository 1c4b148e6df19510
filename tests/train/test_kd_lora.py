"""KD-LoRA on tiny models: every variant distils and learns, the teacher-logit cache is shared
and rebuilt when its inputs change, and each shuffled batch meets its own teacher rows."""

from __future__ import annotations

import pytest
import torch

from kdlora.config import build_config
from kdlora.testing.synthetic_data import write_glue_fixture
from kdlora.errors import UserError
from kdlora.runner import run_one
from kdlora.strategies import teacher_of, kd_lora

VARIANTS = ["lora", "rslora", "olora", "dora", "adalora", "mrlora"]
STUDENT_LR = {"rslora": 2e-2, "mrlora": 2e-2}  # larger effective scales: see test_engine.TEST_LR


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), tasks=("sst2", "stsb"), n_train=128, n_eval=48)


def kd_cfg(dirs, glue_dir, variant="lora", task="sst2", **extra):
    data = dict(family="bert", task=task, strategy="kd-lora", variant=variant, seed=5, data_dir=str(glue_dir),
                teacher_model=str(dirs["bert"]), student_model=str(dirs["distilbert"]), epochs=8,
                batch_size=16, lr=STUDENT_LR.get(variant, 6e-2), teacher_lr=3e-3, teacher_epochs=10)
    data.update(extra)
    return build_config(data)


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model_dirs, glue_dir):
    """A results directory holding the trained FFT teachers (sst2 and stsb)."""
    out = tmp_path_factory.mktemp("results")
    for task in ("sst2", "stsb"):
        teacher = run_one(teacher_of(kd_cfg(tiny_model_dirs, glue_dir, task=task)), out)
        assert teacher.status == "completed", teacher.error
    return out


def count_teacher_passes(monkeypatch) -> list:
    calls = []
    real = kd_lora.teacher_logits

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(kd_lora, "teacher_logits", counting)
    return calls


@pytest.mark.parametrize("variant", VARIANTS)
def test_kd_lora_learns_with_every_variant(variant, tiny_model_dirs, glue_dir, results):
    rec = run_one(kd_cfg(tiny_model_dirs, glue_dir, variant), results)
    assert rec.status == "completed", rec.error
    losses = [h["train_loss"] for h in rec.history]
    assert losses[-1] < losses[0] - 0.05, losses
    teacher_id = teacher_of(kd_cfg(tiny_model_dirs, glue_dir, variant)).run_id
    assert rec.teacher_run_id == teacher_id == rec.efficiency.teacher_run_id
    if variant == "lora":  # the adapters sit on the student, not on the teacher
        import json

        adapter = json.loads((results / "checkpoints" / rec.run_id / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(tiny_model_dirs["distilbert"])


def test_regression_distillation(tiny_model_dirs, glue_dir, results):
    rec = run_one(kd_cfg(tiny_model_dirs, glue_dir, task="stsb", epochs=2), results)
    assert rec.status == "completed", rec.error
    assert rec.metrics["primary_name"] == "mean(pearson,spearman)"


def test_teacher_runs_once_for_many_students(tiny_model_dirs, glue_dir, results, monkeypatch, tmp_path):
    """One teacher pass serves every variant and hyperparameter of the same teacher and data;
    a change to what produced the logits (the teacher's weights) builds a new cache."""
    import shutil

    fresh = tmp_path / "r"
    shutil.copytree(results, fresh, ignore=shutil.ignore_patterns("teacher_logits"))
    calls = count_teacher_passes(monkeypatch)
    students = [kd_cfg(tiny_model_dirs, glue_dir, v, epochs=1) for v in ("lora", "dora", "mrlora")]
    students.append(kd_cfg(tiny_model_dirs, glue_dir, "lora", epochs=1, kd_temperature=4.0))
    recs = [run_one(cfg, fresh) for cfg in students]
    assert [r.status for r in recs] == ["completed"] * 4
    assert len(calls) == 1
    assert [r.efficiency.teacher_cache_hit for r in recs] == [False, True, True, True]
    assert recs[0].efficiency.teacher_cache_build_s > 0
    from safetensors.torch import load_file, save_file

    teacher_id = teacher_of(students[0]).run_id
    weights = kd_lora.checkpoint_dir(fresh, teacher_id) / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v + 0.01 for k, v in tensors.items()}, weights, metadata={"format": "pt"})
    retrained(fresh, teacher_id)  # as if the teacher had been trained again to other weights
    again = run_one(kd_cfg(tiny_model_dirs, glue_dir, "lora", epochs=1), fresh)
    assert len(calls) == 2  # other teacher weights: rebuilt, not reused
    assert again.efficiency.teacher_cache_hit is False


def retrained(results, teacher_id) -> None:
    from kdlora.checkpoints import fingerprint
    from kdlora.records import read_record, record_path, write_record

    rec = read_record(record_path(results, teacher_id))
    write_record(results, rec.model_copy(update={"weights_fingerprint": fingerprint(kd_lora.checkpoint_dir(
        results, teacher_id))}))


def test_batches_meet_their_own_teacher_rows(tiny_model_dirs, glue_dir, results, monkeypatch):
    """The loss of every shuffled batch is computed against the teacher's logits for exactly
    those examples (the published code paired shuffled batches with rows by position)."""
    from kdlora.strategies.logit_cache import assert_aligned

    seen = []
    real_loss = kd_lora.distillation_loss

    def spying(student_logits, teacher_logits, hard_loss, **kw):
        seen.append(teacher_logits.detach().cpu())
        return real_loss(student_logits, teacher_logits, hard_loss, **kw)

    monkeypatch.setattr(kd_lora, "distillation_loss", spying)
    captured = {}
    real_build = kd_lora_cache_class().build_or_load

    def capture_build(*args, **kwargs):
        captured["cache"] = real_build(*args, **kwargs)
        return captured["cache"]

    monkeypatch.setattr(kd_lora_cache_class(), "build_or_load", capture_build)
    idx_seen = []
    real_lookup = kd_lora_cache_class().lookup

    def capture_lookup(self, idx):
        idx_seen.append(idx.clone())
        return real_lookup(self, idx)

    monkeypatch.setattr(kd_lora_cache_class(), "lookup", capture_lookup)
    cfg = kd_cfg(tiny_model_dirs, glue_dir, epochs=1)
    assert run_one(cfg, results).status == "completed"
    cache = captured["cache"]
    # independent ground truth: the teacher's logits recomputed example by example
    teacher_dir = kd_lora.checkpoint_dir(results, teacher_of(cfg).run_id)
    from kdlora.data.loading import load_splits
    from kdlora.data.tasks import resolve_task

    spec = resolve_task("sst2")
    split = load_splits(spec, str(glue_dir), seed=cfg.seed)["train"]
    idx_all, logits_all = kd_lora.teacher_logits(teacher_dir, split, spec, cfg.max_length, torch.device("cpu"))
    reference = dict(zip(idx_all.tolist(), logits_all))
    shuffled = [i for i in idx_seen if not torch.equal(i, torch.sort(i).values)]
    assert shuffled, "batches were not shuffled; the alignment test would prove nothing"
    for idx, used in zip(idx_seen, seen):
        expected = torch.stack([reference[i] for i in idx.tolist()])
        torch.testing.assert_close(used, expected, atol=1e-4, rtol=0)
        assert_aligned(cache, idx, expected, atol=1e-4)


def test_mis_indexed_cache_is_caught(tiny_model_dirs, glue_dir, results):
    """The alignment check fails on rows paired by batch position: the bug it exists for."""
    from kdlora.strategies.logit_cache import assert_aligned

    cfg = kd_cfg(tiny_model_dirs, glue_dir)
    teacher_dir = kd_lora.checkpoint_dir(results, teacher_of(cfg).run_id)
    from kdlora.data.loading import load_splits
    from kdlora.data.tasks import resolve_task

    spec = resolve_task("sst2")
    split = load_splits(spec, str(glue_dir), seed=cfg.seed)["train"]
    idx, logits = kd_lora.teacher_logits(teacher_dir, split, spec, cfg.max_length, torch.device("cpu"))
    cache_cls = kd_lora_cache_class()
    good = cache_cls.build_or_load(results / "align", {"kind": "good"}, lambda: (idx, logits))
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))
    # the bug: a shuffled batch's rows taken by position, labelled with dataset order
    bad = cache_cls.build_or_load(results / "align", {"kind": "bad"}, lambda: (idx, logits[perm]))
    batch = idx[perm[:16]]
    expected = logits[perm[:16]]
    assert_aligned(good, batch, expected, atol=1e-5)
    with pytest.raises(AssertionError):
        assert_aligned(bad, batch, expected, atol=1e-5)


def test_missing_teacher_names_the_command(tiny_model_dirs, glue_dir, tmp_path):
    with pytest.raises(UserError, match="kdlora train --family bert --task sst2 --strategy fft --seed 5"):
        run_one(kd_cfg(tiny_model_dirs, glue_dir), tmp_path)
    assert not (tmp_path / "runs").exists(), "a refused run must not leave a record"


def kd_lora_cache_class():
    from kdlora.strategies.logit_cache import TeacherLogitCache

    return TeacherLogitCache


@pytest.mark.parametrize("tamper", ["flip", "base", "delete"])
def test_teacher_checkpoint_is_verified_before_use(tamper, tiny_model_dirs, glue_dir, results, tmp_path):
    """Flipped bytes, the base weights swapped in, or a deleted checkpoint: the student refuses
    the teacher (no completed student, no nan_loss) and says how to repair it."""
    import shutil

    fresh = tmp_path / "r"
    shutil.copytree(results, fresh)
    cfg = kd_cfg(tiny_model_dirs, glue_dir, epochs=1)
    (fresh / "runs" / f"{cfg.run_id}.json").unlink(missing_ok=True)  # an earlier test's student
    ckpt = kd_lora.checkpoint_dir(fresh, teacher_of(cfg).run_id)
    weights = ckpt / "model.safetensors"
    if tamper == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif tamper == "base":
        shutil.copy(tiny_model_dirs["bert"] / "model.safetensors", weights)
    else:
        shutil.rmtree(ckpt)
    with pytest.raises(UserError, match="--train-teacher") as err:
        run_one(cfg, fresh)
    assert ("missing" if tamper == "delete" else "does not match") in str(err.value)
    assert not (fresh / "runs" / f"{cfg.run_id}.json").exists()


def test_train_teacher_repairs_a_deleted_checkpoint_and_waits_for_a_concurrent_one(
        tiny_model_dirs, glue_dir, results, tmp_path, capsys):
    import shutil
    import threading

    from kdlora.checkpoints import teacher_lock, teacher_problem
    from kdlora.commands.train import train_teacher_if_needed

    fresh = tmp_path / "r"
    shutil.copytree(results, fresh)
    teacher = teacher_of(kd_cfg(tiny_model_dirs, glue_dir, epochs=1))
    shutil.rmtree(kd_lora.checkpoint_dir(fresh, teacher.run_id))
    trained = []

    def counting_run_one(cfg, out):
        trained.append(cfg.run_id)
        return run_one(cfg, out)

    # another process holds the teacher's lock: we wait for it, then train once
    release = threading.Event()

    def holder():
        with teacher_lock(fresh, teacher.run_id):
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    while not (fresh / "locks" / f"{teacher.run_id}.lock").exists():
        pass
    threading.Timer(1.0, release.set).start()
    train_teacher_if_needed(teacher, fresh, counting_run_one)
    t.join()
    out = capsys.readouterr().out
    assert "waiting for the FFT teacher" in out and "again: its checkpoint" in out
    assert trained == [teacher.run_id] and teacher_problem(fresh, teacher.run_id)[1] is None
    train_teacher_if_needed(teacher, fresh, counting_run_one)  # verified now: not trained again
    assert trained == [teacher.run_id]


def test_a_moved_results_directory_keeps_its_teacher_cache(tiny_model_dirs, glue_dir, results, tmp_path):
    """The cache key names the teacher's verified checkpoint fingerprint, not its path."""
    import shutil

    cfg = kd_cfg(tiny_model_dirs, glue_dir, epochs=1)
    assert run_one(cfg, results).status == "completed"  # the cache exists
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved)
    (moved / "runs" / f"{cfg.run_id}.json").unlink()
    rec = run_one(cfg, moved)
    assert rec.status == "completed" and rec.efficiency.teacher_cache_hit is True
