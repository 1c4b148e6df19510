"""Tracking: a tiny run with track=tensorboard,mlflow; the event files and the MLflow store are read
back and their values compared with the run's record. Off by default: no tb/ and no mlflow.db."""

from __future__ import annotations

import json
import math

import pytest

from kdlora.config import build_config
from kdlora.runner import run_one
from kdlora.testing.synthetic_data import write_glue_fixture


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_fixture(tmp_path_factory.mktemp("glue"), tasks=("sst2",), n_train=64, n_eval=32, seed=0)


def cfg(model_dir, glue_dir, **extra):
    data = dict(family="bert", task="sst2", strategy="lora", variant="lora", seed=3, data_dir=str(glue_dir),
                teacher_model=str(model_dir), epochs=2, batch_size=16, lr=6e-2, eval_every_epoch=True)
    return build_config({**data, **extra})


def tb_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tracking_is_off_by_default(tiny_model_dirs, glue_dir, tmp_path):
    rec = run_one(cfg(tiny_model_dirs["bert"], glue_dir, epochs=1), tmp_path)
    assert rec.status == "completed", rec.error
    assert not (tmp_path / "tb").exists() and not (tmp_path / "mlflow.db").exists()


def test_tensorboard_and_mlflow_hold_the_records_values(tiny_model_dirs, glue_dir, tmp_path):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    config = cfg(tiny_model_dirs["bert"], glue_dir, track="mlflow, tensorboard")
    assert config.track == "mlflow,tensorboard"
    assert config.run_id == cfg(tiny_model_dirs["bert"], glue_dir).run_id  # tracking is not part of the run
    rec = run_one(config, tmp_path)
    assert rec.status == "completed", rec.error
    steps = rec.efficiency.train_steps
    assert steps == 8  # 64 examples / 16 x 2 epochs

    # --- TensorBoard: one loss and lr point per optimizer step (CPU), epochs, final metrics ---
    tb = tb_scalars(tmp_path / "tb" / rec.run_id)
    assert [s for s, _ in tb["train/loss"]] == list(range(1, steps + 1))
    assert [s for s, _ in tb["train/lr"]] == list(range(1, steps + 1))
    per_epoch = steps // 2
    for epoch, entry in enumerate(rec.history, start=1):
        # the epoch's train_loss is the mean of its steps' losses (grad_accum 1: one micro-batch each)
        chunk = [v for s, v in tb["train/loss"] if (epoch - 1) * per_epoch < s <= epoch * per_epoch]
        assert sum(chunk) / len(chunk) == pytest.approx(entry["train_loss"], rel=1e-5)
        assert dict(tb["epoch/train_loss"])[epoch] == pytest.approx(entry["train_loss"], rel=1e-6)
    evaluated = [h for h in rec.history if "accuracy" in h]
    assert evaluated and all(dict(tb["epoch/accuracy"])[h["epoch"]] == pytest.approx(h["accuracy"]) for h in evaluated)
    assert tb["final/accuracy"] == [(steps, pytest.approx(rec.metrics["accuracy"]))]
    assert tb["train/lr"][-1][1] == pytest.approx(0.0, abs=1e-9)  # linear decay to zero

    # --- MLflow: one run named by the run_id, params = config, the same metrics, the record ---
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kdlora")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.run_name == rec.run_id and run.info.status == "FINISHED"
    assert run.data.params["lr"] == json.dumps(rec.config["lr"]) and run.data.params["variant"] == "lora"
    assert set(run.data.params) == set(rec.config)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [s for s, _ in history] == [s for s, _ in tb["train/loss"]]
    assert [v for _, v in history] == pytest.approx([v for _, v in tb["train/loss"]], rel=1e-6)
    assert run.data.metrics["final/accuracy"] == pytest.approx(rec.metrics["accuracy"])
    epochs = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch/train_loss"))
    assert epochs == [(h["epoch"], h["train_loss"]) for h in rec.history]  # float64 both: exactly
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=f"{rec.run_id}.json",
                                                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                                dst_path=str(tmp_path / "dl"))
    assert json.loads(open(local).read()) == json.loads((tmp_path / "runs" / f"{rec.run_id}.json").read_text())
    assert all(math.isfinite(v) for _, v in tb["train/loss"])

    # --- a rerun of the same run replaces its curves: still one MLflow run, one set of points ---
    rec2 = run_one(config, tmp_path)
    assert rec2.status == "completed"
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert [s for s, _ in tb_scalars(tmp_path / "tb" / rec.run_id)["train/loss"]] == list(range(1, steps + 1))


def test_an_unknown_tracker_is_refused(tiny_model_dirs, glue_dir):
    from kdlora.errors import UserError

    with pytest.raises((UserError, ValueError), match="unknown tracker 'wandb'"):
        cfg(tiny_model_dirs["bert"], glue_dir, track="wandb")


def test_on_cuda_the_loop_hands_losses_over_only_where_it_reads_them():
    """StepLog with a CUDA device: no value between the loop's own reads (no extra host sync);
    each value is the mean micro-batch loss since the last one, and an epoch's end flushes."""
    from types import SimpleNamespace

    import torch

    from kdlora.train.callbacks import StepLog

    seen = []

    class Recorder:
        def on_step(self, step, values):
            seen.append((step, round(values["train/loss"], 6), values["train/lr"]))

        def on_epoch(self, epoch, entry):
            seen.append(("epoch", epoch))

    running = SimpleNamespace(loss=torch.zeros((), dtype=torch.float64), micro=0)
    scheduler = SimpleNamespace(get_last_lr=lambda: [0.5])
    log = StepLog([Recorder()], SimpleNamespace(type="cuda"))
    for step in range(1, 8):  # one micro-batch per step, loss = step; the loop reads at steps 3 and 6
        running.loss += step
        running.micro += 1
        log.step(step, running, scheduler, synced=step in (3, 6))
    log.epoch({"epoch": 1, "train_loss": float(running.loss) / running.micro})
    assert seen == [(3, 2.0, 0.5), (6, 5.0, 0.5), (7, 7.0, 0.5), ("epoch", 1)]
