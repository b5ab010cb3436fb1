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

"""Our drivers in a live Cinder, through the API (``tox -e live``).

One cluster (RabbitMQ and the four services) serves every test of the
process; each test restarts cinder-backup with the driver it needs.
Figures (each scenario's time, cinder-backup's peak RSS, the progress
notifications) go to ``<run dir>/figures.json``; the services' logs to
``<run dir>/logs/``.
"""

import atexit
import contextlib
import os
import re
import subprocess
import threading
import time

import testtools
from testtools import content as testtools_content

from cinder_chunked_ext.tests.live import cluster as cluster_lib
from cinder_chunked_ext.tests.live import harness
from cinder_chunked_ext.tests import local_servers

MiB = harness.MiB
OURS = 'cinder_chunked_ext.drivers.%s'
UPSTREAM_POSIX = 'cinder.backup.drivers.posix.PosixBackupDriver'
OURS_POSIX = OURS % 'posix.PosixBackupDriver'

_state = {}
_lock = threading.Lock()


def get_cluster():
    """The process's live Cinder, started on first use."""
    with _lock:
        if 'error' in _state:
            raise _state['error']
        if 'cluster' not in _state:
            cluster = cluster_lib.Cluster()
            atexit.register(cluster.stop)
            try:
                cluster.start(posix_options(cluster, OURS_POSIX))
                api = harness.Api(cluster.api_port)
                api.wait_api()
            except Exception as e:
                cluster.stop()
                _state['error'] = e
                raise
            _state['cluster'] = cluster
            _state['api'] = api
            _state['figures'] = harness.Figures(
                os.path.join(cluster.run_dir, 'figures.json'))
        return _state['cluster'], _state['api'], _state['figures']


def tearDownModule():
    cluster = _state.pop('cluster', None)
    if cluster is not None:
        cluster.stop()


def posix_options(cluster, driver, path='posix'):
    return {'backup_driver': driver,
            'backup_posix_path': os.path.join(cluster.run_dir, 'backups',
                                              path),
            'backup_file_size': harness.OBJECT_SIZE}


class LiveTestCase(testtools.TestCase):
    """A live Cinder and the helpers the scenarios share."""

    def setUp(self):
        super().setUp()
        # Default per-test timeout of the unit tests is too short here.
        self.cluster, self.api, self.figures = get_cluster()
        self.client = self.api.client
        self.backup_log = harness.LogReader(
            self.cluster.log_path('cinder-backup'))
        self.backup_log.read_new()
        self.notifications = harness.Notifications(
            self.cluster.rabbit.transport_url)
        self.addCleanup(self.notifications.close)
        self.refs = os.path.join(self.cluster.run_dir, 'refs')
        os.makedirs(self.refs, exist_ok=True)
        self.secrets = []
        self.volumes = []
        self.addCleanup(self._delete_volumes)
        # Set by spool_options: where cinder-backup keeps its copies.
        self.spool_dir = None

    # -- helpers -------------------------------------------------------------

    def use_driver(self, options):
        """Restart cinder-backup with these backup options."""
        self.cluster.restart_backup(options)
        self.backup_log.read_new()

    def volume_path(self, volume_id):
        return os.path.join(self.cluster.volume_dir, 'volume-%s' % volume_id)

    def new_volume(self, name, content=None, seed=1):
        volume = self.api.create_volume(name)
        self.volumes.append(volume.id)
        ref = os.path.join(self.refs, '%s-%s' % (name, volume.id))
        paths = [self.volume_path(volume.id), ref]
        if content == 'mixed':
            harness.write_mixed(paths, seed)
        elif content == 'big':
            harness.write_big(paths[:1], seed)
            paths = paths[:1]
        return volume.id, ref

    def _delete_volumes(self):
        for volume_id in self.volumes:
            with contextlib.suppress(Exception):
                self.client.volumes.delete(volume_id)
        for name in os.listdir(self.refs):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.refs, name))

    def assertSameContent(self, volume_id, ref):
        same, offset = harness.same_content(self.volume_path(volume_id), ref)
        self.assertTrue(same, 'volume %s differs from %s at offset %s'
                        % (volume_id, ref, offset))

    def changed_blocks_restored(self):
        """What cinder-backup logged of a restore of changed blocks only.

        Reads the log (checking it as ``assertLogClean`` does): the
        restore must have compared the volume, found some of its blocks
        different and not all.
        """
        text = self.backup_log.read_new()
        self.assertEqual([], harness.LogReader.problems(text, self.secrets))
        differing, blocks = self.logged_numbers(
            r'over the existing volume: (\d+) of (\d+) hash blocks differ',
            text, 'did not compare the volume')
        self.assertGreater(differing, 0)
        self.assertLess(differing, blocks)
        figures = {'differing_blocks': differing, 'hash_blocks': blocks}
        if self.spool_dir is not None:
            figures.update(self.spooled(text))
        return figures

    def logged_numbers(self, pattern, text, missing):
        """The numbers ``pattern``'s groups found in cinder-backup's log."""
        found = re.search(pattern, text)
        self.assertIsNotNone(found, 'cinder-backup %s: %s'
                             % (missing, text[-2000:]))
        return [int(n) for n in found.groups()]

    def spool_options(self):
        """cinder-backup options of a read spool in a directory of its own."""
        self.spool_dir = os.path.join(self.cluster.run_dir, 'restore-spool')
        os.makedirs(self.spool_dir, exist_ok=True)
        return {'chunked_backup/restore_spool_dir': self.spool_dir}

    def spooled(self, text):
        """What the restore logged of its spool; it must have used it."""
        kept, read_back = self.logged_numbers(
            r'Restore spool: (\d+) object\(s\) .*?, (\d+) of them read '
            r'from there', text, 'did not use its read spool')
        self.assertGreater(read_back, 0)
        self.assertLessEqual(read_back, kept)
        self.assertEqual([], os.listdir(self.spool_dir))
        return {'spooled_objects': kept, 'read_from_spool': read_back}

    def assertLogClean(self, scenario):
        problems = harness.LogReader.problems(self.backup_log.read_new(),
                                              self.secrets)
        self.assertEqual([], problems,
                         'cinder-backup logged during %s' % scenario)

    @contextlib.contextmanager
    def scenario(self, driver, name, **extra):
        started = time.monotonic()
        yield extra
        seconds = round(time.monotonic() - started, 1)
        self.assertLogClean('%s %s' % (driver, name))
        self.figures.add('%s %s' % (driver, name), seconds=seconds,
                         backup_peak_rss_mib=round(
                             self.cluster.backup_rss() / MiB),
                         **extra)

    def check_notifications(self, backup_id, extra, bound=3):
        """Count and size of the backup's progress notifications.

        Upstream sends a ``backup.createprogress`` every
        ``backup_object_number_per_notification`` (10) objects of a
        volume read whole (zeros included) and at the end, each with
        the list of the objects written so far (about 250 bytes an
        entry).  Ours must stay within ``bound`` times that estimate;
        the migration test compares with upstream's real figures.
        """
        counts = self.notifications.wait_for_backup(backup_id)
        progress, progress_bytes = counts.get('backup.createprogress',
                                              (0, 0))
        end, _ = counts.get('backup.create.end', (0, 0))
        objects = harness.VOLUME_GB * harness.GiB // harness.OBJECT_SIZE
        sizes = list(range(10, objects, 10)) + [objects]
        est_count = len(sizes)
        est_bytes = sum(2048 + 250 * n for n in sizes)
        extra.update(progress_events=progress, progress_bytes=progress_bytes,
                     upstream_estimate_events=est_count,
                     upstream_estimate_bytes=est_bytes)
        self.assertEqual(1, end, counts)
        self.assertGreaterEqual(progress, 1, counts)
        self.assertLessEqual(progress, bound * est_count, counts)
        self.assertLessEqual(progress_bytes, bound * est_bytes, counts)
        return progress, progress_bytes

    # -- the scenarios, for one driver --------------------------------------

    def run_scenarios(self, driver, options, store):
        self.use_driver(options)
        self.notifications.drain()

        with self.scenario(driver, 'full backup') as extra:
            volume, ref = self.new_volume('%s-a' % driver, 'mixed', seed=11)
            full = self.api.backup(volume)
            self.check_notifications(full.id, extra)
            full_objects = store.names(full.id)
            self.assertGreater(len(full_objects), 2)
            extra['objects'] = len(full_objects)
        # The full backup's content, for the restore over the original.
        full_ref = ref + '.full'
        harness.write_mixed([full_ref], seed=11)

        with self.scenario(driver, 'incremental 5%') as extra:
            harness.change_some([self.volume_path(volume), ref], seed=12)
            incr = self.api.backup(volume, incremental=True)
            self.assertTrue(incr.is_incremental)
            self.check_notifications(incr.id, extra)
            extra['objects'] = len(store.names(incr.id))

        with self.scenario(driver, 'restore chain to new volume'):
            new = self.api.restore(incr.id)
            self.volumes.append(new)
            self.assertSameContent(new, ref)

        with self.scenario(driver, 'restore full over original') as extra:
            self.api.restore(full.id, volume_id=volume)
            self.assertSameContent(volume, full_ref)
            if self.cluster.loop_devices:
                # A block device, as an LVM or iSCSI volume: the restore
                # read it and wrote only the blocks the incremental
                # changed since the full backup.
                extra.update(self.changed_blocks_restored())

        with self.scenario(driver, 'delete incremental, full'):
            self.client.backups.delete(incr.id)
            self.api.wait_backup_gone(incr.id)
            self.assertEqual([], store.names(incr.id))
            self.assertNotEqual([], store.names(full.id))
            self.client.backups.delete(full.id)
            self.api.wait_backup_gone(full.id)
            self.assertEqual([], store.names(full.id))

        big, _ = self.new_volume('%s-big' % driver, 'big', seed=13)
        with self.scenario(driver, 'force delete while running'):
            running = self.api.backup(big, wait=False)
            harness.wait_for_objects(store, running.id)
            self.assertEqual('creating',
                             self.client.backups.get(running.id).status)
            self.client.backups.delete(running.id, force=True)
            self.api.wait_backup_gone(running.id)
            harness.wait_for_no_objects(store, running.id)
            self.api.wait_volume(big)
            self.assertTrue(self.api.backup_service_up())

        with self.scenario(driver, 'three backups at once') as extra:
            ids = [volume]
            for n in range(2):
                other, _ = self.new_volume('%s-%d' % (driver, n), 'mixed',
                                           seed=20 + n)
                ids.append(other)
            started = [self.api.backup(v, wait=False) for v in ids]
            done = [self.api.wait_backup(b.id) for b in started]
            self.assertEqual(['available'] * 3, [b.status for b in done])
            for backup in done:
                self.client.backups.delete(backup.id)
            for backup in done:
                self.api.wait_backup_gone(backup.id)
                self.assertEqual([], store.names(backup.id))

        with self.scenario(driver, 'cinder-backup killed') as extra:
            running = self.api.backup(big, wait=False)
            harness.wait_for_objects(store, running.id)
            self.cluster.restart_backup(kill=True)
            # The manager's clean-up at start marks it error.
            self.api.wait_backup(running.id, status='error')
            self.api.wait_volume(big)
            extra['leftover_objects'] = len(store.names(running.id))
            # Our leftovers go with the backup record.
            self.client.backups.delete(running.id)
            self.api.wait_backup_gone(running.id)
            self.assertEqual([], store.names(running.id))
            after = self.api.backup(volume)
            self.client.backups.delete(after.id)
            self.api.wait_backup_gone(after.id)


class PosixTestCase(LiveTestCase):

    def test_posix_scenarios_pass(self):
        options = posix_options(self.cluster, OURS % 'posix.PosixBackupDriver')
        self.run_scenarios('posix', options,
                           harness.PosixStore(options['backup_posix_path']))


class EncryptedPosixTestCase(LiveTestCase):

    def test_encrypted_backup_restore_delete(self):
        from cinder_chunked_ext.tests import key_manager
        options = posix_options(self.cluster, OURS % 'posix.PosixBackupDriver',
                                'posix-encrypted')
        # castellan's in-process key manager, in cinder-backup: the keys
        # live as long as the process, which this test does not restart.
        options.update({'chunked_backup/encryption': 'aes-256-gcm',
                        'key_manager/backend': key_manager.BACKEND})
        self.use_driver(options)
        store = harness.PosixStore(options['backup_posix_path'])
        with self.scenario('posix', 'encrypted backup, restore, delete'):
            volume, ref = self.new_volume('enc', 'mixed', seed=21)
            marker = b'LIVE-PLAINTEXT-MARKER '
            for path in (self.volume_path(volume), ref):
                with open(path, 'r+b') as f:
                    f.write(marker * 4096)
            backup = self.api.backup(volume)
            stored = []
            for name in store.names(backup.id):
                with open(name, 'rb') as f:
                    stored.append(f.read())
            self.assertGreater(len(stored), 2)
            self.assertFalse(any(marker in data for data in stored),
                             'plaintext of the volume in the repository')
            self.assertTrue(any(b'cinder-chunked-ext/aes-256-gcm/1' in data
                                for data in stored))
            restored = self.api.restore(backup.id)
            self.volumes.append(restored)
            self.assertSameContent(restored, ref)
            self.client.backups.delete(backup.id)
            self.api.wait_backup_gone(backup.id)
            self.assertEqual([], store.names(backup.id))


class S3TestCase(LiveTestCase):

    def test_s3_scenarios_pass(self):
        from cinder_chunked_ext.tests import s3_server
        try:
            server = s3_server.SeaweedServer()
            self.addCleanup(server.cleanup)
            server.start()
        except s3_server.ServerUnavailable as e:
            local_servers.unavailable('S3', e)
        bucket = 'live-backups'
        self.secrets.append(server.secret_key)
        options = {'backup_driver': OURS % 's3.S3BackupDriver',
                   'backup_s3_endpoint_url': server.endpoint,
                   'backup_s3_store_access_key': server.access_key,
                   'backup_s3_store_secret_key': server.secret_key,
                   'backup_s3_store_bucket': bucket,
                   'backup_s3_object_size': harness.OBJECT_SIZE}
        # Restores over a volume fetch each object they need once.
        options.update(self.spool_options())
        self.run_scenarios('s3', options, harness.S3Store(server, bucket))


class SwiftTestCase(LiveTestCase):

    def test_swift_scenarios_pass(self):
        from cinder_chunked_ext.tests import swift_server
        try:
            server = swift_server.SwiftServer()
            self.addCleanup(server.cleanup)
            server.start()
        except swift_server.ServerUnavailable as e:
            local_servers.unavailable('Swift', e)
        self.secrets.append(server.key)
        options = {'backup_driver': OURS % 'swift.SwiftBackupDriver',
                   'backup_swift_auth': 'single_user',
                   'backup_swift_auth_version': '1',
                   'backup_swift_auth_url': server.auth_url,
                   'backup_swift_url': server.swift_url_base,
                   'backup_swift_user': server.user,
                   'backup_swift_key': server.key,
                   'backup_swift_object_size': harness.OBJECT_SIZE}
        options.update(self.spool_options())
        self.run_scenarios('swift', options, harness.SwiftStore(server))


class NFSTestCase(LiveTestCase):

    def test_nfs_scenarios_skipped_without_nfs_client(self):
        self.skipTest(
            'no NFS share can be had here: the kernel NFS client (and '
            'server) is not available in these containers, and the NFS '
            'driver is the POSIX driver on a mounted share, which the '
            'posix scenarios cover')


class MigrationTestCase(LiveTestCase):
    """Upstream's POSIX driver to ours and back, with adopt/release."""

    def tool(self, *args):
        result = subprocess.run(
            [os.path.join(self.cluster.bin_dir, 'cinder-chunked-backup'),
             'cinder'] + list(args) + ['--config-file',
                                       self.cluster.conf_path],
            capture_output=True, text=True, cwd=self.cluster.run_dir,
            timeout=120)
        self.addDetail('cinder %s' % ' '.join(args),
                       testtools_content.text_content(
                           result.stdout + result.stderr))
        return result

    def test_migration_adopt_release_pass(self):
        upstream = posix_options(self.cluster, UPSTREAM_POSIX, 'migration')
        ours = posix_options(self.cluster, OURS_POSIX, 'migration')
        store = harness.PosixStore(ours['backup_posix_path'])

        self.use_driver(upstream)
        self.notifications.drain()
        with self.scenario('migration', 'upstream full backup') as extra:
            volume, ref = self.new_volume('migration', 'mixed', seed=31)
            full = self.api.backup(volume)
            up_events, up_bytes = self.check_notifications(full.id, extra)
        full_ref = ref + '.full'
        harness.write_mixed([full_ref], seed=31)

        with self.scenario('migration', 'adopt') as extra:
            self.use_driver(ours)
            dry = self.tool('adopt', '--dry-run')
            self.assertEqual(0, dry.returncode, dry.stderr)
            self.assertIn('would record %s' % full.id, dry.stdout)
            adopt = self.tool('adopt')
            self.assertEqual(0, adopt.returncode, adopt.stderr)
            self.assertIn('recorded %s' % full.id, adopt.stdout)
            self.assertIn('-> %s' % OURS_POSIX, adopt.stdout)
            again = self.tool('adopt')
            self.assertEqual(0, again.returncode, again.stderr)
            self.assertIn('adopt: 0 backup(s) changed', again.stdout)

        with self.scenario('migration', 'ours on upstream\'s') as extra:
            harness.change_some([self.volume_path(volume), ref], seed=32)
            incr = self.api.backup(volume, incremental=True)
            self.assertTrue(incr.is_incremental)
            self.assertTrue(self.client.backups.get(
                full.id).has_dependent_backups)
            new = self.api.restore(incr.id)
            self.volumes.append(new)
            self.assertSameContent(new, ref)
            new = self.api.restore(full.id)
            self.volumes.append(new)
            self.assertSameContent(new, full_ref)

        with self.scenario('migration', 'ours full, notifications') as extra:
            self.notifications.drain()
            mine = self.api.backup(volume)
            events, size = self.check_notifications(mine.id, extra)
            extra.update(upstream_events=up_events, upstream_bytes=up_bytes)
            self.assertLessEqual(events, 3 * up_events)
            self.assertLessEqual(size, 3 * up_bytes)

        with self.scenario('migration', 'delete upstream\'s chain'):
            for backup in (incr, full):
                self.client.backups.delete(backup.id)
                self.api.wait_backup_gone(backup.id)
                self.assertEqual([], store.names(backup.id))

        with self.scenario('migration', 'release, upstream restores'):
            dry = self.tool('release', '--dry-run')
            self.assertEqual(0, dry.returncode, dry.stdout + dry.stderr)
            self.assertIn('would record %s' % mine.id, dry.stdout)
            release = self.tool('release')
            self.assertEqual(0, release.returncode,
                             release.stdout + release.stderr)
            self.assertIn('recorded %s' % mine.id, release.stdout)
            self.use_driver(upstream)
            new = self.api.restore(mine.id)
            self.volumes.append(new)
            self.assertSameContent(new, ref)
            self.client.backups.delete(mine.id)
            self.api.wait_backup_gone(mine.id)
            self.assertEqual([], store.names(mine.id))
