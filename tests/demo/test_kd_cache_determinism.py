"""A KD-LoRA run gives the same result whether its teacher-logit cache was built by itself or by
an earlier run. The demo's six KD-LoRA runs share one cache: before this held, the first run (a
cache miss, which loads the teacher and so draws random numbers) started its student from other
weights than a later one would, and MiniLM's MrLoRA student went from 62 % to the majority class
depending on run order."""

from __future__ import annotations

from kdlora.config import build_config
from kdlora.testing.synthetic_data import write_glue_fixture
from kdlora.runner import run_one
from kdlora.strategies import teacher_of


def test_student_is_the_same_with_and_without_a_cached_teacher(tiny_model_dirs, tmp_path):
    glue = write_glue_fixture(tmp_path / "glue", tasks=("sst2",), n_train=64, n_eval=32)
    cfg = build_config(dict(family="bert", task="sst2", strategy="kd-lora", variant="lora", seed=3,
                            data_dir=str(glue), teacher_model=str(tiny_model_dirs["bert"]),
                            student_model=str(tiny_model_dirs["distilbert"]), epochs=1, batch_size=16,
                            lr=1e-2, teacher_lr=3e-3, teacher_epochs=1))
    results = tmp_path / "results"
    assert run_one(teacher_of(cfg), results).status == "completed"
    miss = run_one(cfg, results)  # builds the cache
    hit = run_one(cfg, results)  # the same run again: reads it
    assert (miss.efficiency.teacher_cache_hit, hit.efficiency.teacher_cache_hit) == (False, True)
    assert hit.history == miss.history
    assert hit.metrics == miss.metrics
