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

"""The worker pools, and the engine in both service modes.

cinder-backup runs with native threads or under eventlet.  Monkey
patching cannot be undone, so the eventlet mode runs in a subprocess
that patches first; the native mode runs in this process.
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import fixtures
import testtools

import cinder_chunked_ext
from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.tests.unit import test_chunked_backup as base


class _Boom(Exception):
    pass


class NativeModeTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            self.skipTest('this process is monkey-patched by eventlet')

    def test_eventlet_active_not_patched_false(self):
        self.assertFalse(concurrency.eventlet_active())

    def test_execute_inline_same_thread(self):
        self.assertEqual(
            (threading.get_ident(), 5),
            concurrency.execute(lambda x: (threading.get_ident(), x), 5))

    def test_execute_exception_propagates(self):
        def fail():
            raise _Boom()
        self.assertRaises(_Boom, concurrency.execute, fail)

    def test_tpool_wrap_not_patched_same_object(self):
        obj = io.BytesIO()
        self.assertIs(obj, concurrency.tpool_wrap(obj))

    def test_cooperative_yield_not_patched_no_op(self):
        self.assertIsNone(concurrency.cooperative_yield())

    def test_default_workers_at_least_one(self):
        self.assertGreaterEqual(concurrency.default_workers(), 1)

    def test_worker_pool_native_threads_results(self):
        with concurrency.WorkerPool(3) as pool:
            futures = [pool.submit(lambda x: (x * 2, threading.get_ident()),
                                   i) for i in range(10)]
            results = [f.result() for f in futures]
        self.assertIsInstance(futures[0], concurrent.futures.Future)
        self.assertEqual([i * 2 for i in range(10)],
                         [r for r, _t in results])
        self.assertNotIn(threading.get_ident(), [t for _r, t in results])

    def test_worker_pool_zero_workers_default(self):
        pool = concurrency.WorkerPool(0)
        self.addCleanup(pool.shutdown)
        self.assertEqual(concurrency.default_workers(), pool.workers)

    def test_worker_pool_shutdown_waits_for_work(self):
        done = []
        with concurrency.WorkerPool(2) as pool:
            for i in range(4):
                pool.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
        self.assertEqual([0, 1, 2, 3], sorted(done))

    def test_ordered_window_results_in_submission_order(self):
        release = threading.Event()

        def slow(x):
            release.wait(5)
            return x

        with concurrency.WorkerPool(4) as pool:
            window = concurrency.OrderedWindow(pool, 4)
            window.submit('first', slow, 1)
            window.submit('second', lambda x: x, 2)
            window.submit('third', lambda x: x, 3)
            time.sleep(0.05)   # the later ones finish first
            release.set()
            self.assertEqual([('first', 1), ('second', 2), ('third', 3)],
                             [window.pop() for _i in range(3)])
            self.assertEqual(0, len(window))

    def test_ordered_window_full_at_depth(self):
        with concurrency.WorkerPool(2) as pool:
            window = concurrency.OrderedWindow(pool, 2)
            window.submit(1, int, '1')
            self.assertFalse(window.full)
            window.submit(2, int, '2')
            self.assertTrue(window.full)
            self.assertEqual((1, 1), window.pop())
            self.assertFalse(window.full)
            window.drain()
            self.assertEqual(0, len(window))

    def test_ordered_window_depth_at_least_one(self):
        with concurrency.WorkerPool(1) as pool:
            window = concurrency.OrderedWindow(pool, 0)
            self.assertFalse(window.full)
            window.submit(1, int, '1')
            self.assertTrue(window.full)
            window.drain()

    def test_ordered_window_pop_raises_worker_error(self):
        def fail():
            raise _Boom()
        with concurrency.WorkerPool(2) as pool:
            window = concurrency.OrderedWindow(pool, 3)
            window.submit('bad', fail)
            self.assertRaises(_Boom, window.pop)

    def test_ordered_window_drain_waits_and_swallows_errors(self):
        finished = []

        def work(x):
            time.sleep(0.02)
            finished.append(x)
            if x == 1:
                raise _Boom()
            return x
        with concurrency.WorkerPool(3) as pool:
            window = concurrency.OrderedWindow(pool, 3)
            for i in range(3):
                window.submit(i, work, i)
            window.drain()
            self.assertEqual(0, len(window))
            self.assertEqual([0, 1, 2], sorted(finished))

    @testtools.skipUnless(hasattr(concurrency.WorkerPool, 'lane'),
                          'no lanes in this version')
    def test_run_all_items_in_few_tasks_all_called(self):
        pool = concurrency.WorkerPool(workers=2)
        self.addCleanup(pool.shutdown)
        submit = self.useFixture(fixtures.MockPatchObject(
            pool, 'submit', wraps=pool.submit)).mock
        seen = []
        concurrency.run_all(pool, seen.append, range(100), 4)
        self.assertEqual(list(range(100)), sorted(seen))
        self.assertLessEqual(submit.call_count,
                             4 * concurrency.TASKS_PER_SLOT + 1)
        self.assertGreaterEqual(submit.call_count, 4)

    def test_run_all_first_error_after_others_done(self):
        pool = concurrency.WorkerPool(workers=2)
        self.addCleanup(pool.shutdown)
        seen = []

        def call(item):
            if item == 50:
                raise ValueError('item 50')
            seen.append(item)

        error = self.assertRaises(ValueError, concurrency.run_all, pool,
                                  call, range(100), 4)
        self.assertEqual('item 50', str(error))
        self.assertIn(49, seen)
        # Nothing still runs once the error is raised.
        done = list(seen)
        time.sleep(0.05)
        self.assertEqual(done, seen)

    def test_worker_pool_lane_in_order_one_thread(self):
        seen = []
        with concurrency.WorkerPool(2) as pool:
            lane = pool.lane()
            futures = [lane.submit(lambda i=i: seen.append(
                (i, threading.get_ident())) or i) for i in range(20)]
            self.assertEqual(list(range(20)), [f.result() for f in futures])
        self.assertEqual(list(range(20)), [i for i, _t in seen])
        self.assertEqual(1, len({t for _i, t in seen}))


class NativeEngineTestCase(base.DriverTestCase):
    """Backup and restore on native worker threads, in this process."""

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            self.skipTest('this process is monkey-patched by eventlet')

    def test_backup_restore_pieces_on_worker_threads_identical(self):
        driver = self.make_driver(workers=4, group=chunked.PIPELINE_GROUP)
        threads = set()
        real = pipeline.analyse_piece

        def analyse(*args, **kwargs):
            threads.add(threading.current_thread().name)
            return real(*args, **kwargs)
        self.useFixture(fixtures.MockPatchObject(pipeline, 'analyse_piece',
                                                 side_effect=analyse))
        data = base.mixed_volume(chunks=6, tail=5000)
        full = self.make_backup(data, driver=driver)
        changed = data[:base.SHA] + b'\x01' * base.SHA + data[2 * base.SHA:]
        inc = self.make_backup(changed, parent=full, driver=driver)
        self.assertNotIn(threading.current_thread().name, threads)
        self.assertTrue(all(name.startswith('chunked-backup')
                            for name in threads), threads)
        self.assertEqual(data, self.restore_bytes(full, len(data),
                                                  driver=driver))
        self.assertEqual(changed, self.restore_bytes(inc, len(data),
                                                     driver=driver))

    def test_backup_shallow_window_same_result(self):
        driver = self.make_driver(workers=3, group=chunked.PIPELINE_GROUP)
        driver.settings = dataclasses.replace(
            driver.settings, max_bytes_in_flight=base.PIECE)
        with budget.for_settings(driver.settings).operation() as op:
            self.assertEqual(1, op.window_depth(driver.piece_bytes()))
            self.assertEqual(1, op.lane_depth(driver.piece_bytes()))
        data = base.mixed_volume(chunks=4, tail=10)
        backup = self.make_backup(data, driver=driver)
        self.assertEqual(base.sha256_list(data), self.sha256s(backup))
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=driver))

    def test_backup_worker_failure_propagates_no_metadata(self):
        def fail(*args, **kwargs):
            raise _Boom()
        self.useFixture(fixtures.MockPatchObject(pipeline, 'analyse_piece',
                                                 side_effect=fail))
        backup = self.env.new_backup()
        self.assertRaises(_Boom, self.driver.backup, backup,
                          io.BytesIO(base.text_bytes(3 * base.CHUNK)))
        self.assertEqual([], [n for n in os.listdir(self.path(backup))
                              if n.endswith('_metadata')])


_EVENTLET_SCRIPT = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()

    import io
    import json
    import os
    import random
    import sys
    import tempfile
    import warnings

    warnings.simplefilter('ignore')

    from oslo_config import cfg

    from cinder_chunked_ext.drivers import posix
    from cinder_chunked_ext.engine import concurrency
    from cinder_chunked_ext.engine import driver as chunked
    from cinder_chunked_ext import exception
    from cinder_chunked_ext.tests import fakes

    SHA = 4096
    CHUNK = 16 * SHA
    chunked.PIECE_BYTES = 4 * SHA
    conf = cfg.CONF
    conf([], project='cinder')
    conf.set_override('backup_file_size', CHUNK)
    conf.set_override('backup_sha_block_size_bytes', SHA)
    conf.set_override('workers', 3, group='chunked_backup')

    rnd = random.Random(1)
    text = b''.join(rnd.choice([b'cinder ', b'backup ', b'\\0' * 64])
                    for _i in range(40000))[:5 * CHUNK]
    data = text + rnd.randbytes(CHUNK) + bytes(CHUNK) + b'tail'
    changed = bytearray(data)
    changed[CHUNK + 5:CHUNK + 9000] = b'\\xff' * 8995
    changed = bytes(changed)

    ticks = [0]
    done = [False]

    def ticker():
        while not done[0]:
            ticks[0] += 1
            eventlet.sleep(0)
    eventlet.spawn(ticker)


    def scenario(algorithm):
        conf.set_override('backup_compression_algorithm', algorithm)
        result = {}
        env = fakes.FakeEnvironment()
        repository = tempfile.TemporaryDirectory()
        driver = posix.PosixBackupDriver(fakes.FakeContext(env),
                                         backup_path=repository.name)
        full = env.new_backup()
        driver.backup(full, io.BytesIO(data))
        inc = env.new_backup(parent_id=full.id, volume_id=full.volume_id)
        # The backup manager hands over files behind a tpool proxy.
        driver.backup(inc, concurrency.tpool_wrap(io.BytesIO(changed)))

        def restore(backup, new, fill):
            target = concurrency.tpool_wrap(io.BytesIO(fill * len(data)))
            backup.status = 'restoring'
            driver.restore(backup, backup.volume_id, target, new)
            return target.getvalue()

        result['full'] = restore(full, True, b'\\0') == data
        result['incremental'] = restore(inc, False, b'\\x55') == changed
        result['objects'] = [full.object_count, inc.object_count]

        # A damaged raw object is still caught.
        directory = os.path.join(driver.backup_path, full.container)
        with open(os.path.join(directory,
                               full.service_metadata + '_metadata')) as f:
            meta = json.load(f)
        raw = [name for entry in meta['objects']
               for name, f in entry.items() if f['compression'] == 'none'][0]
        with open(os.path.join(directory, raw), 'r+b') as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 1]))
        try:
            restore(full, True, b'\\0')
            result['mismatch'] = None
        except exception.ChecksumMismatch as e:
            result['mismatch'] = raw in str(e)
        repository.cleanup()
        return result


    results = {
        'active': concurrency.eventlet_active(),
        'green_pool': concurrency.WorkerPool(2)._green,
        'proxied': type(concurrency.tpool_wrap(io.BytesIO())).__name__,
    }
    for algorithm in sys.argv[1:]:
        results[algorithm] = scenario(algorithm)
    done[0] = True
    results['ticks'] = ticks[0]
    print(json.dumps(results))
''')

ALGORITHMS = ('none', 'zlib', 'bz2', 'zstd')
_eventlet_results = []


class EventletModeTestCase(testtools.TestCase):
    """Backup and restore in a process monkey-patched by eventlet.

    One subprocess runs every scenario (starting it is the slow part);
    its results are shared by the tests of this class.
    """

    def _results(self):
        if not _eventlet_results:
            root = os.path.dirname(os.path.dirname(
                os.path.abspath(cinder_chunked_ext.__file__)))
            env = dict(os.environ)
            env['PYTHONPATH'] = os.pathsep.join(
                [root] + [p for p in env.get('PYTHONPATH', '').split(
                    os.pathsep) if p])
            proc = subprocess.run(
                [sys.executable, '-c', _EVENTLET_SCRIPT] + list(ALGORITHMS),
                env=env, capture_output=True, timeout=300, check=False)
            self.assertEqual(0, proc.returncode,
                             proc.stderr.decode()[-3000:])
            _eventlet_results.append(json.loads(
                proc.stdout.decode().strip().splitlines()[-1]))
        return _eventlet_results[0]

    def test_eventlet_patched_engine_runs_green(self):
        results = self._results()
        self.assertTrue(results['active'])
        self.assertTrue(results['green_pool'])
        self.assertEqual('Proxy', results['proxied'])
        # Other green threads ran while the engine worked.
        self.assertGreater(results['ticks'], 0)

    def test_eventlet_patched_backup_restore_identical(self):
        results = self._results()
        for algorithm in ALGORITHMS:
            result = results[algorithm]
            self.assertTrue(result['full'], algorithm)
            self.assertTrue(result['incremental'], algorithm)
            self.assertEqual([8, 1], result['objects'], algorithm)

    def test_eventlet_patched_damaged_object_checksum_mismatch(self):
        results = self._results()
        for algorithm in ALGORITHMS:
            self.assertTrue(results[algorithm]['mismatch'], algorithm)


class MallocArenasTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(budget, '_arenas_limited',
                                                 []))

    def test_limit_malloc_arenas_zero_left_alone(self):
        self.assertFalse(budget.limit_malloc_arenas(0))
        self.assertEqual([], budget._arenas_limited)

    def test_limit_malloc_arenas_once_per_process(self):
        budget.limit_malloc_arenas(8)
        self.assertEqual([8], budget._arenas_limited)
        self.assertFalse(budget.limit_malloc_arenas(4))
        self.assertEqual([8], budget._arenas_limited)


class MmapThresholdTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(
            budget, '_mmap_threshold_fixed', []))
        self.calls = []
        calls = self.calls

        class Libc(object):
            def mallopt(self, param, value):
                calls.append((param, value))
                return 1

        self.useFixture(fixtures.MockPatchObject(
            budget.ctypes, 'CDLL', lambda _name: Libc()))

    def test_fixed_threshold_given_to_mallopt(self):
        self.assertTrue(budget.fix_mmap_threshold(8 * 1024 * 1024))
        self.assertEqual([(-3, 8 * 1024 * 1024)], self.calls)

    def test_zero_leaves_glibc_sliding_threshold(self):
        self.assertFalse(budget.fix_mmap_threshold(0))
        self.assertEqual([], self.calls)

    def test_once_per_process(self):
        budget.fix_mmap_threshold(8 * 1024 * 1024)
        self.assertFalse(budget.fix_mmap_threshold(4 * 1024 * 1024))
        self.assertEqual([(-3, 8 * 1024 * 1024)], self.calls)

    def test_no_mallopt_is_no_op(self):
        self.useFixture(fixtures.MockPatchObject(
            budget.ctypes, 'CDLL', mock_oserror))
        self.assertFalse(budget.fix_mmap_threshold(8 * 1024 * 1024))


def mock_oserror(_name):
    raise OSError('no C library here')


class DriverTunesMallocTestCase(base.DriverTestCase):
    """Backups and restores apply the configured malloc settings."""

    def setUp(self):
        super().setUp()
        self.tuned = []
        self.useFixture(fixtures.MockPatchObject(
            budget, 'fix_mmap_threshold',
            lambda size: self.tuned.append(('mmap', size))))
        self.useFixture(fixtures.MockPatchObject(
            budget, 'limit_malloc_arenas',
            lambda count: self.tuned.append(('arenas', count))))

    def test_backup_and_restore_apply_configured_values(self):
        driver = self.make_driver(malloc_mmap_threshold=12345,
                                  malloc_arena_max=3,
                                  group=chunked.PIPELINE_GROUP)
        data = base.mixed_volume(chunks=2)
        backup = self.make_backup(data, driver=driver)
        self.assertEqual([('arenas', 3), ('mmap', 12345)], self.tuned)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=driver))
        self.assertEqual([('arenas', 3), ('mmap', 12345)] * 2, self.tuned)

    def test_default_threshold_above_a_piece_below_an_object(self):
        # Pieces (read by the thousand) stay in the arenas, where they
        # are reused; a full backup's objects get mappings of their own.
        defaults = {opt.name: opt.default for opt in chunked.pipeline_opts}
        self.assertGreater(defaults['malloc_mmap_threshold'], 4 * 1024 * 1024)
        self.assertLess(defaults['malloc_mmap_threshold'],
                        defaults['full_backup_object_bytes'])
