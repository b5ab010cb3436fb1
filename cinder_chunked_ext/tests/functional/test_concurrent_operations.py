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

"""Several backups and restores at once in one process, as cinder-backup.

Each cycle (``concurrent_eventlet_worker.run_cycle``) backs a volume up,
backs a changed copy up incrementally and restores both; several cycles
of different volumes, with different compressions, run at the same time
on one repository:

* with native threads, in this process; rendezvous in the volume files
  make every cycle wait until all are inside a backup, then inside a
  restore, so the operations provably overlap;
* with eventlet green threads, in a subprocess that monkey-patches first
  (``concurrent_eventlet_worker.py``).

No cross-talk: every restore equals its own source; every file of the
repository belongs to exactly one backup; each backup's objects are the
ones its metadata lists, cover the ranges it had to store and decode to
its own volume's data.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import threading

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

import cinder_chunked_ext
from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests.functional import concurrent_eventlet_worker \
    as cycles

CYCLES = 4
RENDEZVOUS_SECONDS = 30
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'concurrent_eventlet_worker.py')


class _Rendezvous(object):
    """A volume file whose first read or write waits for the others.

    The barrier only opens once every cycle is inside the same phase, so
    a cycle that had to finish before another started would time out.
    """

    def __init__(self, wrapped, barrier):
        self._file = wrapped
        self._barrier = barrier
        self._met = False

    def _meet(self):
        if not self._met:
            self._met = True
            self._barrier.wait()

    def read(self, size=-1):
        self._meet()
        return self._file.read(size)

    def write(self, data):
        self._meet()
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


class NativeThreadsTestCase(testtools.TestCase):
    """Cycles on native threads in this process."""

    def setUp(self):
        super().setUp()
        if concurrency.eventlet_active():
            # Threads would be green and the rendezvous would run on
            # eventlet's native pool: this is not the native mode.
            self.skipTest('this process is monkey-patched by eventlet')
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.conf.config(backup_file_size=cycles.CHUNK,
                         backup_sha_block_size_bytes=cycles.SHA,
                         backup_create_containers=True,
                         backup_container=None,
                         backup_enable_progress_timer=False)
        self.conf.config(workers=2, max_bytes_in_flight=8 * 1024 * 1024,
                         verify_checksums_on_restore=True,
                         group=chunked.PIPELINE_GROUP)
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 cycles.PIECE))
        self.repo = self.useFixture(fixtures.TempDir()).path
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.barriers = []

    def make_driver(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        return posix.PosixBackupDriver(self.context, backup_path=self.repo)

    def run_at_once(self, calls):
        """Run each ``(func, args)`` on its own thread; their results."""
        results = [None] * len(calls)
        errors = []

        def run(n, func, args):
            try:
                results[n] = func(*args)
            except BaseException as e:  # noqa - reported below
                errors.append('call %d: %s: %s' % (n, type(e).__name__, e))
                for barrier in self.barriers:
                    barrier.abort()

        threads = [threading.Thread(target=run, args=(n, func, args))
                   for n, (func, args) in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RENDEZVOUS_SECONDS * 4)
        self.assertFalse(any(t.is_alive() for t in threads),
                         'a concurrent operation hung')
        self.assertEqual([], errors)
        return results

    def run_cycles(self, drivers, algorithms, container=None):
        backup_met = threading.Barrier(len(drivers),
                                       timeout=RENDEZVOUS_SECONDS)
        restore_met = threading.Barrier(len(drivers),
                                        timeout=RENDEZVOUS_SECONDS)
        self.barriers = [backup_met, restore_met]
        meeting = {'backup': backup_met, 'restore': restore_met}

        def wrap(volume_file, phase):
            return _Rendezvous(volume_file, meeting[phase])

        return self.run_at_once([
            (cycles.run_cycle, (driver, self.env, index, algorithm,
                                container, wrap))
            for index, (driver, algorithm) in enumerate(zip(drivers,
                                                            algorithms))])

    def assertCyclesSucceeded(self, results):
        for result in results:
            self.assertEqual(
                (True, True, True, True),
                (result['restored_full_new'],
                 result['restored_incremental_existing'],
                 result['restored_incremental_new'],
                 result['restored_incremental_rollback']),
                'cycle %d (%s)' % (result['index'], result['algorithm']))
            self.assertEqual(len(result['full']['runs']),
                             result['full']['object_count'])
            self.assertEqual(len(result['incremental']['runs']),
                             result['incremental']['object_count'])
            self.assertGreater(result['full']['object_count'], 1)
            self.assertGreater(result['incremental']['object_count'], 0)
        prefixes = [r[kind]['prefix'] for r in results
                    for kind in ('full', 'incremental')]
        self.assertEqual(len(prefixes), len(set(prefixes)))
        self.assertEqual([], cycles.repository_problems(self.repo, results))

    def test_cycles_own_drivers_shared_container_no_cross_talk(self):
        algorithms = [cycles.ALGORITHMS[i % len(cycles.ALGORITHMS)]
                      for i in range(CYCLES)]
        drivers = [self.make_driver(a) for a in algorithms]
        results = self.run_cycles(drivers, algorithms, container='shared')
        self.assertCyclesSucceeded(results)
        self.assertEqual(['shared'], os.listdir(self.repo))
        self.assertEqual(
            sum(r[k]['object_count'] + 2 for r in results
                for k in ('full', 'incremental')),
            len(os.listdir(os.path.join(self.repo, 'shared'))))

    def test_cycles_one_shared_driver_no_cross_talk(self):
        driver = self.make_driver('zstd')
        results = self.run_cycles([driver] * CYCLES, ['zstd'] * CYCLES)
        self.assertCyclesSucceeded(results)
        containers = {r[k]['container'] for r in results
                      for k in ('full', 'incremental')}
        self.assertEqual(2 * CYCLES, len(containers))

    def test_delete_while_others_restore_others_intact(self):
        algorithms = ['zlib', 'bz2', 'zstd', 'none']
        drivers = [self.make_driver(a) for a in algorithms]
        results = self.run_cycles(drivers, algorithms, container='shared')
        self.assertCyclesSucceeded(results)
        doomed, kept = results[:2], results[2:]
        self.barriers = []

        def restore(result):
            backup = self.env.get_backup(result['incremental']['id'])
            target = io.BytesIO(bytes(result['size']))
            backup.status = 'restoring'
            drivers[result['index']].restore(backup, backup.volume_id,
                                             target, True)
            return cycles.md5_hex(target.getvalue())

        def delete(result):
            for kind in ('incremental', 'full'):
                backup = self.env.get_backup(result[kind]['id'])
                drivers[result['index']].delete_backup(backup)

        outcome = self.run_at_once([(delete, (r,)) for r in doomed]
                                   + [(restore, (r,)) for r in kept])
        self.assertEqual([r['incremental']['md5'] for r in kept],
                         outcome[len(doomed):])
        deleted = {r[k]['id'] for r in doomed
                   for k in ('full', 'incremental')}
        self.assertEqual(
            [], cycles.repository_problems(self.repo, results, deleted))

    def test_repository_problems_swapped_objects_reported(self):
        # The cross-talk check itself can fail.
        drivers = [self.make_driver('none') for _i in range(2)]
        results = self.run_cycles(drivers, ['none', 'none'],
                                  container='shared')
        self.assertEqual([], cycles.repository_problems(self.repo, results))
        folder = os.path.join(self.repo, 'shared')
        first = os.path.join(folder, results[0]['full']['prefix'] + '-00002')
        second = os.path.join(folder, results[1]['full']['prefix'] + '-00002')
        shutil.copyfile(second, first)
        problems = cycles.repository_problems(self.repo, results)
        self.assertIn("%s: data is not its volume's" % os.path.basename(first),
                      problems)


class EventletGreenThreadsTestCase(testtools.TestCase):
    """Cycles on green threads in a monkey-patched subprocess."""

    def run_worker(self, *args):
        repo = self.useFixture(fixtures.TempDir()).path
        root = os.path.dirname(os.path.dirname(
            os.path.abspath(cinder_chunked_ext.__file__)))
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                      if p])
        proc = subprocess.run(
            [sys.executable, WORKER, repo, '--cycles', str(CYCLES)]
            + list(args), env=env, capture_output=True, timeout=120,
            check=False)
        self.assertEqual(0, proc.returncode, proc.stderr.decode()[-3000:])
        return repo, json.loads(proc.stdout.decode().strip().splitlines()[-1])

    def assertReportSucceeded(self, report):
        self.assertTrue(report['eventlet_active'])
        self.assertTrue(report['green_pool'])
        self.assertEqual([], report['errors'])
        self.assertEqual(CYCLES, len(report['results']))
        # Every cycle started before any finished, and the hub kept
        # running other green threads meanwhile.
        self.assertEqual(CYCLES, report['max_concurrent_cycles'])
        self.assertGreater(report['ticks'], 0)
        for result in report['results']:
            self.assertTrue(result['restored_full_new'])
            self.assertTrue(result['restored_incremental_existing'])
            self.assertTrue(result['restored_incremental_new'])
            self.assertTrue(result['restored_incremental_rollback'])
            self.assertEqual(len(result['full']['runs']),
                             result['full']['object_count'])
            self.assertEqual(len(result['incremental']['runs']),
                             result['incremental']['object_count'])
            self.assertGreater(result['full']['object_count'], 1)
            self.assertGreater(result['incremental']['object_count'], 0)
        self.assertEqual(sorted(cycles.ALGORITHMS),
                         sorted(r['algorithm'] for r in report['results']))
        self.assertEqual([], report['problems'])

    def test_green_threads_shared_container_no_cross_talk(self):
        repo, report = self.run_worker('--container', 'shared')
        self.assertReportSucceeded(report)
        self.assertEqual(['shared'], os.listdir(repo))
        # Checked again here, outside the patched process.
        self.assertEqual(
            [], cycles.repository_problems(repo, report['results']))

    def test_green_threads_container_per_backup_no_cross_talk(self):
        repo, report = self.run_worker()
        self.assertReportSucceeded(report)
        containers = {r[k]['container'] for r in report['results']
                      for k in ('full', 'incremental')}
        self.assertEqual(2 * CYCLES, len(containers))
