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

"""What a POSIX backup makes durable, and in which order.

Every directory a backup creates is an entry in its parent; until that
parent is synced, a crash can lose the directory and every object in
it, after the backup was reported available.  An strace of a backup
showed ``mkdir`` of ``xx``, ``xx/yy`` and ``xx/yy/<id>`` with no sync of
their parents.

A backup's objects are made durable together, through a barrier: their
files are synced (many at once), then renamed into place, then their
directory synced once, and only then are the sha256file and metadata
written.  No partial object is ever under its final name.
"""

import ctypes
import errno
import io
import logging
import os
import random
import textwrap

import ddt
import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import nfs as drivers_nfs
from cinder_chunked_ext.drivers import posix as drivers_posix
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import file_durability
from cinder_chunked_ext.store import posix
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests import patched_process

SHA = 4 * 1024


class DirectorySyncTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        top = self.useFixture(fixtures.TempDir()).path
        self.root = os.path.join(top, 'repo')
        self.events = []
        real_fsync_dir = file_durability.fsync_directory
        real_rename = os.rename

        def fsync_dir(path):
            self.events.append(('sync', os.path.relpath(path, top)))
            return real_fsync_dir(path)

        def rename(src, dst):
            self.events.append(('rename', os.path.relpath(dst, top)))
            return real_rename(src, dst)
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'fsync_directory', fsync_dir))
        self.useFixture(fixtures.MockPatchObject(posix.os, 'rename', rename))
        self.store = posix.PosixStore(self.root)

    def test_put_container_new_directories_parents_synced(self):
        self.store.put_container('ab/cd/abcd-1')
        self.assertEqual({('sync', 'repo/ab/cd'), ('sync', 'repo/ab'),
                          ('sync', 'repo'), ('sync', '.')},
                         set(self.events))

    def test_put_container_existing_directories_no_sync(self):
        self.store.put_container('ab/cd/abcd-1')
        del self.events[:]
        self.store.put_container('ab/cd/abcd-1')
        self.assertEqual([], self.events)

    def test_put_container_sibling_only_its_parent_synced(self):
        self.store.put_container('ab/cd/abcd-1')
        del self.events[:]
        self.store.put_container('ab/cd/abcd-2')
        self.assertEqual([('sync', 'repo/ab/cd')], self.events)

    def test_object_commit_after_its_directory_durable(self):
        self.store.put_container('ab/cd/abcd-1')
        with self.store.open_writer('ab/cd/abcd-1', 'P-00001') as writer:
            writer.write(b'data')
        renamed = self.events.index(('rename', 'repo/ab/cd/abcd-1/P-00001'))
        self.assertLess(self.events.index(('sync', 'repo/ab/cd')), renamed)
        # And the rename itself is made durable by a sync of its directory.
        self.assertIn(('sync', 'repo/ab/cd/abcd-1'), self.events[renamed:])


def record_durability(test):
    """Record file syncs, renames and directory syncs, in order.

    Returns the list that ``(kind, base name)`` events are appended to:
    kind ``file``, ``rename``, ``dir`` or ``fs`` (a syncfs of the file
    system of the directory named).  The real calls still happen.
    """
    events = []
    real = {'file': file_durability.fsync_file,
            'dir': file_durability.fsync_directory,
            'fs': file_durability.syncfs,
            'rename': os.rename}

    def recorder(kind):
        def record(*args):
            events.append((kind, os.path.basename(args[-1])))
            return real[kind](*args)
        return record
    for kind, name in (('file', 'fsync_file'), ('dir', 'fsync_directory'),
                       ('fs', 'syncfs')):
        test.useFixture(fixtures.MockPatchObject(
            file_durability, name, recorder(kind)))
    test.useFixture(fixtures.MockPatchObject(
        file_durability.os, 'rename', recorder('rename')))
    return events


class BarrierTestCase(testtools.TestCase):
    """Objects written through a barrier: synced, renamed, then listed."""

    def setUp(self):
        super().setUp()
        top = self.useFixture(fixtures.TempDir()).path
        self.root = os.path.join(top, 'repo')
        self.events = record_durability(self)
        self.store = posix.PosixStore(self.root)
        self.store.put_container('ab/cd/abcd-1')
        self.directory = os.path.join(self.root, 'ab/cd/abcd-1')
        del self.events[:]

    def write(self, barrier, *names):
        for name in names:
            with self.store.open_writer('ab/cd/abcd-1', name,
                                        barrier=barrier) as writer:
                writer.write(name.encode() * 100)

    @staticmethod
    def run_all(func, items):
        for item in items:
            func(item)

    def test_committed_object_not_listed_until_settled(self):
        barrier = self.store.durability_barrier()
        self.write(barrier, 'P-00001', 'P-00002')
        self.assertEqual([], self.store.list_objects('ab/cd/abcd-1', 'P-'))
        self.assertEqual((2, 1400), barrier.pending)
        self.assertEqual([], self.events)   # nothing synced yet
        barrier.settle(self.run_all)
        self.assertEqual(['P-00001', 'P-00002'],
                         self.store.list_objects('ab/cd/abcd-1', 'P-'))
        self.assertEqual([], [n for n in os.listdir(self.directory)
                              if n.startswith(posix.TEMP_MARK)])
        self.assertEqual(b'P-00002' * 100,
                         open(os.path.join(self.directory, 'P-00002'),
                              'rb').read())
        self.assertEqual((0, 0), barrier.pending)

    def test_settle_syncs_files_then_renames_then_directory_once(self):
        barrier = self.store.durability_barrier()
        self.write(barrier, 'P-00001', 'P-00002', 'P-00003')
        barrier.settle(self.run_all)
        kinds = [kind for kind, _name in self.events]
        self.assertEqual(['file'] * 3 + ['rename'] * 3 + ['dir'], kinds)
        self.assertEqual(('dir', 'abcd-1'), self.events[-1])

    def test_abandon_leaves_no_object_and_no_temporary_file(self):
        barrier = self.store.durability_barrier()
        self.write(barrier, 'P-00001', 'P-00002')
        barrier.abandon()
        self.assertEqual([], os.listdir(self.directory))
        barrier.settle(self.run_all)    # nothing left to settle
        self.assertEqual([], os.listdir(self.directory))

    def test_failed_sync_raises_and_removes_what_was_pending(self):
        barrier = self.store.durability_barrier()
        self.write(barrier, 'P-00001', 'P-00002')

        def failing(path):
            raise OSError(errno.EIO, 'I/O error')
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'fsync_file', failing))
        error = self.assertRaises(exception.StoreError, barrier.settle,
                                  self.run_all)
        self.assertIn('cannot sync', str(error))
        self.assertEqual([], os.listdir(self.directory))

    def test_settle_whole_file_system_one_syncfs_per_device(self):
        self.store.put_container('ab/ef/abef-2')
        del self.events[:]
        barrier = file_durability.PendingFiles(posix.classify_os_error,
                                               whole_file_system=True)
        self.write(barrier, 'P-00001', 'P-00002')
        with self.store.open_writer('ab/ef/abef-2', 'Q-00001',
                                    barrier=barrier) as writer:
            writer.write(b'q')
        synced = []
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'syncfs', synced.append))
        barrier.settle(self.run_all)
        # Both directories are on one file system: one syncfs, before
        # any rename; then each directory once.
        self.assertEqual([os.path.join(self.root, 'ab/cd/abcd-1')], synced)
        kinds = [kind for kind, _name in self.events]
        self.assertEqual(['rename'] * 3 + ['dir'] * 2, kinds)
        self.assertEqual(['P-00001', 'P-00002'],
                         self.store.list_objects('ab/cd/abcd-1', 'P-'))

    def test_failed_syncfs_raises_and_removes_what_was_pending(self):
        barrier = file_durability.PendingFiles(posix.classify_os_error,
                                               whole_file_system=True)
        self.write(barrier, 'P-00001', 'P-00002')

        def failing_libc_syncfs(fd):
            ctypes.set_errno(errno.EIO)
            return -1
        self.useFixture(fixtures.MockPatchObject(
            file_durability, '_libc_syncfs', lambda: failing_libc_syncfs))
        error = self.assertRaises(exception.StoreError, barrier.settle,
                                  self.run_all)
        self.assertIn('cannot sync the file system', str(error))
        self.assertIn(os.strerror(errno.EIO), str(error))
        self.assertEqual([], os.listdir(self.directory))

    def test_commit_without_barrier_durable_at_once(self):
        self.write(None, 'P-00001')
        # The file is synced by its open descriptor, then renamed, then
        # its directory synced: durable before the commit returns.
        self.assertEqual([('rename', 'P-00001'), ('dir', 'abcd-1')],
                         self.events)


class SyncfsTestCase(testtools.TestCase):
    """When one syncfs may stand in for an fsync of each file."""

    def test_kernel_versions(self):
        self.assertEqual((5, 10), file_durability._kernel_version(
            '5.10.0-26-cloud-amd64'))
        self.assertEqual((6, 18), file_durability._kernel_version(
            '6.18.44-fc-v1252'))
        self.assertIsNone(file_durability._kernel_version('unknown'))

    def test_supported_from_linux_5_8_only(self):
        self.useFixture(fixtures.MockPatchObject(
            file_durability, '_libc_syncfs', lambda: object()))
        self.assertFalse(file_durability.syncfs_supported('5.7.19'))
        self.assertFalse(file_durability.syncfs_supported('4.19.0-6'))
        self.assertTrue(file_durability.syncfs_supported('5.8.0'))
        self.assertTrue(file_durability.syncfs_supported('6.1.0-13-amd64'))

    def test_not_supported_without_libc_syncfs(self):
        self.useFixture(fixtures.MockPatchObject(
            file_durability, '_libc_syncfs', lambda: None))
        self.assertFalse(file_durability.syncfs_supported('6.1.0'))

    def test_syncfs_real_directory(self):
        if file_durability._libc_syncfs() is None:
            self.skipTest('no syncfs in the C library')
        directory = self.useFixture(fixtures.TempDir()).path
        file_durability.syncfs(directory)
        error = self.assertRaises(OSError, file_durability.syncfs,
                                  os.path.join(directory, 'missing'))
        self.assertEqual(errno.ENOENT, error.errno)

    def test_driver_default_syncfs_else_fsync_said_once(self):
        conf = self.useFixture(config_fixture.Config(cfg.CONF))
        repo = self.useFixture(fixtures.TempDir()).path
        env = fakes.FakeEnvironment()
        self.assertEqual('syncfs', cfg.CONF.chunked_backup.posix_sync)
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'syncfs_supported', lambda: True))
        driver = drivers_posix.PosixBackupDriver(fakes.FakeContext(env),
                                                 backup_path=repo)
        self.assertTrue(driver.store.durability_barrier().whole_file_system)
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'syncfs_supported', lambda: False))
        self.useFixture(fixtures.MockPatchObject(
            drivers_posix, '_fallback_logged', []))
        logged = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        for _attempt in range(2):
            driver = drivers_posix.PosixBackupDriver(fakes.FakeContext(env),
                                                     backup_path=repo)
            self.assertEqual('fsync', driver.store.sync)
            self.assertFalse(
                driver.store.durability_barrier().whole_file_system)
        self.assertEqual(1, logged.output.count('fsynced instead'))
        conf.config(posix_sync='fsync', group='chunked_backup')
        driver = drivers_posix.PosixBackupDriver(fakes.FakeContext(env),
                                                 backup_path=repo)
        self.assertEqual('fsync', driver.store.sync)

    def test_nfs_driver_fsyncs_each_file_whatever_posix_sync_says(self):
        self.useFixture(fixtures.MockPatchObject(
            file_durability, 'syncfs_supported', lambda: True))
        self.assertEqual('syncfs', cfg.CONF.chunked_backup.posix_sync)
        self.assertEqual('syncfs',
                         drivers_posix.PosixBackupDriver._store_sync())
        self.assertEqual('fsync', drivers_nfs.NFSBackupDriver._store_sync())


@ddt.ddt
class BackupDurabilityTestCase(testtools.TestCase):
    """A backup's objects are durable before its documents are written."""

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.conf.config(backup_file_size=16 * SHA,
                         backup_sha_block_size_bytes=SHA,
                         backup_compression_algorithm='zlib',
                         backup_enable_progress_timer=False)
        self.repo = self.useFixture(fixtures.TempDir()).path
        self.env = fakes.FakeEnvironment()
        self.use_sync('fsync')
        self.events = record_durability(self)

    def use_sync(self, sync):
        if sync == 'syncfs' and not file_durability.syncfs_supported():
            self.skipTest('syncfs(2) does not report errors here')
        self.conf.config(posix_sync=sync, group='chunked_backup')
        self.driver = drivers_posix.PosixBackupDriver(
            fakes.FakeContext(self.env), backup_path=self.repo)
        self.assertEqual(sync, self.driver.store.sync)

    def backup(self, data, parent=None):
        fields = {}
        if parent is not None:
            fields = {'parent_id': parent.id, 'volume_id': parent.volume_id}
        backup = self.env.new_backup(1, **fields)
        self.driver.backup(backup, io.BytesIO(data))
        backup.status = 'available'
        return backup

    @ddt.data('fsync', 'syncfs')
    def test_incremental_objects_synced_together_before_documents(self,
                                                                  sync):
        self.use_sync(sync)
        rnd = random.Random(5)
        base = rnd.randbytes(64 * SHA)
        full = self.backup(base)
        changed = bytearray(base)
        for block in range(1, 64, 3):       # 21 scattered changed blocks
            changed[block * SHA:(block + 1) * SHA] = rnd.randbytes(SHA)
        del self.events[:]
        incr = self.backup(bytes(changed), parent=full)
        prefix = incr.service_metadata
        objects = ['%s-%05d' % (prefix, n) for n in range(1, 22)]
        renames = [name for kind, name in self.events if kind == 'rename']
        self.assertEqual(sorted(objects),
                         sorted(n for n in renames if n in objects))
        last_object = max(self.events.index(('rename', n)) for n in objects)
        # Every object's file was synced before the first rename (each
        # by an fsync, or all by one syncfs of their file system) ...
        first_rename = min(self.events.index(('rename', n))
                           for n in objects)
        synced = [(kind, n) for kind, n in self.events[:first_rename]
                  if kind in ('file', 'fs')]
        if sync == 'fsync':
            self.assertEqual(len(objects), len(synced))
            self.assertEqual({'file'}, {kind for kind, _n in synced})
        else:
            self.assertEqual([('fs', os.path.basename(incr.container))],
                             synced)
        # ... and the directory after the last one, before the documents.
        sha_rename = self.events.index(('rename', prefix + '_sha256file'))
        self.assertIn(('dir', os.path.basename(incr.container)),
                      self.events[last_object:sha_rename])
        self.assertLess(sha_rename,
                        self.events.index(('rename', prefix + '_metadata')))
        # One sync of the directory for all the objects, not one each
        # (its parents were synced when it was made).
        own = ('dir', os.path.basename(incr.container))
        self.assertEqual(1, self.events[:sha_rename].count(own))
        restored = io.BytesIO(bytes(len(changed)))
        incr.status = 'restoring'
        self.driver.restore(incr, incr.volume_id, restored, False)
        self.assertEqual(bytes(changed), restored.getvalue())

    @ddt.data(('fsync', 'fsync_file'), ('syncfs', 'syncfs'))
    @ddt.unpack
    def test_failed_incremental_leaves_no_temporary_file(self, sync, call):
        self.use_sync(sync)
        base = bytes(range(256)) * (64 * SHA // 256)
        full = self.backup(base)
        changed = bytearray(base)
        changed[5 * SHA:6 * SHA] = b'x' * SHA

        def failing(path):
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.useFixture(fixtures.MockPatchObject(
            file_durability, call, failing))
        backup = self.env.new_backup(1, parent_id=full.id,
                                     volume_id=full.volume_id)
        self.assertRaises(exception.PermanentStoreError, self.driver.backup,
                          backup, io.BytesIO(bytes(changed)))
        leftovers = [name for _d, _s, names in os.walk(self.repo)
                     for name in names if name.startswith(posix.TEMP_MARK)]
        self.assertEqual([], leftovers)
        self.assertNotIn(backup.service_metadata + '_metadata',
                         os.listdir(os.path.join(self.repo, full.container)))


NATIVE_FILES_SCRIPT = textwrap.dedent('''
    import json, tempfile
    try:
        from cinder import monkey_patch
        monkey_patch.patch()
    except ImportError:
        import eventlet
        eventlet.monkey_patch()
    from eventlet import tpool
    from cinder_chunked_ext.store import posix
    # Removed when the interpreter exits.
    workdir = tempfile.TemporaryDirectory()
    store = posix.PosixStore(workdir.name)
    store.put_container('c')

    def round_trip():
        writer = store.open_writer('c', 'o')
        kinds = [type(writer._file.raw).__module__]
        writer.write(b'x' * 100)
        writer.commit()
        reader = store.open_reader('c', 'o')
        kinds.append(type(reader._file.raw).__module__)
        data = reader.read()
        reader.close()
        return kinds, len(data)
    kinds, size = tpool.execute(round_trip)
    print(json.dumps({'kinds': kinds, 'size': size}))
''')


class PatchedFilesTestCase(testtools.TestCase):
    """Under monkey-patching, objects are files, not green pipes."""

    def test_monkey_patched_writer_and_reader_native_files(self):
        report = patched_process.run_script(NATIVE_FILES_SCRIPT, 120)
        self.assertEqual(100, report['size'])
        for module in report['kinds']:
            self.assertNotIn('eventlet', module, report)
