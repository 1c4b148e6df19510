"""A real one-node SLURM on this machine, for the tests: munged, slurmctld and slurmd on loopback.

`ensure_slurm()` uses a SLURM that already answers `sinfo`; otherwise it installs the Debian
packages (`slurmctld slurmd slurm-client munge`) when they are missing, writes a private
slurm.conf (this host's CPUs and memory, loopback ports, proctrack/linuxproc, task/none,
select/cons_tres) and munge key into a temporary directory, starts the three daemons in the
foreground and waits for `sinfo` to show the node idle. `LocalSlurm.stop()` stops exactly the
processes it started, by PID. Nothing under /etc is touched: clients find the cluster through
SLURM_CONF, which `env()` sets.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel", "srun"]
SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
PARTITION = "debug"
MEM_MARGIN_MB = 2048  # left to the OS and the test process itself


class Unavailable(RuntimeError):
    """SLURM cannot be brought up here (not root, no package manager, install failed)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def _sinfo_answers(env: dict[str, str] | None = None) -> bool:
    if not _which("sinfo"):
        return False
    try:
        out = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, timeout=10,
                             env=env)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def install_packages() -> None:
    """apt-get install the SLURM and munge packages (as root), serialised by a lock file."""
    if all(_which(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root "
                          f"(apt-get install {' '.join(PACKAGES)})")
    if not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and there is no apt-get to install it")
    lock_path = os.environ.get("KDLORA_APT_LOCK") or os.path.join(tempfile.gettempdir(), "kdlora-apt.lock")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", *PACKAGES]):
            if all(_which(b) for b in BINARIES):
                break
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise Unavailable(f"{' '.join(cmd[:2])} failed: {' | '.join(tail)}")
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        raise Unavailable(f"installed {PACKAGES} but still missing {missing}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_resources() -> tuple[str, int, int]:
    """(node name, CPUs, memory MB) as slurmd sees this host."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    name = fields.get("NodeName") or socket.gethostname().split(".")[0]
    cpus = int(fields.get("CPUs", os.cpu_count() or 1))
    mem = int(fields.get("RealMemory", 4096))
    return name, cpus, max(512, mem - MEM_MARGIN_MB)


def slurm_conf(root: Path, node: str, cpus: int, mem_mb: int, ctld_port: int, slurmd_port: int) -> str:
    return "\n".join([
        "ClusterName=kdlora-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2,bf_interval=2",
        "MinJobAge=600",  # ended jobs stay visible to squeue for 10 min (no accounting database here)
        "KillWait=5",
        "InactiveLimit=0",
        "OverTimeLimit=0",
        "MessageTimeout=20",
        f"DefMemPerCPU={max(256, mem_mb // (4 * cpus))}",  # a job without --mem does not take the node
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@dataclass
class LocalSlurm:
    """A SLURM for the tests: either one that was already there (`started` empty) or ours."""

    conf: Path | None = None
    root: Path | None = None
    started: list[subprocess.Popen] = field(default_factory=list)
    partition: str = PARTITION
    cpus: int = 1

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.conf is not None:
            env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *SBIN])
        return env

    def run(self, *cmd: str, check: bool = True) -> str:
        done = subprocess.run([_which(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True,
                              env=self.env(), timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """Cancel the jobs still there, then stop what we started, newest first, by PID (SIGTERM,
        then SIGKILL after 15 s), and the job step daemons (slurmstepd) our slurmd left behind."""
        if self.started:
            self.run("scancel", "--full", "--partition", self.partition, check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).strip():
                time.sleep(0.5)
        for proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.root is not None:
            for pid in self._our_stepds():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)
        self.started.clear()

    def _our_stepds(self) -> list[int]:
        """slurmstepd processes of this cluster: those holding a file under its directory (its
        slurmd log, its spool)."""
        import psutil

        found = []
        for proc in psutil.process_iter(["name"]):
            try:
                if proc.info["name"] == "slurmstepd" and any(
                        f.path.startswith(str(self.root)) for f in proc.open_files()):
                    found.append(proc.pid)
            except (psutil.Error, OSError):
                continue
        return found


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _wait_for(what: str, check, timeout: float, cluster: LocalSlurm) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.started:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode} while waiting for {what}"
                                   f"; logs in {cluster.root}")
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}; logs in {cluster.root}")


def start_local_slurm() -> LocalSlurm:
    """Install if needed, configure and start a one-node SLURM on loopback; waits until it is idle."""
    install_packages()
    if os.geteuid() != 0:
        raise Unavailable("starting slurmd, slurmctld and munged needs root")
    root = Path(tempfile.mkdtemp(prefix="kdlora-slurm-"))
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node, cpus, mem_mb = node_resources()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, cpus, mem_mb, _free_port(), _free_port()))
    cluster = LocalSlurm(conf=conf, root=root, cpus=cpus)
    env = cluster.env()
    try:
        munge_socket = root / "munge" / "munge.socket"
        cluster.started.append(_start(
            [_which("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}",
             f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'munge' / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}"], root / "munged.out", env))
        _wait_for("munged's socket", munge_socket.exists, 30, cluster)
        cluster.started.append(_start([_which("slurmctld"), "-D", "-c", "-f", str(conf)], root / "slurmctld.out",
                                      env))
        cluster.started.append(_start([_which("slurmd"), "-D", "-f", str(conf), "-N", node], root / "slurmd.out",
                                      env))
        _wait_for("sinfo to show the node idle",
                  lambda: "idle" in cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False), 90, cluster)
    except BaseException:
        for proc in reversed(cluster.started):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.started.clear()
        raise
    return cluster


def ensure_slurm() -> LocalSlurm:
    """The SLURM that answers here, or a new one-node SLURM of our own."""
    if _sinfo_answers():
        part = subprocess.run([_which("sinfo"), "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
        default = next((p.rstrip("*") for p in part if p.endswith("*")), part[0].rstrip("*") if part else PARTITION)
        return LocalSlurm(partition=default, cpus=os.cpu_count() or 1)
    return start_local_slurm()
