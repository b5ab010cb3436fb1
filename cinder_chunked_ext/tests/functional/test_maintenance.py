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

"""The day-2 commands on a real POSIX repository.

``backup prune``, ``repository import`` and ``repository check`` run
against backups the tool really made (in this process for the
hypothesis-drawn histories, else as the real command in a subprocess),
with a backup really running at the same time (fed from a FIFO), and
killed with SIGKILL in the middle of their deletes.
"""

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from unittest import mock

import fixtures
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from oslo_config import fixture as config_fixture

from cinder_chunked_ext.tests.functional import fifo as fifo_lib
from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tests.unit import test_retention
from cinder_chunked_ext.tool import catalog
from cinder_chunked_ext.tool import cli
from cinder_chunked_ext.tool import retention
from cinder_chunked_ext.tool import session

TIMEOUT = test_cli.TIMEOUT
HOUR = 3600
#: The fields of a record that a backup's objects in the repository hold.
REPOSITORY_FIELDS = ('id', 'volume_id', 'container', 'service_metadata',
                     'parent_id', 'created_at', 'display_name',
                     'display_description', 'object_count', 'status',
                     'size', 'volume_size_bytes', 'driver')


class MaintenanceTestCase(test_cli.CliTestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(config_fixture.Config())
        self.useFixture(fixtures.EnvironmentVariable(
            'XDG_DATA_HOME', self.env['XDG_DATA_HOME']))

    def main(self, *argv, expect=0):
        """``cli.main`` in this process; the parsed JSON output."""
        stdout = io.StringIO()
        stderr = io.StringIO()
        with mock.patch('sys.stdout', stdout), \
                mock.patch('sys.stderr', stderr):
            code = cli.main(self.base_args() + ['--json'] + list(argv))
        self.assertEqual(expect, code, stderr.getvalue())
        return json.loads(stdout.getvalue())

    def catalog_path(self):
        return os.path.join(self.repo, session.CATALOG_NAME)

    def records(self):
        cat = catalog.Catalog(self.catalog_path(), create=False)
        try:
            return {r.id: r for r in cat.list()}
        finally:
            cat.close()

    def sql(self, statement, *args):
        conn = sqlite3.connect(self.catalog_path())
        try:
            conn.execute(statement, args)
            conn.commit()
        finally:
            conn.close()

    def backup_files(self, doc):
        directory = os.path.join(self.repo, doc['container'])
        if not os.path.isdir(directory):
            return []
        return sorted(n for n in os.listdir(directory)
                      if doc['service_metadata'] in n)

    def age(self, path, seconds):
        """Make ``path`` (a file, or each file below a directory) older."""
        when = time.time() - seconds
        paths = [path]
        if os.path.isdir(path):
            paths = [os.path.join(d, n) for d, _s, names in os.walk(path)
                     for n in names]
        for p in paths:
            os.utime(p, (when, when))


class TestPrune(MaintenanceTestCase):

    _example = 0

    @settings(max_examples=12, deadline=None, derandomize=True,
              database=None, suppress_health_check=[
                  HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.sampled_from([0, 60, HOUR, 5 * HOUR,
                                               86400, 3 * 86400,
                                               8 * 86400, 40 * 86400]),
                              st.booleans()),
                    min_size=2, max_size=7),
           st.builds(retention.Policy,
                     last=st.integers(0, 2), hourly=st.integers(0, 2),
                     daily=st.integers(0, 3), weekly=st.integers(0, 2),
                     monthly=st.integers(0, 2)).filter(
               lambda p: not p.empty))
    def test_prune_generated_history_keeps_policy_and_whole_chains(
            self, steps, policy):
        # Each example gets a repository and a volume of its own.
        type(self)._example += 1
        self.repo = os.path.join(self.tmp, 'repo-%d' % self._example)
        self.volume = os.path.join(self.tmp, 'vol-%d.img' % self._example)
        test_cli.write_volume(self.volume, size=2 * test_cli.CHUNK,
                              seed=self._example)
        history = test_retention.history_from(steps)
        made = []
        for number, planned in enumerate(history):
            test_cli.overwrite(self.volume, number * 512, b'%d' % number)
            incremental = bool(planned.parent_id)
            doc = self.main('backup', 'create', self.volume,
                            *(['--incremental'] if incremental else []))
            self.sql('UPDATE backups SET created_at = ? WHERE id = ?',
                     planned.created_at.isoformat(), doc['id'])
            made.append(doc)
        # The history as recorded: real ids, drawn times and chains.
        recorded = [test_retention.Backup(d['id'], d['parent_id'],
                                          h.created_at)
                    for d, h in zip(made, history)]
        expected = test_retention.oracle(recorded, policy)
        by_id = {b.id: b for b in recorded}
        keep = set(expected)
        for backup_id in expected:
            keep.update(test_retention.ancestors(by_id[backup_id], by_id))

        args = ['--keep-%s' % name
                for name in ('last',) + retention.BUCKETS
                if getattr(policy, name)]
        values = [str(getattr(policy, a[len('--keep-'):])) for a in args]
        flags = [x for pair in zip(args, values) for x in pair]
        dry = self.main('backup', 'prune', '--dry-run', *flags)
        self.assertEqual([], dry['deleted'])
        self.assertEqual(len(made), len(self.records()))
        done = self.main('backup', 'prune', *flags)

        volume, = done['volumes']
        kept = {k['id']: set(k['reasons']) for k in volume['keep']}
        self.assertEqual(keep, set(kept))
        for backup_id, reasons in expected.items():
            self.assertLessEqual(reasons, kept[backup_id])
        self.assertEqual(sorted(set(by_id) - keep), sorted(done['deleted']))
        self.assertEqual(dry['volumes'][0]['keep'], volume['keep'])
        self.assertEqual(keep, set(self.records()))
        for doc in made:
            files = self.backup_files(doc)
            if doc['id'] in keep:
                self.assertIn(doc['service_metadata'] + '_metadata', files)
            else:
                self.assertEqual([], files)
        report = self.main('verify', '--all')
        self.assertTrue(report['ok'])
        self.assertEqual(keep, {b['backup_id'] for b in report['backups']})

    def test_prune_without_keep_option_refused(self):
        test_cli.write_volume(self.volume)
        self.create()
        _out, err = self.run_cli('backup', 'prune', expect=2)
        self.assertIn('--keep-', err)
        self.assertEqual(1, len(self.records()))

    def test_prune_error_child_keeps_parent_and_says_why(self):
        test_cli.write_volume(self.volume)
        full = self.create()
        test_cli.overwrite(self.volume, 0, b'x')
        incr = self.create('--incremental')
        newer = self.create()
        self.sql("UPDATE backups SET status = 'error' WHERE id = ?",
                 incr['id'])
        doc, _err = self.run_json('backup', 'prune', '--keep-last', '1')
        volume, = doc['volumes']
        reasons = {k['id']: k['reasons'] for k in volume['keep']}
        self.assertEqual(['last'], reasons[newer['id']])
        self.assertEqual(['parent of %s (error)' % incr['id']],
                         reasons[full['id']])
        self.assertEqual([], doc['deleted'])
        out, _err = self.run_cli('backup', 'prune', '--keep-last', '1')
        self.assertIn('parent of %s (error)' % incr['id'], out)
        self.assertIn('leave   %s' % incr['id'], out)


class TestConcurrentBackup(MaintenanceTestCase):
    """A backup runs, fed from a FIFO, while prune and check run."""

    def start_stream_backup(self, volume_id):
        fifo = os.path.join(self.tmp, 'stream-%s' % volume_id)
        os.mkfifo(fifo)
        cmd = ([sys.executable, '-m', 'cinder_chunked_ext'] +
               self.base_args() + ['--json', 'backup', 'create', fifo,
                                   '--size', '8M', '--volume-id',
                                   volume_id])
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        fd = fifo_lib.open_writer(self, fifo, proc)
        os.set_blocking(fd, True)
        return proc, fd

    def wait_for_objects(self, prefix_part, count):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            found = [n for _d, _s, names in os.walk(self.repo)
                     for n in names
                     if prefix_part in n and not n.startswith('.')]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        self.fail('the running backup wrote no object')

    def test_check_and_prune_during_backup_running_backup_unharmed(self):
        # A leftover of a backup that died long ago: a real backup whose
        # _metadata is gone, its files two hours old.
        test_cli.write_volume(self.volume)
        dead = self.create('--volume-id', 'vol-dead')
        directory = os.path.join(self.repo, dead['container'])
        os.remove(os.path.join(directory,
                               dead['service_metadata'] + '_metadata'))
        self.age(directory, 2 * HOUR)
        self.sql("UPDATE backups SET status = 'creating' WHERE id = ?",
                 dead['id'])
        other = self.create('--volume-id', 'vol-other')
        earlier = [self.create('--volume-id', 'vol-live') for _ in range(2)]

        proc, fd = self.start_stream_backup('vol-live')
        try:
            chunk = test_cli.CHUNK
            os.write(fd, os.urandom(2 * chunk))
            self.wait_for_objects('volume_vol-live_', 2)
            live, = [r for r in self.records().values()
                     if r.volume_id == 'vol-live' and
                     r.status == 'creating']

            # prune refuses while a backup of a volume it would prune
            # runs, and deletes nothing; keeping all is not in the way.
            _out, err = self.run_cli('backup', 'prune', '--keep-last', '1',
                                     expect=2)
            self.assertIn('in progress', err)
            self.assertIn(live.id, err)
            self.assertEqual({'available'}, {
                self.records()[d['id']].status for d in earlier})
            doc, _err = self.run_json('backup', 'prune', '--keep-last', '2',
                                      '--volume-id', 'vol-live')
            self.assertEqual([], doc['deleted'])
            self.assertEqual([live.id], [
                o['id'] for o in doc['volumes'][0]['other']])

            doc, _err = self.run_json('repository', 'check', '--delete')
            kinds = {f['backup_id']: f for f in doc['findings']}
            self.assertEqual('incomplete', kinds[live.id]['kind'])
            self.assertEqual('kept: younger than the grace period',
                             kinds[live.id]['action'])
            self.assertEqual('creating', kinds[live.id]['catalog_status'])
            self.assertEqual('deleted', kinds[dead['id']]['action'])
            self.assertEqual([], self.backup_files(dead))
            self.assertEqual('error', self.records()[dead['id']].status)

            # The running backup goes on and finishes.
            os.write(fd, os.urandom(chunk + 100))
        finally:
            os.close(fd)
        out, err = proc.communicate(timeout=TIMEOUT)
        self.assertEqual(0, proc.returncode, err)
        finished = json.loads(out)
        self.assertEqual('available', finished['status'])
        report, _err = self.run_json('verify', finished['id'])
        self.assertTrue(report['ok'], report)
        report, _err = self.run_json('verify', other['id'])
        self.assertTrue(report['ok'], report)
        doc, _err = self.run_json('repository', 'check')
        self.assertEqual([], doc['findings'])


class TestImport(MaintenanceTestCase):

    def make_backups(self):
        test_cli.write_volume(self.volume)
        docs = [self.create('--name', 'first', '--description', 'a full')]
        test_cli.overwrite(self.volume, 100, b'changed')
        docs.append(self.create('--incremental', '--name', 'second'))
        test_cli.overwrite(self.volume, 5000, b'changed again')
        docs.append(self.create('--incremental'))
        other = os.path.join(self.tmp, 'other.img')
        test_cli.write_volume(other, size=3 * test_cli.CHUNK, seed=7)
        docs.append(self.create('--description', 'other volume',
                                volume=other))
        return docs

    def snapshot(self):
        return {i: {f: getattr(r, f) for f in REPOSITORY_FIELDS}
                for i, r in self.records().items()}

    def test_import_after_catalog_deleted_same_records_idempotent(self):
        docs = self.make_backups()
        before = self.snapshot()
        os.remove(self.catalog_path())

        doc, _err = self.run_json('repository', 'import')
        self.assertEqual(sorted(d['id'] for d in docs), sorted(doc['added']))
        self.assertEqual([], doc['disagreements'])
        self.assertEqual(before, self.snapshot())
        # Parents are recorded before children: incremental backups still
        # find the newest available backup as their parent.
        test_cli.overwrite(self.volume, 9000, b'after import')
        incr = self.create('--incremental')
        self.assertEqual(docs[2]['id'], incr['parent_id'])

        again, _err = self.run_json('repository', 'import')
        self.assertEqual([], again['added'])
        self.assertEqual(sorted(list(before) + [incr['id']]),
                         sorted(again['unchanged']))
        report, _err = self.run_json('verify', '--all')
        self.assertTrue(report['ok'])

    def test_import_disagreeing_record_reported_kept_unless_overwrite(self):
        docs = self.make_backups()
        before = self.snapshot()
        self.sql("UPDATE backups SET parent_id = NULL, status = 'error', "
                 "display_name = 'renamed' WHERE id = ?", docs[1]['id'])
        changed = self.snapshot()

        doc, _err = self.run_json('repository', 'import')
        item, = doc['disagreements']
        self.assertEqual(docs[1]['id'], item['id'])
        self.assertFalse(item['overwritten'])
        self.assertEqual({'parent_id', 'status', 'display_name'},
                         set(item['fields']))
        self.assertEqual({'catalog': 'renamed', 'repository': 'second'},
                         item['fields']['display_name'])
        self.assertEqual(changed, self.snapshot())
        out, _err = self.run_cli('repository', 'import')
        self.assertIn('DISAGREES', out)
        self.assertIn('--overwrite', out)

        doc, _err = self.run_json('repository', 'import', '--overwrite')
        self.assertTrue(doc['disagreements'][0]['overwritten'])
        self.assertEqual(before, self.snapshot())

    def test_import_record_without_backup_reported_missing(self):
        docs = self.make_backups()
        shutil.rmtree(os.path.join(self.repo, docs[3]['container']))
        doc, _err = self.run_json('repository', 'import')
        self.assertEqual([docs[3]['id']], doc['not_in_repository'])
        self.assertIn(docs[3]['id'], self.records())


class TestCheck(MaintenanceTestCase):

    def setup_repository(self):
        """A complete, an unfinished and a damaged backup, and leftovers."""
        test_cli.write_volume(self.volume)
        good = self.create()
        other = os.path.join(self.tmp, 'other.img')
        test_cli.write_volume(other, seed=3)
        unfinished = self.create(volume=other)
        os.remove(os.path.join(self.repo, unfinished['container'],
                               unfinished['service_metadata'] + '_metadata'))
        third = os.path.join(self.tmp, 'third.img')
        test_cli.write_volume(third, seed=4)
        damaged = self.create(volume=third)
        os.remove(self.object_path(damaged, 2))
        # An object the good backup's metadata does not list, and the
        # temporary file of a write that never committed.
        shutil.copy(self.object_path(good, 1), self.object_path(good, 99))
        temp = os.path.join(self.repo, good['container'],
                            '.tmp-0123456789ab-%s-00007'
                            % good['service_metadata'])
        with open(temp, 'wb') as f:
            f.write(b'partial')
        return good, unfinished, damaged, temp

    def check_damaged(self, *args):
        """``repository check`` of a repository with a damaged backup."""
        doc, err = self.run_json('repository', 'check', *args, expect=1)
        self.assertIn('damaged', doc['error'])
        return doc, err

    def test_check_lists_each_kind_deletes_only_old_leftovers(self):
        good, unfinished, damaged, temp = self.setup_repository()
        doc, _err = self.check_damaged()
        found = {(f['kind'], f['backup_id']): f for f in doc['findings']}
        self.assertEqual({('unlisted', good['id']),
                          ('temporary', good['id']),
                          ('incomplete', unfinished['id']),
                          ('missing', damaged['id'])}, set(found))
        self.assertEqual(
            [os.path.basename(self.object_path(good, 99))],
            found[('unlisted', good['id'])]['objects'])
        self.assertEqual([os.path.basename(temp)],
                         found[('temporary', good['id'])]['temporary'])
        self.assertEqual('available',
                         found[('incomplete', unfinished['id'])]
                         ['catalog_status'])
        self.assertTrue(all(f['action'] in ('listed', 'reported only: a '
                                            'damaged backup') or
                            f['action'].startswith('reported only')
                            for f in doc['findings']))

        # Young: nothing is deleted.
        doc, _err = self.check_damaged('--delete')
        self.assertEqual(4, len(doc['findings']))
        self.assertTrue(os.path.exists(temp))
        self.assertTrue(os.path.exists(self.object_path(good, 99)))

        # Two hours old: the leftovers go, damaged backups stay.  The
        # unfinished one is recorded available (damaged, not unfinished).
        self.age(self.repo, 2 * HOUR)
        doc, _err = self.check_damaged('--delete')
        actions = {(f['kind'], f['backup_id']): f['action']
                   for f in doc['findings']}
        self.assertEqual('deleted', actions[('unlisted', good['id'])])
        self.assertEqual('deleted', actions[('temporary', good['id'])])
        self.assertTrue(actions[('incomplete', unfinished['id'])]
                        .startswith('reported only'))
        self.assertTrue(actions[('missing', damaged['id'])]
                        .startswith('reported only'))
        self.assertFalse(os.path.exists(temp))
        self.assertFalse(os.path.exists(self.object_path(good, 99)))
        self.assertTrue(os.path.exists(self.object_path(unfinished, 1)))
        report, _err = self.run_json('verify', good['id'])
        self.assertTrue(report['ok'], report)

        # Once the catalog no longer claims it, the unfinished one goes.
        self.sql("UPDATE backups SET status = 'creating' WHERE id = ?",
                 unfinished['id'])
        doc, _err = self.check_damaged('--delete', '--grace', '30m')
        actions = {(f['kind'], f['backup_id']): f['action']
                   for f in doc['findings']}
        self.assertEqual('deleted',
                         actions[('incomplete', unfinished['id'])])
        self.assertEqual([], self.backup_files(unfinished))
        self.assertEqual('error', self.records()[unfinished['id']].status)
        doc, _err = self.check_damaged('--delete', '--grace', '0')
        self.assertEqual([('missing', damaged['id'])],
                         [(f['kind'], f['backup_id'])
                          for f in doc['findings']])

    def test_check_bad_grace_usage_error(self):
        _out, err = self.run_cli('repository', 'check', '--grace', 'soon',
                                 expect=2)
        self.assertIn('duration', err)


class TestKilled(MaintenanceTestCase):
    """prune and check killed with SIGKILL in the middle of their deletes.

    The command is stopped (SIGSTOP) and looked at again and again until
    it is caught with some of what it deletes gone and some left, and
    killed there.  Backups of many small objects make that window wide.
    """

    def write_config(self, name='cinder.conf', chunked=None, **options):
        options.setdefault('backup_file_size', 4096)
        options.setdefault('backup_sha_block_size_bytes', 4096)
        options.setdefault('backup_compression_algorithm', 'none')
        return super().write_config(name, chunked, **options)

    def stopped(self, proc):
        proc.send_signal(signal.SIGSTOP)
        _pid, status = os.waitpid(proc.pid, os.WUNTRACED)
        self.assertTrue(os.WIFSTOPPED(status), status)

    def kill_when(self, cmd, caught):
        """Run ``cmd``; SIGKILL it once ``caught()`` holds while stopped."""
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            self.stopped(proc)
            if caught():
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=TIMEOUT)
                return proc.returncode
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.001)
        return None

    def command(self, *args):
        return ([sys.executable, '-m', 'cinder_chunked_ext'] +
                self.base_args() + list(args))

    def volume_of(self, name, blocks, seed):
        path = os.path.join(self.tmp, name)
        with open(path, 'wb') as f:
            f.write(os.urandom(blocks * 4096) if seed else bytes(4096))
        return path

    def test_prune_killed_mid_delete_no_half_backup_next_prune_finishes(self):
        old = [self.create('--volume-id', 'vol-k',
                           volume=self.volume_of('v.img', 400, 1))
               for _ in range(3)]
        newest = self.create('--volume-id', 'vol-k',
                             volume=self.volume_of('v.img', 400, 1))

        def caught():
            for doc in old:
                files = self.backup_files(doc)
                if files and doc['service_metadata'] + '_metadata' \
                        not in files:
                    return True
            return False

        for _attempt in range(5):
            code = self.kill_when(self.command('backup', 'prune',
                                               '--keep-last', '1'), caught)
            if code is not None:
                break
            # Missed (prune finished): make the backups again.
            old = [self.create('--volume-id', 'vol-k',
                               volume=self.volume_of('v.img', 400, 1))
                   for _ in range(3)]
        self.assertEqual(-signal.SIGKILL, code)

        records = self.records()
        half = [d for d in old if self.backup_files(d) and
                d['service_metadata'] + '_metadata'
                not in self.backup_files(d)]
        self.assertEqual(1, len(half))
        self.assertEqual('deleting', records[half[0]['id']].status)
        # No backup looks complete without all of its objects.
        report, _err = self.run_json('verify', '--all')
        self.assertTrue(report['ok'], report)
        scan, _err = self.run_json('repository', 'scan')
        self.assertNotIn(half[0]['id'], [b['id'] for b in scan['backups']])
        doc, _err = self.run_json('repository', 'check')
        self.assertIn(('incomplete', half[0]['id'], 'deleting'),
                      [(f['kind'], f['backup_id'], f['catalog_status'])
                       for f in doc['findings']])

        doc, _err = self.run_json('backup', 'prune', '--keep-last', '1')
        self.assertIn(half[0]['id'], doc['deleted'])
        self.assertEqual([newest['id']], list(self.records()))
        for d in old:
            self.assertEqual([], self.backup_files(d))
        doc, _err = self.run_json('repository', 'check')
        self.assertEqual([], doc['findings'])
        report, _err = self.run_json('verify', newest['id'])
        self.assertTrue(report['ok'], report)

    def test_check_killed_mid_delete_rerun_finishes(self):
        keep = self.create(volume=self.volume_of('keep.img', 50, 1))
        leftovers = []
        for number in range(3):
            doc = self.create(volume=self.volume_of('l%d.img' % number, 400,
                                                    1))
            os.remove(os.path.join(self.repo, doc['container'],
                                   doc['service_metadata'] + '_metadata'))
            self.sql("UPDATE backups SET status = 'creating' WHERE id = ?",
                     doc['id'])
            leftovers.append(doc)
        self.age(self.repo, 2 * HOUR)
        total = sum(len(self.backup_files(d)) for d in leftovers)

        def caught():
            left = sum(len(self.backup_files(d)) for d in leftovers)
            return 0 < left < total

        code = self.kill_when(self.command('repository', 'check',
                                           '--delete'), caught)
        self.assertEqual(-signal.SIGKILL, code)
        self.assertLess(0, sum(len(self.backup_files(d)) for d in leftovers))
        report, _err = self.run_json('verify', keep['id'])
        self.assertTrue(report['ok'], report)

        doc, _err = self.run_json('repository', 'check', '--delete')
        self.assertTrue(doc['findings'])
        self.assertEqual({'deleted'}, {f['action'] for f in doc['findings']})
        for d in leftovers:
            self.assertEqual([], self.backup_files(d))
            self.assertEqual('error', self.records()[d['id']].status)
        doc, _err = self.run_json('repository', 'check')
        self.assertEqual([], doc['findings'])
        report, _err = self.run_json('verify', keep['id'])
        self.assertTrue(report['ok'], report)


class TestCheckS3(MaintenanceTestCase):
    """repository check on a real S3 server (SeaweedFS on 127.0.0.1)."""

    def test_check_s3_incomplete_upload_and_unlisted_grace_then_delete(self):
        from cinder_chunked_ext.tests import s3_server
        server = self.useFixture(s3_server.S3ServerFixture())
        bucket = server.new_bucket_name()
        self.conf = self.write_config(
            's3.conf', backup_s3_endpoint_url=server.endpoint,
            backup_s3_store_access_key=server.access_key,
            backup_s3_store_secret_key=server.secret_key,
            backup_s3_object_size=test_cli.CHUNK,
            backup_s3_block_size=test_cli.SHA,
            backup_s3_retry_max_attempts=2)
        base = ['--config-file', self.conf, '--driver', 's3',
                '--repository', bucket]
        test_cli.write_volume(self.volume)
        good, _err = self.run_json('backup', 'create', self.volume,
                                   base=base)
        other = os.path.join(self.tmp, 'other.img')
        test_cli.write_volume(other, seed=5)
        dead, _err = self.run_json('backup', 'create', other, base=base)
        client = server.client()
        dead_prefix = dead['service_metadata']
        client.delete_object(Bucket=bucket, Key=dead_prefix + '_metadata')
        conn = sqlite3.connect(test_cli.only_catalog(self.env))
        conn.execute("UPDATE backups SET status = 'creating' WHERE id = ?",
                     (dead['id'],))
        conn.commit()
        conn.close()
        # The last object of a backup killed while uploading it.
        upload = client.create_multipart_upload(
            Bucket=bucket, Key=dead_prefix + '-00009')
        client.upload_part(Bucket=bucket, Key=dead_prefix + '-00009',
                           UploadId=upload['UploadId'], PartNumber=1,
                           Body=b'x' * 1024)
        # An object the good backup's metadata does not list.
        good_prefix = good['service_metadata']
        client.copy_object(Bucket=bucket, Key=good_prefix + '-00099',
                           CopySource={'Bucket': bucket,
                                       'Key': good_prefix + '-00001'})
        # What is not named like a backup's is never touched.
        client.put_object(Bucket=bucket, Key='notes.txt', Body=b'mine')

        doc, _err = self.run_json('repository', 'check', '--delete',
                                  base=base)
        found = {f['kind']: f for f in doc['findings']}
        self.assertEqual({'incomplete', 'unlisted'}, set(found))
        self.assertEqual([upload['UploadId']],
                         found['incomplete']['temporary'])
        self.assertEqual(dead['object_count'] + 1,
                         len(found['incomplete']['objects']))
        self.assertEqual('creating', found['incomplete']['catalog_status'])
        self.assertEqual([good_prefix + '-00099'],
                         found['unlisted']['objects'])
        self.assertEqual({'kept: younger than the grace period'},
                         {f['action'] for f in doc['findings']})

        doc, _err = self.run_json('repository', 'check', '--delete',
                                  '--grace', '0', base=base)
        self.assertEqual({'deleted'}, {f['action'] for f in doc['findings']})
        keys = [o['Key'] for o in client.list_objects_v2(
            Bucket=bucket).get('Contents', [])]
        self.assertEqual([], [k for k in keys if dead_prefix in k])
        self.assertNotIn(good_prefix + '-00099', keys)
        self.assertIn('notes.txt', keys)
        self.assertEqual([], client.list_multipart_uploads(
            Bucket=bucket).get('Uploads', []))
        report, _err = self.run_json('verify', good['id'], base=base)
        self.assertTrue(report['ok'], report)
        doc, _err = self.run_json('repository', 'check', base=base)
        self.assertEqual([], doc['findings'])


class TestCheckSwift(MaintenanceTestCase):
    """repository check on a real Swift server on 127.0.0.1."""

    def test_check_swift_incomplete_and_unlisted_grace_then_delete(self):
        from cinder_chunked_ext.tests import swift_server
        server = self.useFixture(swift_server.SwiftServerFixture()).server
        container = 'check-%s' % os.urandom(6).hex()
        self.conf = self.write_config(
            'swift.conf', backup_swift_auth='single_user',
            backup_swift_auth_version='1',
            backup_swift_auth_url=server.auth_url,
            backup_swift_user=server.user, backup_swift_key=server.key,
            backup_swift_object_size=test_cli.CHUNK,
            backup_swift_block_size=test_cli.SHA,
            backup_swift_retry_attempts=2, backup_swift_retry_backoff=0)
        base = ['--config-file', self.conf, '--driver', 'swift',
                '--repository', container]
        test_cli.write_volume(self.volume)
        good, _err = self.run_json('backup', 'create', self.volume,
                                   base=base)
        other = os.path.join(self.tmp, 'other.img')
        test_cli.write_volume(other, seed=5)
        dead, _err = self.run_json('backup', 'create', other, base=base)
        conn = server.connection()
        dead_prefix = dead['service_metadata']
        conn.delete_object(container, dead_prefix + '_metadata')
        catalog = sqlite3.connect(test_cli.only_catalog(self.env))
        catalog.execute("UPDATE backups SET status = 'creating' "
                        'WHERE id = ?', (dead['id'],))
        catalog.commit()
        catalog.close()
        # An object the good backup's metadata does not list.
        good_prefix = good['service_metadata']
        conn.put_object(container, good_prefix + '-00099', b'stray')
        # What is not named like a backup's is never touched.
        conn.put_object(container, 'notes.txt', b'mine')

        doc, _err = self.run_json('repository', 'check', '--delete',
                                  base=base)
        found = {f['kind']: f for f in doc['findings']}
        self.assertEqual({'incomplete', 'unlisted'}, set(found))
        # Swift writes are single PUTs: no temporary leftovers exist.
        self.assertEqual([], found['incomplete']['temporary'])
        self.assertEqual(dead['object_count'] + 1,
                         len(found['incomplete']['objects']))
        self.assertEqual([good_prefix + '-00099'],
                         found['unlisted']['objects'])
        self.assertEqual({'kept: younger than the grace period'},
                         {f['action'] for f in doc['findings']})

        doc, _err = self.run_json('repository', 'check', '--delete',
                                  '--grace', '0', base=base)
        self.assertEqual({'deleted'}, {f['action'] for f in doc['findings']})
        names = [item['name'] for item in
                 conn.get_container(container, full_listing=True)[1]]
        self.assertEqual([], [n for n in names if dead_prefix in n])
        self.assertNotIn(good_prefix + '-00099', names)
        self.assertIn('notes.txt', names)
        report, _err = self.run_json('verify', good['id'], base=base)
        self.assertTrue(report['ok'], report)
        doc, _err = self.run_json('repository', 'check', base=base)
        self.assertEqual([], doc['findings'])
