"""The SLURM profile on a real single-node SLURM cluster (``tests/slurm/cluster.sh``).

``test_ci_dag_runs_through_sbatch`` runs the whole ci DAG with
``snakemake --workflow-profile workflow/profiles/slurm --profile tests/slurm/profile`` and checks that
every job that is not a local rule went through ``sbatch`` and finished COMPLETED in SLURM, and that every
file of the ``all`` target exists. ``test_killed_training_resumes_under_slurm`` cancels a training job
(``scancel``: SIGTERM) after its first ``last.pt`` and checks that Snakemake's retry (``retries`` in the
profile) continues from ``last.pt``, not from epoch 0.

The cluster is installed (Debian's ``slurm-wlm`` and ``munge`` through apt-get) and started on localhost
once per module, then stopped again, also on failure. That needs root: elsewhere, without apt-get, with a
SLURM installation of one's own (an ``/etc/slurm/slurm.conf`` this test did not write), offline, or with
``DIRBENCH_NO_SLURM=1``, the tests are skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dirbench import cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "tests" / "slurm" / "profile"
CI_CONFIG = REPO / "workflow" / "config" / "ci.yaml"
FAULT_CONFIG = REPO / "tests" / "slurm" / "fault.yaml"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
CONF_MARKER = "# dirbench-test-cluster"

#: The test node's size: 2 cores, a few GB, no GPU. Snakemake lets the workflow profile win over
#: `--profile` on every key, so these go on the command line, where they replace the profile's
#: default-resources / set-resources / set-threads (the rules' own resources, such as the training
#: runtime that grows with the attempt, stay as they are).
LOCAL_RESOURCES = [
    "--default-resources", "runtime=30", "mem_mb=1000", "cpus_per_task=1",
    "--set-resources", "train:gpu=0", "train:cpus_per_task=1", "train:mem_mb=2000",
    "register:gpu=0", "register:cpus_per_task=1", "register:mem_mb=2000",
    "register_greedy:cpus_per_task=1", "register_greedy:mem_mb=1000", "register_greedy:runtime=30",
    "--set-threads", "train=1", "register=1", "register_greedy=1", "evaluate=1",
]  # fmt: skip

#: Rules whose jobs must run on the cluster, never on the submit host.
HEAVY_RULES = {"data_demo", "train", "register", "register_greedy", "evaluate"}

#: "Job 12 has been submitted with SLURM jobid 34 (log: ...)." (snakemake-executor-plugin-slurm 2.x)
SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) ", re.MULTILINE)
#: A job block of Snakemake's log: "rule train:" or "localrule table1:", then its properties, "jobid: 7".
JOB_BLOCK = re.compile(r"^(local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", re.MULTILINE)


def _skip_reason() -> str | None:
    """Why this machine cannot host the throw-away cluster, or None."""
    if os.environ.get("DIRBENCH_NO_SLURM") == "1":
        return "DIRBENCH_NO_SLURM=1"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the SLURM test installs and starts slurmctld / slurmd / munged: it needs root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install Debian's slurm-wlm"
    if SLURM_CONF.exists() and CONF_MARKER not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to a SLURM installation of this machine; not replacing it"
    return None


@dataclass
class Cluster:
    """The running test cluster; ``install_s``: how long ``cluster.sh install`` (apt-get) took."""

    install_s: float

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (MinJobAge = 1 h): id, state, name (run UUID), comment."""
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%T|%j|%k"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
        return [dict(id=r[0], state=r[1], name=r[2], comment=r[3]) for r in rows]


def _cluster_cmd(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    t0 = time.perf_counter()
    install = _cluster_cmd("install")
    install_s = time.perf_counter() - t0
    if install.returncode in (2, 75):  # not root / no apt-get; no network
        pytest.skip(f"cannot install slurm-wlm and munge: {install.stderr.strip()}")
    assert install.returncode == 0, f"cluster.sh install failed:\n{install.stdout}\n{install.stderr}"
    print(f"\n[slurm] {install.stdout.strip()} (cluster.sh install: {install_s:.1f} s)")
    state = tmp_path_factory.mktemp("slurm-state")
    try:
        start = _cluster_cmd("start", str(state), timeout=120)
        if start.returncode == 3:  # a slurm.conf of someone else's appeared in between
            pytest.skip(start.stderr.strip())
        assert start.returncode == 0, f"cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
        print(f"[slurm] {start.stdout.strip()}")  # where the daemon logs are
        yield Cluster(install_s=install_s)
    finally:
        if SLURM_CONF.exists() and CONF_MARKER in SLURM_CONF.read_text():
            stop = _cluster_cmd("stop", timeout=120)
            assert stop.returncode == 0, f"cluster.sh stop failed:\n{stop.stdout}\n{stop.stderr}"


def _start_snakemake(workdir: Path, configfile: Path, *extra: str, log: str) -> subprocess.Popen[bytes]:
    """Start Snakemake with the SLURM workflow profile and the local overlay in ``workdir``.

    Absolute paths stand for the README's relative ones (run from the repository root), so that the
    results land in ``workdir``; stdout and stderr go to ``workdir/log``. The jobs inherit this
    environment (``sbatch --export=ALL``), so the ``dirbench`` of this interpreter's environment is put
    first on PATH.
    """
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--workflow-profile", str(SLURM_PROFILE), "--profile", str(LOCAL_PROFILE),
        "--configfile", str(configfile), *LOCAL_RESOURCES, "--nocolor", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / log, "w") as out:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)


def _snakemake(workdir: Path, configfile: Path, *extra: str, log: str) -> tuple[int, str]:
    """Run Snakemake as :func:`_start_snakemake` does; its exit status and output."""
    proc = _start_snakemake(workdir, configfile, *extra, log=log)
    return proc.wait(timeout=1800), (workdir / log).read_text()


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _failed(log: str, workdir: Path) -> str:
    """A readable assertion message for a failed Snakemake run: the failed rules, their logs, the tail."""
    rules = sorted(set(re.findall(r"^Error in rule (\w+):", log, re.MULTILINE)))
    logs = sorted(set(re.findall(r"^    log: (\S+?),? ", log, re.MULTILINE)))
    return f"snakemake failed in {workdir}: rules {rules}; logs {logs}\n{_tail(log, 30)}"


def _dry_run(workdir: Path, configfile: Path, *targets: str) -> tuple[int, list[str]]:
    """The dry run's job count and the input files of its ``all`` job."""
    rc, out = _snakemake(workdir, configfile, "--dry-run", *targets, log="dry-run.log")
    assert rc == 0, _tail(out)
    total = re.search(r"^total\s+(\d+)$", out, re.MULTILINE)
    assert total, _tail(out)
    block = re.search(r"^(?:local)?rule all:\n    input: (.*)$", out, re.MULTILINE)
    return int(total.group(1)), block.group(1).split(", ") if block else []


def test_ci_dag_runs_through_sbatch(cluster: Cluster, tmp_path: Path) -> None:
    expected_jobs, all_files = _dry_run(tmp_path, CI_CONFIG)
    assert all_files, "the ci config's `all` target names no files"

    t0 = time.perf_counter()
    rc, log = _snakemake(tmp_path, CI_CONFIG, log="snakemake.log")
    wall_s = time.perf_counter() - t0
    assert rc == 0, _failed(log, tmp_path)

    blocks = [(bool(local), rule, int(jobid)) for local, rule, jobid in JOB_BLOCK.findall(log)]
    remote = {jobid: rule for local, rule, jobid in blocks if not local}
    local = {jobid: rule for is_local, rule, jobid in blocks if is_local}
    submitted = {int(job): slurm_id for job, slurm_id in SUBMITTED.findall(log)}
    assert len(remote) + len(local) == expected_jobs
    # Every non-local job went through sbatch, once, and no local one did.
    assert set(submitted) == set(remote)
    assert len(SUBMITTED.findall(log)) == len(remote)
    assert set(remote.values()) >= HEAVY_RULES
    assert not set(local.values()) & set(remote.values())

    # SLURM's side: one COMPLETED job per submission, each named by the run's UUID and commented with
    # its rule ("rule_train_wildcards_demo_voxelmorph_all").
    run_uuid = re.search(r"^SLURM run ID: (\S+)$", log, re.MULTILINE)
    assert run_uuid
    jobs = {j["id"]: j for j in cluster.jobs() if j["name"] == run_uuid.group(1)}
    assert set(jobs) == set(submitted.values())
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    comments = [re.match(r"rule_(\w+?)(_wildcards_.*)?$", j["comment"]) for j in jobs.values()]
    assert Counter(m.group(1) for m in comments if m) == Counter(remote.values())

    for name in all_files:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    rc, again = _snakemake(tmp_path, CI_CONFIG, "--dry-run", log="dry-run-after.log")
    assert rc == 0 and "Nothing to be done" in again, _tail(again)

    print(
        f"\n[slurm] ci DAG: {expected_jobs} jobs ({len(remote)} through sbatch, {len(local)} local) "
        f"in {wall_s:.0f} s wall time; apt-get install {cluster.install_s:.1f} s"
    )


def _train_job(cluster: Cluster) -> dict[str, str] | None:
    for job in cluster.jobs():
        if job["comment"].startswith("rule_train_") and job["state"] == "RUNNING":
            return job
    return None


def test_killed_training_resumes_under_slurm(cluster: Cluster, tmp_path: Path) -> None:
    settings = yaml.safe_load(FAULT_CONFIG.read_text())
    epochs = settings["train"]["defaults"]["epochs"]
    samples = settings["train"]["defaults"]["samples_per_epoch"]
    run_dir = tmp_path / "results" / settings["name"] / "runs" / "demo" / "voxelmorph" / "all"
    target = str(run_dir.relative_to(tmp_path) / "summary.json")
    train_log = tmp_path / "results" / settings["name"] / "logs" / "train" / "demo" / "voxelmorph" / "all.log"
    # The dataset is prepared here, not as a SLURM job, so that the training is the run's only SLURM job.
    dataset = settings["datasets"]["demo"]
    prepare = [f"--{key}={value}" for key, value in dataset["prepare"].items()]
    assert cli.main(["data", "demo", "--out", str(tmp_path / dataset["path"]), *prepare, "--quiet"]) == 0
    before = {j["id"] for j in cluster.jobs()}

    proc = _start_snakemake(tmp_path, FAULT_CONFIG, target, log="snakemake.log")
    killed = None
    try:
        deadline = time.monotonic() + 600
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            job = _train_job(cluster)
            if job is not None and (run_dir / "last.pt").exists():
                subprocess.run(["scancel", job["id"]], check=True)
                killed = job["id"]
            time.sleep(0.1)
        assert killed is not None, "the training job finished (or never ran) before it could be cancelled"
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "snakemake.log").read_text()
    assert rc == 0, _failed(log, tmp_path)

    # SLURM: the cancelled first attempt, then one completed retry of the same training job.
    new = [j for j in cluster.jobs() if j["id"] not in before]
    states = {j["id"]: j["state"] for j in new if j["comment"].startswith("rule_train_")}
    assert states.pop(killed) == "CANCELLED"
    assert list(states.values()) == ["COMPLETED"]
    assert f"SLURM-job '{killed}' failed, SLURM status is: 'CANCELLED'" in log

    # The retry restored last.pt: it announces a position past the first epoch, short of the end.
    resumed = re.search(r"dirbench train: resuming \S+ from epoch (\d+), step (\d+)", train_log.read_text())
    assert resumed, train_log.read_text()
    assert 1 <= int(resumed.group(1)) < epochs

    # ... and the finished run is the whole protocol, each epoch once: nothing lost, nothing repeated.
    with open(run_dir / "metrics.csv", newline="") as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh)] == list(range(1, epochs + 1))
    result = json.loads((run_dir / "summary.json").read_text())["result"]
    assert result["epochs"] == epochs
    assert result["updates"] == epochs * samples  # voxelmorph: two updates (A→B, B→A) per drawn pair
    assert (run_dir / "best.pt").is_file()
