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
green locks (eventlet bug 432; :mod:`cinder_chunked_ext.locks` makes
the native ones), no waiting on each other.  Whatever a task raises,
``BaseException`` included, reaches the thread that waits for it.  All ordering
and synchronisation happens in the calling thread, which waits on the
returned futures.  A *lane* runs stateful steps that must see the data
in order (an MD5, a zstd stream, an object writer) on a thread of its
own, so that several such steps proceed side by side.
"""

import collections
import concurrent.futures
import os
import sys
import time

from cinder_chunked_ext import locks


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


def _outcome(func, args, kwargs):
    """Call ``func``; return ``(True, result)`` or ``(False, error)``.

    Runs on eventlet's native threads.  Eventlet's tpool hands back only
    ``Exception`` and ``eventlet.Timeout``: any other ``BaseException``
    kills its thread and leaves the waiting green thread blocked for
    good.  Returned as a value, every error reaches its waiter.
    """
    try:
        return True, func(*args, **kwargs)
    except BaseException as e:  # noqa: B902 - handed to the waiter
        return False, e


def _in_tpool(func, args, kwargs):
    from eventlet import tpool
    ok, value = tpool.execute(_outcome, func, args, kwargs)
    if not ok:
        raise value
    return value


def execute(func, *args, **kwargs):
    """Call ``func`` on a native thread when under eventlet, else inline.

    Whatever ``func`` raises, ``BaseException`` included, is raised here.
    """
    if eventlet_active():
        return _in_tpool(func, args, kwargs)
    return func(*args, **kwargs)


def wait_quietly(futures):
    """Wait for every future in ``futures``, dropping their errors.

    For error paths: the caller is already failing with an error of its
    own, which must not be replaced by a worker's, and no worker may
    still touch a buffer or a writer once the caller gives up on them.
    """
    for future in futures:
        if future is None:
            continue
        try:
            future.result()
        except BaseException:  # noqa: B902,S110 - the caller's error wins
            pass


def add_note(error, text):
    """Attach ``text`` to ``error`` where Python can (3.11 and later)."""
    note = getattr(error, 'add_note', None)
    if note is not None:
        note(text)


def cleanup_keeping_error(error, cleanup, *args):
    """Run ``cleanup(*args)`` while ``error`` is being raised.

    A failing cleanup never replaces the first error: its own error is
    attached to the first as a note (nothing is logged, as this may run
    on a native worker thread).
    """
    try:
        cleanup(*args)
    except Exception as e:
        add_note(error, 'while cleaning up after it: %r' % (e,))


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


class SharedThreads(object):
    """Native threads for tasks of every operation of the process.

    With native threads, a ``ThreadPoolExecutor`` of ``size`` threads.
    Under eventlet, a gate: eventlet's tpool (its native threads are the
    process's already) runs at most ``size`` of these tasks at once, the
    green threads that hand them over waiting their turn at a green
    semaphore, first come first served.
    """

    def __init__(self, size, name):
        self.size = max(1, size)
        self.green = eventlet_active()
        self.gate = None
        self.executor = None
        if self.green:
            from eventlet import semaphore
            self.gate = semaphore.Semaphore(self.size)
        else:
            self.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.size, thread_name_prefix=name)

    def shutdown(self):
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class WorkerPool(object):
    """One operation's tasks on native threads, in either service mode.

    ``submit`` returns an object with a blocking ``result()`` that raises
    whatever the task raised.  The threads are ``shared`` (a process's
    :class:`SharedThreads`, see :mod:`~cinder_chunked_ext.engine.budget`)
    or, without it, ``workers`` threads of the pool's own.  ``lane``
    makes a :class:`Lane` on ``lane_threads`` (default: the same).
    ``shutdown`` waits for this pool's tasks only.
    """

    def __init__(self, workers=None, shared=None, lane_threads=None):
        self._owned = shared is None
        if shared is None:
            shared = SharedThreads(workers or default_workers(),
                                   'chunked-backup')
        self._threads = shared
        self._lane_threads = lane_threads or shared
        self.workers = shared.size
        self._green = shared.green
        self._lanes = []
        if self._green:
            # Not a GreenPool: its spawn blocks the caller while the pool
            # is busy, which stalls the in-order work the caller does
            # between submissions (writing, handing over to the lanes).
            self._pool = _GreenWorkers(shared.size, shared.gate)
        else:
            self._pool = _SharedSubmitter(shared.executor)

    def submit(self, func, *args, **kwargs):
        return self._pool.submit(func, *args, **kwargs)

    def lane(self):
        """A lane whose tasks run one at a time, in submission order."""
        threads = self._lane_threads
        lane = (_GreenWorkers(1, threads.gate) if threads.green
                else _SerialLane(threads.executor))
        self._lanes.append(lane)
        return lane

    def shutdown(self):
        for lane in self._lanes:
            lane.shutdown()
        self._pool.shutdown()
        if self._owned:
            self._threads.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False


class _SharedSubmitter(object):
    """Submits to a shared executor; ``shutdown`` waits for its own tasks."""

    def __init__(self, executor):
        self._executor = executor
        self._futures = set()

    def submit(self, func, *args, **kwargs):
        future = self._executor.submit(func, *args, **kwargs)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def shutdown(self):
        concurrent.futures.wait(list(self._futures))


class _SerialLane(object):
    """Tasks run one at a time, in order, on a shared executor's threads.

    At most one thread of the executor works for the lane at a time,
    taking the lane's tasks in turn; no thread of its own.
    """

    def __init__(self, executor):
        self._executor = executor
        self._lock = locks.native_lock()
        self._queue = collections.deque()
        self._running = False
        self._last = None

    def submit(self, func, *args, **kwargs):
        future = concurrent.futures.Future()
        with self._lock:
            self._queue.append((future, func, args, kwargs))
            self._last = future
            start = not self._running
            self._running = True
        if start:
            self._executor.submit(self._drain)
        return future

    def _drain(self):
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                future, func, args, kwargs = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args, **kwargs))
            except BaseException as e:  # noqa: B902 - handed to the waiter
                future.set_exception(e)
            future = func = args = kwargs = None

    def shutdown(self):
        last = self._last
        if last is not None:
            concurrent.futures.wait([last])


class _GreenWorkers(object):
    """Tasks run on eventlet's native pool, ``count`` at a time.

    ``count`` green threads take tasks from a queue, in order, and run
    each through ``tpool.execute``, past ``gate`` (a green semaphore
    shared by every operation of the process) when one is given; the
    caller gets an event to wait on and never blocks when submitting.
    With a count of one the tasks run in submission order (a lane).
    Whatever a task raises, ``BaseException`` included, reaches its
    waiter.
    """

    def __init__(self, count=1, gate=None):
        import eventlet
        from eventlet import queue
        self._queue = queue.LightQueue()
        self._gate = gate
        self._threads = [eventlet.spawn(self._run) for _ in range(count)]

    def _run(self):
        from eventlet import tpool
        while True:
            item = self._queue.get()
            if item is None:
                return
            func, args, kwargs, event = item
            try:
                if self._gate is None:
                    ok, value = tpool.execute(_outcome, func, args, kwargs)
                else:
                    with self._gate:
                        ok, value = tpool.execute(_outcome, func, args,
                                                  kwargs)
            except BaseException as e:  # noqa: B902
                # Thrown into this green thread (it is being killed): the
                # task's waiter learns of it, and the thread ends.
                event.send_exception(e)
                raise
            if ok:
                event.send(value)
            else:
                event.send_exception(value)
            # Waiting for the next task must not keep this one's buffers
            # alive: an idle worker would pin a piece each.
            item = func = args = kwargs = event = value = None

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
        self._depth = depth
        self._pending = collections.deque()

    def __len__(self):
        return len(self._pending)

    @property
    def depth(self):
        """At least 1; a callable depth is asked again at every check."""
        depth = self._depth() if callable(self._depth) else self._depth
        return max(1, depth)

    @property
    def full(self):
        return len(self._pending) >= self.depth

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
        pending, self._pending = self._pending, collections.deque()
        wait_quietly(future for _tag, future in pending)


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
        depth = self._depth() if callable(self._depth) else self._depth
        while len(self._pending) >= max(1, depth):
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
        pending, self._pending = self._pending, collections.deque()
        wait_quietly(future for pair in pending for future in pair)


#: ``run_all`` gives each of its ``at_once`` slots about this many tasks.
TASKS_PER_SLOT = 4


def run_all(pool, func, items, at_once):
    """Call ``func(item)`` for every item on ``pool``, ``at_once`` at a time.

    Returns once every call has finished; raises the first error (in the
    order of ``items``) after the others are done, so that nothing still
    runs when the caller handles it.

    Many items are handed over a few at a time: a task is a round trip
    between the green thread and a worker thread (about 80 us of CPU on
    the hub under eventlet), which costs more than an fsync of a small
    file that the disk already has.  There are still at least
    ``TASKS_PER_SLOT`` tasks per slot, so ``at_once`` run at once; within
    a task the items run in order, and the first error stops it.
    """
    items = list(items)
    size = max(1, len(items) // (at_once * TASKS_PER_SLOT))
    groups = [items[start:start + size]
              for start in range(0, len(items), size)]
    window = OrderedWindow(pool, at_once)
    try:
        for group in groups:
            if window.full:
                window.pop()
            window.submit(None, _call_each, func, group)
        while len(window):
            window.pop()
    finally:
        window.drain()


def _call_each(func, items):
    for item in items:
        func(item)
