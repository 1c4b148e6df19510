"""The teacher-logit cache: rows by dataset idx, reuse, rebuild on change or damage, one build
under concurrency."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import torch

from kdlora.errors import UserError
from kdlora.strategies.logit_cache import TeacherLogitCache, assert_aligned, cache_key

N = 40
# Dataset idx deliberately not 0..N-1, so position and idx never coincide by accident.
IDX = torch.arange(N) + 1000


def teacher():
    torch.manual_seed(0)
    return torch.nn.Linear(6, 3).eval()


def features(idx):
    """Each example's input, a pure function of its dataset idx."""
    g = torch.Generator().manual_seed(7)
    table = torch.randn(int(IDX.max()) + 1, 6, generator=g)
    return table[torch.as_tensor(idx)]


def teacher_logits_of(idx):
    with torch.no_grad():
        return teacher()(features(idx))


def compute_by_idx(shuffle=True):
    """The right way: run the teacher over a (possibly shuffled) loader and keep each batch's idx."""
    loader = torch.utils.data.DataLoader(IDX, batch_size=8, shuffle=shuffle,
                                         generator=torch.Generator().manual_seed(3))
    idx = torch.cat(list(loader))
    return idx, teacher_logits_of(idx)


def compute_by_position():
    """The published code's mistake: logits in the order a shuffled loader produced them, paired
    with the dataset's idx in dataset order (row k is assumed to be example k)."""
    _, logits = compute_by_idx(shuffle=True)
    return IDX.clone(), logits


def parts(**changes):
    base = {"teacher_run_id": "fft-123", "teacher_weights": "sha-aaa", "task": "toy", "split": "train",
            "tokenizer": "tok-dir", "max_length": 32, "size": N, "data": "fp-1"}
    return {**base, **changes}


class Counter:
    def __init__(self, fn=compute_by_idx, delay=0.0):
        self.calls, self.fn, self.delay = 0, fn, delay

    def __call__(self):
        self.calls += 1
        time.sleep(self.delay)
        return self.fn()


def shuffled_batches(seed=11, size=8):
    perm = IDX[torch.randperm(N, generator=torch.Generator().manual_seed(seed))]
    return perm.split(size)


def test_lookup_returns_each_examples_own_row_under_shuffling(tmp_path):
    cache = TeacherLogitCache.build_or_load(tmp_path, parts(), compute_by_idx)
    for idx in shuffled_batches():
        torch.testing.assert_close(cache.lookup(idx), teacher_logits_of(idx), atol=1e-6, rtol=0)
        assert_aligned(cache, idx, teacher_logits_of(idx), atol=1e-6)


def test_alignment_check_fails_on_a_position_paired_cache_and_passes_on_the_real_one(tmp_path):
    good = TeacherLogitCache.build_or_load(tmp_path / "good", parts(), compute_by_idx)
    bad = TeacherLogitCache.build_or_load(tmp_path / "bad", parts(), compute_by_position)
    idx = shuffled_batches()[0]
    assert_aligned(good, idx, teacher_logits_of(idx), atol=1e-6)
    with pytest.raises(AssertionError, match="misaligned"):
        assert_aligned(bad, idx, teacher_logits_of(idx), atol=1e-6)


def test_unknown_idx_is_a_user_error(tmp_path):
    cache = TeacherLogitCache.build_or_load(tmp_path, parts(), compute_by_idx)
    with pytest.raises(UserError, match=r"no rows for dataset idx \[5\]"):
        cache.lookup(torch.tensor([1001, 5]))
    with pytest.raises(UserError, match="no rows"):
        cache.lookup(torch.tensor([IDX.max() + 1]))


def test_same_key_computes_once_for_many_students(tmp_path):
    compute = Counter()
    caches = [TeacherLogitCache.build_or_load(tmp_path, parts(), compute) for _ in range(4)]
    assert compute.calls == 1
    assert [c.built for c in caches] == [True, False, False, False]
    assert caches[0].build_seconds > 0 and all(c.build_seconds == 0 for c in caches[1:])
    assert caches[3].stored_build_seconds == pytest.approx(caches[0].build_seconds)
    idx = shuffled_batches()[1]
    torch.testing.assert_close(caches[3].lookup(idx), caches[0].lookup(idx), atol=0, rtol=0)


@pytest.mark.parametrize("change", [{"teacher_weights": "sha-bbb"}, {"teacher_run_id": "fft-456"},
                                    {"tokenizer": "other-tok"}, {"max_length": 64}, {"data": "fp-2"},
                                    {"split": "validation"}, {"size": N}])
def test_changed_inputs_get_their_own_build(tmp_path, change):
    compute = Counter()
    TeacherLogitCache.build_or_load(tmp_path, parts(), compute)
    TeacherLogitCache.build_or_load(tmp_path, parts(**change), compute)
    unchanged = change == {"size": N}  # control: an equal value is the same key
    assert compute.calls == (1 if unchanged else 2)
    TeacherLogitCache.build_or_load(tmp_path, parts(), compute)  # the first entry is still valid
    assert compute.calls == (1 if unchanged else 2)


def entry(tmp_path, key_parts):
    key = cache_key(**key_parts)
    return tmp_path / f"{key}.safetensors", tmp_path / f"{key}.json"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-50])


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def drop(path: Path) -> None:
    path.unlink()


def garble(path: Path) -> None:
    path.write_text("{not json")


def other_parts(path: Path) -> None:
    meta = json.loads(path.read_text())
    meta["parts"]["teacher_weights"] = "sha-zzz"
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [("data", truncate), ("data", flip_last_byte), ("data", drop),
                                    ("side", drop), ("side", garble), ("side", other_parts)],
                         ids=lambda d: f"{d[0]}-{d[1].__name__}")
def test_damaged_or_mismatched_entry_is_rebuilt_not_used(tmp_path, damage):
    compute = Counter()
    TeacherLogitCache.build_or_load(tmp_path, parts(), compute)
    data, side = entry(tmp_path, parts())
    damage[1](data if damage[0] == "data" else side)
    cache = TeacherLogitCache.build_or_load(tmp_path, parts(), compute)
    assert compute.calls == 2 and cache.built
    idx = shuffled_batches()[2]
    assert_aligned(cache, idx, teacher_logits_of(idx), atol=1e-6)
    assert TeacherLogitCache.build_or_load(tmp_path, parts(), compute).built is False  # repaired


def test_entry_from_a_dataset_of_other_size_is_not_used(tmp_path):
    """An entry whose rows disagree with the key's dataset size (e.g. copied in under the wrong
    name) is rebuilt, even though its sidecar and hash are self-consistent."""
    small = parts(size=N // 2)
    TeacherLogitCache.build_or_load(tmp_path, small, lambda: (IDX[:N // 2], teacher_logits_of(IDX[:N // 2])))
    (data_s, side_s), (data, side) = entry(tmp_path, small), entry(tmp_path, parts())
    data.write_bytes(data_s.read_bytes())
    meta = json.loads(side_s.read_text())
    meta.update(key=cache_key(**parts()), parts=parts())
    side.write_text(json.dumps(meta))
    compute = Counter()
    cache = TeacherLogitCache.build_or_load(tmp_path, parts(), compute)
    assert compute.calls == 1 and len(cache) == N


def test_bad_teacher_output_writes_nothing(tmp_path):
    for wrong in [lambda: (IDX[:-1], teacher_logits_of(IDX[:-1])),  # not the dataset size
                  lambda: (torch.cat([IDX[:-1], IDX[:1]]), teacher_logits_of(IDX))]:  # a repeated idx
        with pytest.raises(ValueError):
            TeacherLogitCache.build_or_load(tmp_path, parts(), wrong)
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.safetensors"))


def test_cache_key_is_canonical_and_sensitive():
    assert cache_key(a=1, b=[1, 2]) == cache_key(b=(1, 2), a=1)
    assert cache_key(p=Path("/x/y")) == cache_key(p="/x/y")
    assert len({cache_key(**parts()), cache_key(**parts(max_length=33)), cache_key(**parts(task="toy2"))}) == 3
    with pytest.raises(TypeError):
        cache_key(model=object())


def test_concurrent_threads_compute_once(tmp_path):
    compute = Counter(delay=0.3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        TeacherLogitCache.build_or_load(tmp_path, parts(), compute))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compute.calls == 1 and len(results) == 4
    assert sorted(c.built for c in results) == [False, False, False, True]


def _build_in_process(cache_dir: str, log: str, arrivals: str) -> None:
    def compute():
        with open(log, "a") as fh:
            fh.write("computed\n")
        deadline = time.time() + 60  # build only once the other process is on its way in, too
        while len(list(Path(arrivals).iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return compute_by_idx()

    torch.set_num_threads(1)
    (Path(arrivals) / str(multiprocessing.current_process().pid)).touch()
    cache = TeacherLogitCache.build_or_load(Path(cache_dir), parts(), compute)
    idx = shuffled_batches()[0]
    assert_aligned(cache, idx, teacher_logits_of(idx), atol=1e-6)


def test_concurrent_processes_compute_once(tmp_path):
    log, arrivals = tmp_path / "calls.log", tmp_path / "arrivals"
    arrivals.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_in_process, args=(str(tmp_path / "cache"), str(log), str(arrivals)))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().splitlines() == ["computed"]
