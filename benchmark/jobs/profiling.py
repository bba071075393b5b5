"""Wall time and peak memory of a block of work, on CPU or CUDA."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Cost:
    """What a block of work cost: seconds and peak memory in MiB above the start."""

    seconds: float = 0.0
    peak_mem_mb: float = 0.0
    memory_kind: str = "rss"


class measure:
    """Measure wall time and peak memory of the ``with`` block.

    On CUDA: peak allocated device memory (``torch.cuda.max_memory_allocated``) above the start.
    On CPU: peak resident set size of this process above the start, sampled every 20 ms by a
    background thread (short spikes between samples can be missed).
    """

    def __init__(self, device: torch.device) -> None:
        """Args: the device the work runs on."""
        self.device = device
        self.cost = Cost(memory_kind="cuda_allocated" if device.type == "cuda" else "rss")
        self._stop = threading.Event()
        self._peak = 0
        self._start_mem = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self._peak = max(self._peak, proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> Cost:
        """Start timing and sampling."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_mem = torch.cuda.memory_allocated(self.device)
        else:
            self._start_mem = self._peak = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self.cost

    def __exit__(self, *exc: object) -> None:
        """Stop and fill in the cost."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, psutil.Process().memory_info().rss)
        self.cost.seconds = time.perf_counter() - self._t0
        self.cost.peak_mem_mb = max(0, peak - self._start_mem) / 2**20


class intra_op_threads:
    """Run the ``with`` block with ``n`` torch intra-op threads, then restore the setting.

    Pruning runs under ``intra_op_threads(1)`` on CPU (see :func:`pruning_threads`): BLAS
    splits a reduction differently for each thread count, so float statistics (X^T X) and the
    greedy choices built on them would otherwise depend on how many threads the job had. With
    one thread per kernel the result is the same for 1, 2 or N configured threads; a pruner
    that parallelises (AKR's row chunks) does so across a FIXED partition of its work, each
    part with single-threaded kernels, so the partition and not the thread count decides.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._old = 0

    def __enter__(self) -> None:
        self._old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._old)


def pruning_threads(device: torch.device) -> int | None:
    """Intra-op threads for pruning on ``device``: 1 on CPU (thread-count independence),
    None (unchanged) on CUDA, where the record names the device and kernel settings."""
    return 1 if device.type == "cpu" else None
