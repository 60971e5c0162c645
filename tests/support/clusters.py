"""Real Slurm and Ray clusters on this machine, for the `cluster` tests.

Slurm: a one-node cluster (slurmctld and slurmd in the foreground, this process's children)
configured under a temporary folder, bound to 127.0.0.1 only (``NoInAddrAny`` and
``NoCtldInAddrAny``), with ``auth/none`` where this Slurm still has it, else munge with its
own key and socket. Ray: nodes started by ``ray start`` inside a network namespace that has
only the loopback interface, so nothing they open is reachable from elsewhere.

Every daemon is stopped in the fixtures' ``finally``; a machine that cannot run them (no
packages, not root) skips the test and says why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_COMMANDS = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo")
PLUGIN_DIRS = ("/usr/lib/*/slurm-wlm", "/usr/lib/*/slurm", "/usr/lib64/slurm", "/usr/lib/slurm")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it is still there after ``grace``."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def has_plugin(name: str) -> bool:
    return any(glob.glob(f"{folder}/{name}.so") for folder in PLUGIN_DIRS)


@dataclass
class Slurm:
    """A running one-node cluster: its config (``SLURM_CONF``) and its folder."""

    conf: Path
    folder: Path

    def run(self, *command: str) -> str:
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        return done.stdout


def _slurm_skip_reason() -> str | None:
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm "
            "(.ci/run does, as root)"
        )
    if os.geteuid() != 0:
        return "starting slurmd needs root (it launches jobs as their users)"
    if not has_plugin("auth_none") and shutil.which("munged") is None:
        return "this Slurm has no auth/none and munge is not installed (apt-get install munge)"
    return None


def _auth_lines(folder: Path, started: list[subprocess.Popen]) -> list[str]:
    """auth/none where this Slurm has it; else a munged of our own, key and socket here."""
    if has_plugin("auth_none"):
        return ["AuthType=auth/none", "CredType=cred/none"]
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = folder / "munge.socket"
    munged = subprocess.Popen(
        [
            "munged", "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
            f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
            f"--seed-file={folder / 'munged.seed'}",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started.append(munged)
    for _ in range(50):
        if socket_path.exists():
            break
        time.sleep(0.1)
    return ["AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}"]


def slurm_conf(folder: Path, auth: list[str]) -> str:
    cpus = max(2, os.cpu_count() or 2)
    lines = [
        "ClusterName=triggerlabtest",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        *auth,
        # bind 127.0.0.1, not every interface: slurmd and srun, and slurmctld
        "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/pgid",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "MailProg=/bin/true",
        "SchedulerType=sched/builtin",
        "SchedulerParameters=sched_interval=2",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "ReturnToService=2",
        "KillWait=0",
        "MinJobAge=600",
        "SlurmdParameters=config_overrides",
        f"NodeName=tlnode NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={cpus} "
        "RealMemory=4000 State=UNKNOWN",
        "PartitionName=debug Nodes=tlnode Default=YES MaxTime=120 State=UP",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def slurm_cluster(folder: Path) -> Iterator[Slurm]:
    """slurmctld and slurmd for the duration of the block; jobs cancelled and daemons
    stopped at its end, whatever happened."""
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    started: list[subprocess.Popen] = []
    conf = folder / "slurm.conf"
    cluster = Slurm(conf, folder)
    try:
        conf.write_text(slurm_conf(folder, _auth_lines(folder, started)))
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "tlnode"]):
            log = (folder / f"{daemon[0]}.stderr").open("w")
            started.append(
                subprocess.Popen(
                    [*daemon, "-f", str(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            time.sleep(1)
        deadline = time.monotonic() + 60
        while "idle" not in cluster.run("sinfo", "-h", "-o", "%T"):
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                logs = "".join(
                    (folder / f).read_text()[-1500:]
                    for f in ("slurmctld.stderr", "slurmd.stderr")
                    if (folder / f).exists()
                )
                pytest.fail(f"the test's Slurm cluster did not come up:\n{logs}")
            time.sleep(0.5)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--me")
            deadline = time.monotonic() + 30
            while cluster.run("squeue", "-h", "--me") and time.monotonic() < deadline:
                time.sleep(0.5)
        for process in reversed(started):
            stop(process)


@dataclass
class RayNodes:
    """Ray nodes in a loopback-only network namespace held by ``holder``."""

    holder: subprocess.Popen
    address: str
    folder: Path
    nodes: list[subprocess.Popen]
    env: dict[str, str]  # for the nodes and their drivers

    def inside(self, *command: str) -> list[str]:
        """``command`` run in the namespace (nsenter: same user, files and mounts)."""
        return ["nsenter", "-t", str(self.holder.pid), "-n", *command]


def _ray_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Ray nodes run in a loopback-only network namespace, which needs root"
    missing = [c for c in ("unshare", "nsenter", "ip") if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} missing (util-linux, iproute2)"
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"cannot make namespaces here (unshare: {probe.stderr.strip()[:200]})"
    return None


def ray_command() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _alive_nodes(cluster: RayNodes) -> int:
    code = (
        f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False, "
        "configure_logging=False); print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    try:
        done = subprocess.run(
            cluster.inside(sys.executable, "-c", code),
            capture_output=True,
            text=True,
            timeout=30,
            env=cluster.env,
        )
    except subprocess.TimeoutExpired:  # the head is not answering yet
        return 0
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0


@contextlib.contextmanager
def ray_nodes(folder: Path, hidden: Path) -> Iterator[RayNodes]:
    """A head and a worker node, one CPU each, with their own temporary folders; the worker
    sees an empty folder at ``hidden`` (its own mount namespace), so it does not share what
    the driver writes there."""
    reason = _ray_skip_reason()
    if reason:
        pytest.skip(reason)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        # no token authentication, whatever a token left in ~/.ray would otherwise switch on
        "RAY_AUTH_MODE": "disabled",
        # a dead node is noticed in about two seconds, not thirty
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    folder.mkdir(parents=True, exist_ok=True)
    # Ray's socket paths must stay under 108 bytes: its temporary folders get short names
    short = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 3600"],
        start_new_session=True,
    )
    started: list[subprocess.Popen] = []
    port = free_port()
    cluster = RayNodes(holder, f"127.0.0.1:{port}", folder, started, env)
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    common += ["--object-store-memory=100000000"]
    try:
        time.sleep(0.5)
        head = [ray_command(), "start", "--head", f"--port={port}", "--include-dashboard=false"]
        head += [f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={short / 'head'}"]
        started.append(
            subprocess.Popen(
                cluster.inside(*head, *common),
                env=env,
                start_new_session=True,
                stdout=(folder / "head.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        worker = [ray_command(), "start", f"--address={cluster.address}", *common]
        worker += [f"--dashboard-agent-listen-port={free_port()}"]
        worker += [f"--temp-dir={short / 'worker'}"]
        (folder / "worker-tmp").mkdir(parents=True, exist_ok=True)
        hide = f"mount -t tmpfs triggerlab-test {shlex.quote(str(hidden))}"
        hide += f" && exec {shlex.join(worker)}"
        time.sleep(3)
        started.append(
            subprocess.Popen(
                cluster.inside("unshare", "--mount", "--propagation", "private", "sh", "-c", hide),
                env={**env, "TMPDIR": str(folder / "worker-tmp")},
                start_new_session=True,
                stdout=(folder / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 120
        while _alive_nodes(cluster) < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                logs = "".join((folder / f).read_text()[-1500:] for f in ("head.log", "worker.log"))
                pytest.fail(f"the test's Ray nodes did not come up:\n{logs}")
            time.sleep(1)
        yield cluster
    finally:
        for process in reversed(started):
            stop(process, grace=5)
        stop(holder, grace=5)
        shutil.rmtree(short, ignore_errors=True)


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL every process of a Ray node started by ``ray_nodes`` (all that share its mount
    namespace): killing its process group is not enough, as Ray's workers and raylet may live
    in groups of their own and a worker finishes its task before it notices its raylet died."""
    namespace = os.readlink(f"/proc/{node.pid}/ns/mnt")
    for _ in range(50):
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "ns" / "mnt") == namespace:
                        members.append(int(entry.name))
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    node.wait(timeout=30)


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail the block (TimeoutError in the main thread) when it runs longer than ``seconds``:
    a cluster that stops answering must not hang the suite."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"the cluster test ran past its {seconds} s bound")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def results_without_timings(grid_dir: Path):
    """What `triggerlab results` reads from a grid, one row per run, without the timings
    (the only columns that may differ between executors)."""
    from triggerlab.analysis.results import collect

    table, _ = collect(grid_dir)
    timings = [c for c in table.columns if c.endswith(("_s", "_per_s"))]
    return table.drop(columns=timings).sort_values("run_id").reset_index(drop=True)
