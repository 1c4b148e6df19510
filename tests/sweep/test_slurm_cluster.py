"""The test SLURM itself: one idle node that runs a batch job (the fixture the SLURM tests use)."""

from __future__ import annotations

import time


def test_the_test_slurm_has_an_idle_node_and_runs_a_batch_job(slurm, tmp_path):
    states = slurm.run("sinfo", "-h", "-N", "-o", "%T").split()
    assert states and set(states) <= {"idle", "mixed", "allocated"}
    out = tmp_path / "hello.out"
    submitted = slurm.run("sbatch", "--parsable", "-p", slurm.partition, "-t", "1", "-c", "1", "--mem", "100M",
                          "-o", str(out), "--wrap", "echo hello from $SLURM_JOB_ID")
    job_id = submitted.strip().split(";")[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and "hello" in out.read_text()):
        time.sleep(0.5)
    assert out.read_text().strip() == f"hello from {job_id}"
