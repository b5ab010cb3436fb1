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

"""Every error a task raises reaches the thread that waits for it.

``BaseException`` included (``eventlet.Timeout``, ``SystemExit``, an
error class of a library's own): eventlet's tpool hands back only
``Exception`` and ``Timeout``, and any other error killed its native
thread and left the waiting green thread blocked for good.  And an error
while cleaning up after an error never replaces the first one.
"""

import io
import os
import textwrap

import fixtures
import testtools

from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.store import posix as posix_store
from cinder_chunked_ext.tests import patched_process
from cinder_chunked_ext.tests.unit import test_chunked_backup as base


class Fatal(BaseException):
    """Not an ``Exception``: what tpool used to lose."""


def fatal():
    raise Fatal('fatal')


class NativeThreadsTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            self.skipTest('this process is monkey-patched by eventlet')

    def test_worker_pool_base_exception_reaches_waiter(self):
        with concurrency.WorkerPool(2) as pool:
            self.assertRaises(Fatal, pool.submit(fatal).result)
            self.assertEqual(4, pool.submit(lambda: 4).result())

    def test_lane_base_exception_reaches_waiter_next_task_runs(self):
        with concurrency.WorkerPool(2) as pool:
            lane = pool.lane()
            self.assertRaises(Fatal, lane.submit(fatal).result)
            self.assertEqual(7, lane.submit(lambda: 7).result())

    def test_operation_pools_base_exception_reaches_waiter(self):
        process = budget.ProcessBudget(2, 2, 64 * 1024 * 1024)
        with process.operation() as op:
            self.assertRaises(Fatal, op.cpu.submit(fatal).result)
            self.assertRaises(Fatal, op.io.submit(fatal).result)
            self.assertRaises(Fatal, op.lane().submit(fatal).result)
        self.assertEqual(0, process.running)

    def test_wait_quietly_base_exception_swallowed_all_waited(self):
        with concurrency.WorkerPool(2) as pool:
            futures = [pool.submit(fatal), pool.submit(lambda: 1)]
            concurrency.wait_quietly(futures)
            self.assertTrue(all(f.done() for f in futures))

    def test_cleanup_keeping_error_cleanup_fails_first_error_kept(self):
        first = RuntimeError('first')

        def cleanup():
            raise OSError('cleanup')
        concurrency.cleanup_keeping_error(first, cleanup)
        self.assertIn('cleanup', ' '.join(getattr(first, '__notes__', [])))


class CleanupKeepsFirstErrorTestCase(base.DriverTestCase):
    """A backup whose writer fails to abort reports why it failed."""

    def test_stream_object_abort_fails_first_error_raised(self):
        # Not a file system store: objects larger than a piece stream.
        driver = self.make_driver()
        driver.store.streams_writes = False

        def analyse(*args, **kwargs):
            raise base_error
        base_error = RuntimeError('the volume could not be read')
        self.useFixture(fixtures.MockPatchObject(
            pipeline, 'analyse_piece', side_effect=analyse))
        self.useFixture(fixtures.MockPatchObject(
            posix_store._AtomicFileWriter, '_abort',
            side_effect=OSError('abort failed')))
        backup = self.env.new_backup()
        error = self.assertRaises(
            RuntimeError, driver.backup, backup,
            io.BytesIO(base.text_bytes(2 * base.CHUNK)))
        self.assertIs(base_error, error)
        # The abort's own failure is told with it, where Python can.
        if hasattr(error, 'add_note'):
            self.assertIn('abort failed', ' '.join(error.__notes__))
        # The backup cannot pass for complete, and its delete removes
        # what the failed abort left (its temporary file).
        names = os.listdir(self.path(backup))
        self.assertNotIn(backup.service_metadata + '_metadata', names)
        self.assertEqual(1, len([n for n in names if n.startswith('.tmp-')]))
        driver.delete_backup(backup)
        self.assertEqual([], os.listdir(self.path(backup)))


class OperationBaseExceptionTestCase(base.DriverTestCase):
    """A backup whose worker task raises a BaseException fails with it."""

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            self.skipTest('this process is monkey-patched by eventlet')

    def test_backup_task_base_exception_fails_with_it_nothing_left(self):
        real = pipeline.analyse_piece
        calls = []
        error = Fatal('a worker died')

        def analyse(*args, **kwargs):
            calls.append(1)
            if len(calls) == 9:       # the first piece of the third object
                raise error
            return real(*args, **kwargs)
        data = base.mixed_volume(chunks=6)
        with fixtures.MockPatchObject(pipeline, 'analyse_piece', analyse):
            backup = self.env.new_backup()
            raised = self.assertRaises(Fatal, self.driver.backup, backup,
                                       io.BytesIO(data))
        self.assertIs(error, raised)
        # Nothing still runs or holds a share of the process's budget,
        # no temporary file is left and the backup has no metadata, so
        # it cannot pass for complete; its delete leaves nothing.
        process = budget.for_settings(self.driver.settings)
        self.assertEqual(0, process.running)
        names = os.listdir(self.path(backup))
        self.assertEqual([], [n for n in names if n.startswith('.tmp')])
        self.assertNotIn(backup.service_metadata + '_metadata', names)
        self.driver.delete_backup(backup)
        self.assertEqual([], os.listdir(self.path(backup)))
        # The process's shared threads still serve the next operation.
        after = self.make_backup(data)
        self.assertEqual(data, self.restore_bytes(after, len(data)))


# Run in a fresh interpreter: patching must come before any import.
EVENTLET_SCRIPT = textwrap.dedent('''
    import eventlet
    eventlet.monkey_patch()
    import json
    from eventlet import timeout as eventlet_timeout
    from cinder_chunked_ext.engine import budget, concurrency

    class Fatal(BaseException):
        pass

    def fatal():
        raise Fatal()

    def timeout():
        raise eventlet_timeout.Timeout()

    def leave():
        raise SystemExit(3)

    def outcome(call):
        try:
            call()
        except BaseException as e:
            return type(e).__name__
        return 'nothing'

    results = {}
    # A hang here (a waiter that never learns of its task's error) ends
    # the script with an error instead of blocking the test run.
    with eventlet.Timeout(60):
        pool = concurrency.WorkerPool(2)
        for name, task in (('fatal', fatal), ('timeout', timeout),
                           ('exit', leave)):
            results['pool_' + name] = outcome(pool.submit(task).result)
        results['pool_after'] = pool.submit(lambda: 42).result()
        lane = pool.lane()
        results['lane_fatal'] = outcome(lane.submit(fatal).result)
        results['lane_after'] = lane.submit(lambda: 7).result()
        results['execute_fatal'] = outcome(
            lambda: concurrency.execute(fatal))
        pool.shutdown()
        process = budget.ProcessBudget(2, 2, 64 * 1024 * 1024)
        with process.operation() as op:
            results['op_cpu'] = outcome(op.cpu.submit(fatal).result)
            results['op_io'] = outcome(op.io.submit(leave).result)
    print(json.dumps(results))
''')


class EventletTestCase(testtools.TestCase):
    """In a monkey-patched interpreter, as cinder-backup runs."""

    def test_monkey_patched_base_exceptions_reach_waiters(self):
        results = patched_process.run_script(EVENTLET_SCRIPT)
        self.assertEqual({'pool_fatal': 'Fatal', 'pool_timeout': 'Timeout',
                          'pool_exit': 'SystemExit', 'pool_after': 42,
                          'lane_fatal': 'Fatal', 'lane_after': 7,
                          'execute_fatal': 'Fatal', 'op_cpu': 'Fatal',
                          'op_io': 'SystemExit'}, results)
