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

"""The restore's read spool: objects the check pass read are not fetched twice.

With ``[chunked_backup] restore_spool_dir`` set, a restore that checks
objects before its first write (over an existing volume; an encrypted
backup onto any volume) reads each of them from the store once; the
write pass reads the local copies, proves them again, and removes them.
Copies beyond the process's budget, or that cannot be written, are not
made: those objects are fetched again, as without a spool.
"""

import collections
import errno
import io
import os
import subprocess
import sys

import fixtures
import testtools

from cinder_chunked_ext.engine import settings as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.store import posix
from cinder_chunked_ext.store import read_spool
from cinder_chunked_ext.tests.unit import test_chunked_backup as base
from cinder_chunked_ext.tests.unit import test_encrypted_backups as enc
from cinder_chunked_ext.tests.unit import test_restore_check_pass as checks

MARK = checks.MARK


class SpoolMixin(object):

    def use_spool(self, max_mib=None):
        self.spool_dir = self.useFixture(fixtures.TempDir()).path
        self.conf.config(restore_spool_dir=self.spool_dir,
                         group=chunked.PIPELINE_GROUP)
        if max_mib is not None:
            self.conf.config(restore_spool_max_mib=max_mib,
                             group=chunked.PIPELINE_GROUP)
        # The process's budget is shared: each test starts from its own.
        self.budget = read_spool.Budget()
        self.useFixture(fixtures.MockPatchObject(
            read_spool, 'PROCESS_BUDGET', self.budget))

    def count_store_reads(self):
        """``Counter`` of the data objects the POSIX store opens."""
        reads = collections.Counter()
        original = posix.PosixStore.open_reader

        def open_reader(store, container, name, *args, **kwargs):
            if not name.endswith(('_metadata', '_sha256file')):
                reads[name] += 1
            return original(store, container, name, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(
            posix.PosixStore, 'open_reader', open_reader))
        return reads

    def data_objects(self, backups):
        """Names of the data objects stored for ``backups``."""
        return sorted(n for b in backups for n in self.files(b)
                      if n[len(b.service_metadata):][:1] == '-')

    def restore_over(self, backup, size, driver=None, volume_is_new=False,
                     fill=MARK):
        target = base.VolumeFile(io.BytesIO(fill * size))
        self.restore(backup, target, volume_is_new, driver)
        return target.getvalue()

    def restore_logged(self, chain, data, driver):
        """Restore the chain over a used volume; return the log (INFO)."""
        log = self.useFixture(fixtures.FakeLogger(level='INFO'))
        self.assertEqual(data, self.restore_over(chain['newest'], len(data),
                                                 driver=driver))
        return log.output

    def assert_spool_gone(self):
        self.assertEqual([], os.listdir(self.spool_dir))
        self.assertEqual(0, self.budget.used)


class PlainSpoolTestCase(SpoolMixin, checks.ChainMixin, base.DriverTestCase):

    def test_restore_existing_reads_each_object_once_with_spool(self):
        chain, data = self.make_chain()
        reads = self.count_store_reads()
        # Without a spool the check pass and the write pass each fetch
        # every object but the zero ones (proved by the first read).
        self.assertEqual(data, self.restore_over(chain['newest'], len(data)))
        names = self.data_objects(chain.values())
        self.assertEqual(names, sorted(reads))
        twice = sorted(n for n, count in reads.items() if count == 2)
        self.assertGreater(len(twice), len(names) // 2)
        self.assertEqual({1, 2}, set(reads.values()))

        self.use_spool()
        driver = self.make_driver()
        reads.clear()
        log = self.useFixture(fixtures.FakeLogger(level='INFO'))
        self.assertEqual(data, self.restore_over(chain['newest'], len(data),
                                                 driver=driver))
        self.assertEqual(names, sorted(reads))
        self.assertEqual({1}, set(reads.values()), (reads, log.output))
        self.assertIn('Restore spool: %d object(s)' % len(names),
                      log.output)
        self.assertIn('%d of them read from there' % len(twice), log.output)
        self.assert_spool_gone()

    def test_restore_new_plain_no_check_pass_nothing_spooled(self):
        self.use_spool()
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        reads = self.count_store_reads()
        self.assertEqual(data, self.restore_over(
            chain['newest'], len(data), driver=driver, volume_is_new=True,
            fill=b'\0'))
        self.assertEqual({1}, set(reads.values()))
        self.assert_spool_gone()

    def test_budget_spent_objects_fetched_again_budget_given_back(self):
        self.use_spool(max_mib=1)
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        # Another restore of the process holds nearly all of it.
        self.budget.used = read_spool.MiB - 10
        reads = self.count_store_reads()
        output = self.restore_logged(chain, data, driver)
        self.assertIn(2, set(reads.values()))
        self.assertIn('beyond restore_spool_max_mib (1 MiB', output)
        self.assertIn('Restore spool: 0 object(s)', output)
        self.assertEqual(read_spool.MiB - 10, self.budget.used)
        self.assertEqual([], os.listdir(self.spool_dir))

    def test_full_disk_objects_fetched_again_warning_names_error(self):
        self.use_spool()
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        reads = self.count_store_reads()

        def no_space(fd, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        self.useFixture(fixtures.MockPatchObject(read_spool.os, 'write',
                                                 no_space))
        output = self.restore_logged(chain, data, driver)
        self.assertIn(2, set(reads.values()))
        self.assertIn('could not be kept', output)
        self.assertIn('ENOSPC', output)
        self.assert_spool_gone()

    def test_copy_changed_on_local_disk_refused_naming_object(self):
        # The write pass proves the copy by the CRC-32 of the stored
        # bytes the check pass proved: a copy changed in between is an
        # error, never data on the volume.
        self.use_spool()
        driver = self.make_driver(backup_compression_algorithm='none')
        chain, data = self.make_chain(driver)
        original = read_spool.ReadSpool.stop_recording

        def tamper_then_stop(spool):
            for path, _size in spool._entries.values():
                with open(path, 'r+b') as f:
                    first = f.read(1)
                    f.seek(0)
                    f.write(bytes([first[0] ^ 0x01]))
            original(spool)

        self.useFixture(fixtures.MockPatchObject(
            read_spool.ReadSpool, 'stop_recording', tamper_then_stop))
        target = base.VolumeFile(io.BytesIO(MARK * len(data)))
        exc = self.assertRaises(exception.InvalidBackup, self.restore,
                                chain['newest'], target, False, driver)
        self.assertIn('changed since it was checked', str(exc))
        self.assert_spool_gone()

    def test_damaged_object_check_fails_volume_untouched_spool_removed(self):
        self.use_spool()
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        name = self.damage_last(chain['base'], checks._flip)
        exc, target = self.restore_refused(chain['newest'], len(data),
                                           exception.InvalidBackup,
                                           driver=driver)
        self.assertIn(name, str(exc))
        self.assertEqual([], target.writes)
        self.assert_spool_gone()

    def test_stale_spools_of_dead_processes_removed_live_kept(self):
        self.use_spool()
        dead = subprocess.run([sys.executable, '-c',
                               'import os; print(os.getpid())'],
                              capture_output=True, text=True, check=True)
        stale = os.path.join(self.spool_dir, '%s%s-abc' % (
            read_spool.DIR_PREFIX, dead.stdout.strip()))
        live = os.path.join(self.spool_dir, '%s%d-abc' % (
            read_spool.DIR_PREFIX, os.getppid()))
        other = os.path.join(self.spool_dir, 'not-a-spool-1-abc')
        for path in (stale, live, other):
            os.mkdir(path)
            with open(os.path.join(path, 'o00000000'), 'wb') as f:
                f.write(b'left behind')
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        log = self.useFixture(fixtures.FakeLogger(level='INFO'))
        self.assertEqual(data, self.restore_over(chain['newest'], len(data),
                                                 driver=driver))
        self.assertEqual(sorted([os.path.basename(live), 'not-a-spool-1-abc']),
                         sorted(os.listdir(self.spool_dir)))
        self.assertIn(os.path.basename(stale), log.output)

    def test_unusable_directory_refused_at_setup_warned_at_restore(self):
        self.use_spool()
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        os.rmdir(self.spool_dir)
        exc = self.assertRaises(exception.InvalidConfigurationValue,
                                driver.check_for_setup_error)
        self.assertIn(self.spool_dir, str(exc))
        log = self.useFixture(fixtures.FakeLogger(level='INFO'))
        self.assertEqual(data, self.restore_over(chain['newest'], len(data),
                                                 driver=driver))
        self.assertIn('restore_spool_dir cannot be used', log.output)

    def test_relative_directory_refused_at_setup(self):
        self.conf.config(restore_spool_dir='relative/spool',
                         group=chunked.PIPELINE_GROUP)
        exc = self.assertRaises(exception.InvalidConfigurationValue,
                                self.make_driver().check_for_setup_error)
        self.assertIn('not an absolute path', str(exc))


class EncryptedSpoolTestCase(SpoolMixin, checks.ChainMixin,
                             enc.EncryptedDriverTestCase):

    def test_restore_new_encrypted_reads_each_object_once(self):
        # Every sealed object is authenticated before the first write,
        # onto a new volume too: with a spool that is one read each.
        self.use_spool()
        driver = self.make_driver(encryption='aes-256-gcm')
        chain, data = self.make_chain(driver)
        reads = self.count_store_reads()
        seen = []
        original = read_spool.ReadSpool.stop_recording

        def look_then_stop(spool):
            for path, _size in spool._entries.values():
                with open(path, 'rb') as f:
                    seen.append(f.read())
            original(spool)

        self.useFixture(fixtures.MockPatchObject(
            read_spool.ReadSpool, 'stop_recording', look_then_stop))
        self.assertEqual(data, self.restore_over(
            chain['newest'], len(data), driver=driver, volume_is_new=True,
            fill=b'\0'))
        names = self.data_objects(chain.values())
        self.assertEqual(names, sorted(reads))
        self.assertEqual({1}, set(reads.values()))
        # The copies are the sealed objects: no plaintext block on disk.
        self.assertEqual(len(names), len(seen))
        for block in range(0, len(data) - base.SHA, base.SHA):
            plain = data[block:block + base.SHA]
            if plain.strip(b'\0'):
                self.assertFalse(any(plain in copy for copy in seen))
        self.assert_spool_gone()


class CopiesTestCase(testtools.TestCase):
    """What a copy is kept for: the whole object, read to its end."""

    def setUp(self):
        super().setUp()
        self.parent = self.useFixture(fixtures.TempDir()).path
        self.budget = read_spool.Budget()
        self.spool = read_spool.ReadSpool(self.parent, read_spool.MiB,
                                          budget=self.budget)
        self.addCleanup(self.spool.close)
        self.inner = memory.MemoryStore()
        self.inner.put_container('c')
        with self.inner.open_writer('c', 'b-00001') as writer:
            writer.write(b'x' * 5000)
        self.store = self.spool.wrap(self.inner)

    def read(self, *sizes):
        with self.store.open_reader('c', 'b-00001') as reader:
            return b''.join(reader.read(size) for size in sizes)

    def test_read_to_the_last_byte_kept_and_read_back_once(self):
        # A decoder stops at its stream's end without the empty read.
        self.assertEqual(b'x' * 5000, self.read(4000, 1000))
        self.assertEqual(1, self.spool.spooled)
        self.assertEqual(5000, self.budget.used)
        self.spool.stop_recording()
        inner_reads = self.useFixture(fixtures.MockPatchObject(
            self.inner, 'open_reader', wraps=self.inner.open_reader)).mock
        self.assertEqual(b'x' * 5000, self.read(-1))
        self.assertEqual(0, inner_reads.call_count)
        self.assertEqual((1, 0), (self.spool.served, self.budget.used))
        self.assertEqual(b'x' * 5000, self.read(-1))
        self.assertEqual(1, inner_reads.call_count)

    def test_partly_read_not_kept_budget_given_back(self):
        self.assertEqual(b'x' * 4000, self.read(4000))
        self.assertEqual((0, 0), (self.spool.spooled, self.budget.used))
        self.assertEqual([], os.listdir(self.spool.directory))

    def test_documents_never_copied(self):
        with self.inner.open_writer('c', 'b_metadata') as writer:
            writer.write(b'{}')
        with self.store.open_reader('c', 'b_metadata') as reader:
            self.assertEqual(b'{}', reader.read())
        self.assertEqual(0, self.spool.spooled)

    def test_close_removes_copies_and_gives_budget_back(self):
        self.read(-1)
        self.assertEqual(5000, self.budget.used)
        self.spool.close()
        self.assertEqual(0, self.budget.used)
        self.assertFalse(os.path.exists(self.spool.directory))
