"""`JobLimits`: what one job's process tree may use, and the trainer's default memory limit."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class JobLimits:
    """Limits of one job's process tree; 0 means no limit.

    Attributes:
        memory_bytes: memory of the whole tree (cgroup), else address space per process.
        max_processes: processes and threads of the tree (cgroup pids), else of the job user.
        max_open_files: open files per process.
        cpu_seconds: CPU time per process; SIGXCPU, then SIGKILL 5 s later.
    """

    memory_bytes: int = 0
    max_processes: int = 0
    max_open_files: int = 0
    cpu_seconds: int = 0

    def describe(self) -> str:
        """One line for the log, e.g. ``memory 512 MiB, processes 4096, ...``."""
        parts = [
            f"memory {self.memory_bytes // 2**20} MiB" if self.memory_bytes else "memory -",
            f"processes {self.max_processes or '-'}",
            f"open files {self.max_open_files or '-'}",
            f"CPU {self.cpu_seconds} s" if self.cpu_seconds else "CPU -",
        ]
        return ", ".join(parts)


def default_memory_bytes() -> int:
    """Three quarters of this machine's memory: the trainer itself keeps some headroom."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4
