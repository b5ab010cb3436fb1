#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""What every backup and restore of one process shares.

``cinder-backup`` runs up to ``backup_max_operations`` (15) backups and
restores at once in one process, each through a driver object of its
own.  Threads and memory are budgets of that process, not of one
operation, so an operation draws on a :class:`ProcessBudget`:

* ``workers`` CPU threads (hashing, compression, decompression) and
  ``io_threads`` threads that write, upload and fsync, shared by every
  operation: with native threads, two executors of the process; under
  eventlet, two gates on eventlet's tpool (whose native threads are the
  process's already);
* ``max_bytes_in_flight`` of volume data in memory, shared fairly: each
  running operation may hold an equal part of it (:meth:`Operation.share`),
  asked again before every piece it takes on, so a share shrinks as
  operations start and grows as they end.  Each window keeps at least
  one piece, so that an operation always makes progress: with more
  operations than the bound has room for, that floor is what they hold;
* glibc's malloc settings, made once per process.

Nothing here blocks an operation on another: each sizes its own windows
from its share, so an operation always makes progress with what it
already holds.
"""

import contextlib
import ctypes

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext import locks

#: Pieces pending on an operation's in-order lanes, at most.
LANE_DEPTH = 8


class ProcessBudget(object):
    """The threads and the memory that the process's operations share."""

    def __init__(self, workers, io_threads, bytes_in_flight):
        self.workers = max(1, workers)
        self.io_threads = max(1, io_threads)
        self.bytes_in_flight = bytes_in_flight
        self.cpu = concurrency.SharedThreads(self.workers, 'chunked-backup')
        self.io = concurrency.SharedThreads(self.io_threads,
                                            'chunked-backup-io')
        self._lock = locks.native_lock()
        self._running = 0
        #: The most operations seen running at once (for tests and logs).
        self.most_running = 0

    @property
    def running(self):
        return self._running

    def share(self):
        """The bytes in flight each running operation may hold now."""
        with self._lock:
            running = max(1, self._running)
        return self.bytes_in_flight // running

    @contextlib.contextmanager
    def operation(self):
        """An :class:`Operation` drawing on this budget while it runs."""
        with self._lock:
            self._running += 1
            self.most_running = max(self.most_running, self._running)
        op = Operation(self)
        try:
            yield op
        finally:
            try:
                op.shutdown()
            finally:
                with self._lock:
                    self._running -= 1


class Operation(object):
    """One backup's or restore's part of a :class:`ProcessBudget`.

    ``cpu`` and ``io`` are its pools on the process's threads; ``lane``
    makes an in-order lane on the I/O threads.  The sizes of its windows
    come from :meth:`share`, asked again at every check.
    """

    def __init__(self, budget):
        self.budget = budget
        self.workers = budget.workers
        self.cpu = concurrency.WorkerPool(shared=budget.cpu,
                                          lane_threads=budget.io)
        self.io = concurrency.WorkerPool(shared=budget.io)

    def share(self):
        return self.budget.share()

    def lane(self):
        return self.cpu.lane()

    def pieces(self, piece_bytes, part=1):
        """Pieces of ``piece_bytes`` in a ``part``-th of the share (>= 1)."""
        return max(1, self.share() // part // piece_bytes)

    def lane_depth(self, piece_bytes):
        """Pieces pending on one lane: a quarter of the share, up to 8."""
        return max(1, min(LANE_DEPTH, self.pieces(piece_bytes, 4)))

    def window_depth(self, piece_bytes):
        """Pieces being analysed at once: enough to keep every worker busy.

        More would only hold memory (the lanes, not the pool, set the
        pace); fewer when the share says so.  The lanes take what the
        window leaves.
        """
        pieces = self.pieces(piece_bytes) - self.lane_depth(piece_bytes)
        return max(1, min(pieces, 3 * self.workers))

    def hash_window_depth(self, piece_bytes):
        """Pieces an incremental backup hashes at once.

        A quarter of the share: its hashed pieces are then held until
        their changed runs are stored (``whole_objects_at_once`` takes
        half).
        """
        return max(1, min(self.pieces(piece_bytes, 4), 3 * self.workers))

    def shutdown(self):
        try:
            self.cpu.shutdown()
        finally:
            self.io.shutdown()


_budgets = {}
_budgets_lock = locks.native_lock()


def for_settings(settings):
    """The process's budget for ``settings`` (one per distinct setting).

    A service has one configuration, so one budget; tests that change
    the settings get a budget per combination.
    """
    key = (concurrency.eventlet_active(), settings.workers,
           settings.io_threads, settings.max_bytes_in_flight)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = ProcessBudget(
                settings.workers, settings.io_threads,
                settings.max_bytes_in_flight)
    return budget


# glibc's mallopt parameters: the number of malloc arenas, and the size
# from which a buffer gets a mapping of its own.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_arenas_limited = []
_mmap_threshold_fixed = []


def _mallopt_once(done, param, value):
    """``mallopt(param, value)`` the first time only; 0 or less: nothing.

    ``done`` records the value set, for the whole process.  False where
    the C library has no ``mallopt``.
    """
    if value <= 0 or done:
        return False
    done.append(value)
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(param, value))


def fix_mmap_threshold(size):
    """Give every buffer of ``size`` bytes or more a mapping of its own.

    glibc maps a large buffer for itself and unmaps it when it is freed,
    but after the first such free it raises the threshold to that size
    (up to 32 MiB), and from then on buffers of a full backup's object
    (16 MiB) come from the arenas, where what is freed stays resident:
    about 50 MB more at the peak of a full backup.  A fixed threshold
    keeps the peak at the data in flight.  Done once per process (0:
    leave glibc's sliding threshold); a no-op where the C library has
    no ``mallopt``.
    """
    return _mallopt_once(_mmap_threshold_fixed, _M_MMAP_THRESHOLD, size)


def limit_malloc_arenas(count):
    """Ask glibc for at most ``count`` malloc arenas (0: leave it be).

    glibc gives each thread that allocates an arena of its own, up to
    eight per CPU, and freed buffers stay in it.  Eventlet's tpool runs
    our work on any of its 20 threads, so the pieces of a few MiB that
    pass through them end up spread over 20 arenas, which keeps about
    100 MB more resident than the data in flight.  Done once per
    process; a no-op where the C library has no ``mallopt``.
    """
    return _mallopt_once(_arenas_limited, _M_ARENA_MAX, count)
