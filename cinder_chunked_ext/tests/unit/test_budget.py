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

"""Threads and memory are budgets of the process, not of an operation."""

import dataclasses
import gc
import io
import textwrap
import threading
import time
import weakref

import fixtures
import testtools

from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.store import posix as posix_store
from cinder_chunked_ext.tests import patched_process
from cinder_chunked_ext.tests.unit import test_chunked_backup as base

MiB = 1024 ** 2


class ShareTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            self.skipTest('this process is monkey-patched by eventlet')

    def test_share_one_operation_whole_bound(self):
        process = budget.ProcessBudget(2, 2, 128 * MiB)
        with process.operation() as op:
            self.assertEqual(128 * MiB, op.share())

    def test_share_split_between_running_operations(self):
        process = budget.ProcessBudget(2, 2, 128 * MiB)
        with process.operation() as first:
            with process.operation():
                self.assertEqual(64 * MiB, first.share())
                with process.operation(), process.operation():
                    self.assertEqual(32 * MiB, first.share())
            self.assertEqual(128 * MiB, first.share())
        self.assertEqual(0, process.running)
        self.assertEqual(4, process.most_running)

    def test_share_many_operations_windows_keep_one_piece(self):
        process = budget.ProcessBudget(2, 2, 16 * MiB)
        with process.operation() as op:
            with process.operation(), process.operation(), \
                    process.operation():
                self.assertEqual(4 * MiB, op.share())
                self.assertEqual(1, op.window_depth(4 * MiB))
                self.assertEqual(1, op.lane_depth(4 * MiB))
                self.assertEqual(1, op.hash_window_depth(4 * MiB))

    def test_windows_shrink_with_share_at_least_one(self):
        process = budget.ProcessBudget(2, 2, 128 * MiB)
        piece = 4 * MiB
        with process.operation() as op:
            self.assertEqual((8, 6), (op.lane_depth(piece),
                                      op.window_depth(piece)))
            self.assertEqual(6, op.hash_window_depth(piece))
            with process.operation(), process.operation(), \
                    process.operation(), process.operation(), \
                    process.operation(), process.operation(), \
                    process.operation():
                self.assertEqual((1, 3), (op.lane_depth(piece),
                                          op.window_depth(piece)))
                self.assertEqual(1, op.hash_window_depth(piece))

    def test_operation_ended_by_error_no_longer_counted(self):
        process = budget.ProcessBudget(2, 2, 128 * MiB)
        with testtools.ExpectedException(RuntimeError):
            with process.operation():
                raise RuntimeError('failed')
        self.assertEqual(0, process.running)

    def test_for_settings_one_budget_per_setting(self):
        settings = base_settings()
        self.assertIs(budget.for_settings(settings),
                      budget.for_settings(settings))
        other = dataclasses.replace(settings, max_bytes_in_flight=64 * MiB)
        self.assertIsNot(budget.for_settings(settings),
                         budget.for_settings(other))

    def test_cpu_threads_shared_by_operations_never_exceeded(self):
        process = budget.ProcessBudget(2, 3, 128 * MiB)
        running = []
        most = [0]
        lock = threading.Lock()

        def task():
            with lock:
                running.append(1)
                most[0] = max(most[0], len(running))
            time.sleep(0.01)
            with lock:
                running.pop()
        with process.operation() as a, process.operation() as b:
            futures = [op.cpu.submit(task) for op in (a, b)
                       for _i in range(8)]
            for future in futures:
                future.result()
        self.assertEqual(2, most[0])


def base_settings():
    return chunked.EngineSettings(
        compression='zlib', create_containers=True, timer_interval=120,
        objects_per_notification=10, availability_zone='nova', workers=2,
        max_bytes_in_flight=128 * MiB, verify_checksums=True)


class OperationsShareBytesTestCase(base.DriverTestCase):
    """Backups running at once hold no more than the process's bound."""

    def test_concurrent_backups_bytes_in_flight_within_process_bound(self):
        # Four backups at once, in four threads, each with a driver of
        # its own, as cinder-backup runs them.  Data read from the
        # volumes and not yet handed to a writer stays within the bound
        # of the process, where each backup used to take the whole bound
        # for itself.  No compression: what is written is what was read.
        bound = 16 * base.PIECE
        self.conf.config(backup_compression_algorithm='none',
                         backup_file_size=32 * base.PIECE)
        counter = _InFlight()
        real_write = posix_store._AtomicFileWriter._write

        def write(writer, data):
            counter.add(-len(data))
            return real_write(writer, data)
        self.useFixture(fixtures.MockPatchObject(
            posix_store._AtomicFileWriter, '_write', write))
        data = base.text_bytes(64 * base.PIECE)
        gate = threading.Barrier(4, timeout=30)
        errors = []

        def one():
            driver = self.make_driver()
            driver.settings = dataclasses.replace(
                driver.settings, max_bytes_in_flight=bound, workers=2)
            driver.store.streams_writes = False   # stream every object
            try:
                gate.wait()
                self.make_backup(data, driver=driver,
                                 volume_file=_CountedVolume(data, counter))
            except BaseException as e:  # noqa: B902 - reported below
                errors.append(e)
        threads = [threading.Thread(target=one) for _i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual([], errors)
        self.assertGreater(counter.most, 0)
        self.assertLessEqual(counter.most, bound + bound // 2)


class _InFlight(object):
    def __init__(self):
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def add(self, count):
        with self._lock:
            self.now += count
            self.most = max(self.most, self.now)


class _CountedVolume(io.BytesIO):
    """Read through ``read`` only; every byte read is counted in flight."""

    def __init__(self, data, counter):
        super().__init__(data)
        self._counter = counter

    def read(self, size=-1):
        out = super().read(size)
        self._counter.add(len(out))
        return out

    def fileno(self):
        raise io.UnsupportedOperation('no descriptor')


IDLE_WORKERS_SCRIPT = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()
    import gc, json, weakref
    from cinder_chunked_ext.engine import concurrency

    class Buffer(object):
        pass

    pool = concurrency.WorkerPool(4)
    lane = pool.lane()
    refs = []
    for submit in (pool.submit, lane.submit):
        buffer = Buffer()
        refs.append(weakref.ref(buffer))
        submit(len, [buffer]).result()
        del buffer
    eventlet.sleep(0)
    gc.collect()
    print(json.dumps([ref() is None for ref in refs]))
    pool.shutdown()
''')


class IdleWorkersTestCase(testtools.TestCase):
    """A worker waiting for its next task holds nothing of the last."""

    def test_monkey_patched_idle_worker_releases_task_buffers(self):
        self.assertEqual([True, True],
                         patched_process.run_script(IDLE_WORKERS_SCRIPT))

    def test_native_idle_lane_releases_task_buffers(self):
        with concurrency.WorkerPool(2) as pool:
            lane = pool.lane()
            buffer = _Buffer()
            ref = weakref.ref(buffer)
            lane.submit(len, [buffer]).result()
            del buffer
            gc.collect()
            self.assertIsNone(ref())


class _Buffer(object):
    pass
