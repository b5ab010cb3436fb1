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

"""Running blocking work off the caller's thread, in either service mode.

``cinder-backup`` runs either under eventlet (monkey-patched, green
threads) or, since Cinder 29, with native threads.  Hashing, compression
and object I/O hold a CPU or block for a long time, so:

* under eventlet they run in eventlet's native thread pool (``tpool``), and
  the green thread that waits for them lets the rest of the service run;
* with native threads they run in a plain ``ThreadPoolExecutor``.

Work submitted here must be plain functions over bytes: no logging, no
green locks (eventlet bug 432), no waiting on each other.  All ordering
and synchronisation happens in the calling thread, which waits on the
returned futures.  A *lane* runs stateful steps that must see the data
in order (an MD5, a zstd stream, an object writer) on a thread of its
own, so that several such steps proceed side by side.
"""

import collections
import concurrent.futures
import ctypes
import os
import sys
import time


def eventlet_active():
    """True when eventlet has monkey-patched the thread module."""
    if 'eventlet' not in sys.modules:
        return False
    from eventlet import patcher
    return bool(patcher.is_monkey_patched('thread'))


def default_workers():
    """The number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


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


def execute(func, *args, **kwargs):
    """Call ``func`` on a native thread when under eventlet, else inline."""
    if eventlet_active():
        from eventlet import tpool
        return tpool.execute(func, *args, **kwargs)
    return func(*args, **kwargs)


def tpool_wrap(obj):
    """Proxy ``obj`` through eventlet's tpool when eventlet is active."""
    if eventlet_active():
        from eventlet import tpool
        return tpool.Proxy(obj)
    return obj


def cooperative_yield():
    """Let other green threads run (a no-op with native threads)."""
    if eventlet_active():
        time.sleep(0)


class WorkerPool(object):
    """A pool of native workers, usable from green or native threads.

    ``submit`` returns an object with a blocking ``result()``.
    """

    def __init__(self, workers=None):
        self.workers = workers or default_workers()
        self._green = eventlet_active()
        self._lanes = []
        if self._green:
            # Not a GreenPool: its spawn blocks the caller while the pool
            # is busy, which stalls the in-order work the caller does
            # between submissions (writing, handing over to the lanes).
            self._pool = _GreenWorkers(self.workers)
        else:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers,
                thread_name_prefix='chunked-backup')

    def submit(self, func, *args, **kwargs):
        return self._pool.submit(func, *args, **kwargs)

    def lane(self):
        """A :class:`Lane` whose tasks run in order beside this pool."""
        lane = _GreenWorkers(1) if self._green else _NativeLane()
        self._lanes.append(lane)
        return lane

    def shutdown(self):
        for lane in self._lanes:
            lane.shutdown()
        self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False


class _NativeLane(object):
    """One native thread running tasks in submission order."""

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix='chunked-backup-lane')

    def submit(self, func, *args, **kwargs):
        return self._executor.submit(func, *args, **kwargs)

    def shutdown(self):
        self._executor.shutdown(wait=True)


class _GreenWorkers(object):
    """Tasks run on eventlet's native pool, ``count`` at a time.

    ``count`` green threads take tasks from a queue, in order, and run
    each through ``tpool.execute``; the caller gets an event to wait on
    and never blocks when submitting.  With a count of one the tasks run
    in submission order (a lane).
    """

    def __init__(self, count=1):
        import eventlet
        from eventlet import queue
        self._queue = queue.LightQueue()
        self._threads = [eventlet.spawn(self._run) for _ in range(count)]

    def _run(self):
        from eventlet import tpool
        while True:
            item = self._queue.get()
            if item is None:
                return
            func, args, kwargs, event = item
            try:
                event.send(tpool.execute(func, *args, **kwargs))
            except Exception as e:
                event.send_exception(e)

    def submit(self, func, *args, **kwargs):
        from eventlet import event
        done = event.Event()
        self._queue.put((func, args, kwargs, done))
        return _EventFuture(done)

    def shutdown(self, wait=True):
        for _thread in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.wait()


class _EventFuture(object):
    def __init__(self, event):
        self._event = event

    def result(self):
        return self._event.wait()

    def done(self):
        return self._event.ready()


class OrderedWindow(object):
    """Futures taken back in submission order, at most ``depth`` pending.

    This is the back-pressure of every pipeline: the caller submits work
    and, once ``depth`` results are pending, has to consume the oldest
    before submitting more, so memory in flight stays bounded.
    """

    def __init__(self, pool, depth):
        self._pool = pool
        self._depth = max(1, depth)
        self._pending = collections.deque()

    def __len__(self):
        return len(self._pending)

    @property
    def full(self):
        return len(self._pending) >= self._depth

    def submit(self, tag, func, *args, **kwargs):
        self._pending.append((tag, self._pool.submit(func, *args, **kwargs)))

    @property
    def ready(self):
        """True when the oldest pending result is already there."""
        return bool(self._pending) and self._pending[0][1].done()

    def pop(self):
        """Wait for the oldest result; return ``(tag, result)``."""
        tag, future = self._pending.popleft()
        return tag, future.result()

    def drain(self):
        """Wait for every pending future, ignoring their results.

        Used on the error path, so that no worker still touches a buffer
        or a writer after the caller has given up on them.
        """
        while self._pending:
            _tag, future = self._pending.popleft()
            try:
                future.result()
            except Exception:  # noqa: S110 - the caller already failed
                pass


class LanePair(object):
    """Steps for two ordered lanes, at most ``depth`` pieces pending.

    The second lane's steps return how many bytes they stored.
    """

    def __init__(self, first, second, depth):
        self._lanes = (first, second)
        self._depth = depth
        self._pending = collections.deque()
        self.stored = 0

    def submit(self, first_step, second_step):
        while len(self._pending) >= self._depth:
            self._settle()
        self._pending.append(tuple(
            lane.submit(*step) if step else None
            for lane, step in zip(self._lanes, (first_step, second_step))))

    def _settle(self):
        first, second = self._pending.popleft()
        if first is not None:
            first.result()
        if second is not None:
            self.stored += second.result()

    def finish(self):
        """Wait for every step; return the bytes stored."""
        while self._pending:
            self._settle()
        return self.stored

    def drain(self):
        """Wait for every step, ignoring errors (the caller failed)."""
        while self._pending:
            for future in self._pending.popleft():
                if future is None:
                    continue
                try:
                    future.result()
                except Exception:  # noqa: S110 - already failing
                    pass
