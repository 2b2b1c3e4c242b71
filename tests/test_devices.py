"""CPU threads per process: the CPUs the process may use, shared by parallel jobs, or what the user says."""
import os

import pytest
import torch

from cirbench.devices import configure_cpu_threads, usable_cpus
from cirbench.errors import ConfigError


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_threads_follow_the_usable_cpus_the_jobs_and_the_user(restore_threads, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert 1 <= usable_cpus() <= 6  # the affinity mask, perhaps capped by a cgroup quota
    monkeypatch.setattr("cirbench.devices.usable_cpus", lambda: 6)
    assert configure_cpu_threads() == 6 and torch.get_num_threads() == 6
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_cpu_threads(jobs=4) == 1 and torch.get_num_threads() == 1  # 6 CPUs over 4 jobs, at least 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_cpu_threads(jobs=2) == 3 and os.environ["OMP_NUM_THREADS"] == "3"  # children inherit it
    assert configure_cpu_threads() == 3  # the environment's setting is the user's
    assert configure_cpu_threads(2) == 2 and torch.get_num_threads() == 2  # --threads wins
    with pytest.raises(ConfigError, match="positive integer"):
        configure_cpu_threads(0)
