"""How many CPUs this process may use: what the engine's threads, the server's default capacity and the training
data's encoders size themselves by."""

from __future__ import annotations

import math
import os


def default_threads() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (docker --cpus, Kubernetes limits),
    which the affinity does not show."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(cpus, cgroup_cpus() or cpus)


def cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max", v1: str = "/sys/fs/cgroup/cpu") -> int | None:
    """CPUs the cgroup quota allows (rounded up), or None: no quota, or no such files. cgroup v2's `path` holds
    'QUOTA PERIOD' (QUOTA 'max': none); on a cgroup v1 host (older Docker and Kubernetes nodes) the folder `v1`
    holds cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us."""
    try:
        return quota_cpus(*open(path).read().split()[:2])
    except (OSError, ValueError, TypeError):
        pass
    try:
        return quota_cpus(open(f"{v1}/cpu.cfs_quota_us").read().strip(), open(f"{v1}/cpu.cfs_period_us").read().strip())
    except (OSError, ValueError):
        return None


def quota_cpus(quota: str, period: str) -> int | None:
    """CPUs a CFS quota of `quota` microseconds per `period` allows, rounded up; None for no quota."""
    return None if quota in ("max", "-1") else max(1, math.ceil(int(quota) / int(period)))
