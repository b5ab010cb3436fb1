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

"""Over an existing volume, only the hash blocks that differ are written.

The volume is a real file, handed over write-only as Cinder hands a
block device ('wb', here without truncating); the repository is a real
POSIX one.  Whatever the volume held, it ends byte for byte as the
backup; what is written and which objects are read depend on what
differed.
"""

import io
import os
import random

import ddt
import fixtures

from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import restore_check
from cinder_chunked_ext.engine import restore_delta
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests.unit import test_chunked_backup as base
from cinder_chunked_ext.tests.unit import test_encrypted_backups as enc
from cinder_chunked_ext.tests.unit import test_restore_check_pass as chains

SHA = base.SHA


def _differing_blocks(old, new):
    return [i for i in range(0, -(-len(new) // SHA))
            if old[i * SHA:(i + 1) * SHA] != new[i * SHA:(i + 1) * SHA]]


@ddt.ddt
class MaskedRangesTestCase(base.testtools.TestCase):

    @ddt.data(
        # mask, base, block, offset, length, expected
        (b'\x01\x01\x01', 0, 4, 0, 12, [(0, 12)]),
        (b'\x00\x00\x00', 0, 4, 0, 12, []),
        (b'\x01\x00\x01', 0, 4, 0, 12, [(0, 4), (8, 12)]),
        (b'\x00\x01\x01\x00', 100, 4, 100, 16, [(104, 112)]),
        # A span that starts and ends inside blocks of the object.
        (b'\x01\x00\x01\x01', 100, 4, 102, 11, [(102, 104), (108, 113)]),
        # The object's last block is short.
        (b'\x00\x01', 0, 4, 0, 6, [(4, 6)]),
        # A span in the middle of the object only.
        (b'\x01\x01\x00\x01', 0, 4, 4, 8, [(4, 8)]),
    )
    @ddt.unpack
    def test_masked_ranges(self, mask, start, block, offset, length,
                           expected):
        self.assertEqual(expected, list(restore_delta.masked_ranges(
            mask, start, block, offset, length)))


@ddt.ddt
class RestoreChangedBlocksTestCase(chains.ChainMixin, base.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.volumes = self.useFixture(fixtures.TempDir()).path
        self.writes = []
        real = volume_io.write_at

        def recording(volume_file, offset, data):
            self.writes.append((offset, len(data)))
            return real(volume_file, offset, data)
        self.useFixture(fixtures.MockPatchObject(volume_io, 'write_at',
                                                 recording))
        self.checked = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object',
            wraps=restore_check.check_object)).mock

    def existing_volume(self, data, name='volume'):
        path = os.path.join(self.volumes, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def restore_over(self, backup, path, driver=None):
        """Restore through a write-only handle, as Cinder passes a device."""
        self.writes.clear()
        self.checked.reset_mock()
        with io.open(os.open(path, os.O_WRONLY), 'wb') as target:
            self.restore(backup, target, False, driver)
        with open(path, 'rb') as f:
            return f.read()

    def written_blocks(self):
        blocks = set()
        for offset, length in self.writes:
            blocks.update(range(offset // SHA, -(-(offset + length) // SHA)))
        return sorted(blocks)

    def checked_names(self):
        return sorted(c.args[3].name for c in self.checked.call_args_list)

    def test_rollback_writes_changed_blocks_reads_their_objects_only(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        result = self.restore_over(chain['newest'],
                                   self.existing_volume(original))
        self.assertEqual(data, result)
        self.assertEqual(_differing_blocks(original, data),
                         self.written_blocks())
        # No object of the full backup was needed, or read.
        full = set(self.object_names(chain['base']))
        self.assertTrue(self.checked_names())
        self.assertFalse(full & set(self.checked_names()))

    def test_rollback_reads_each_sha256file_once(self):
        # The comparison's hashes serve the check pass too.
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        driver = self.driver
        read = self.useFixture(fixtures.MockPatchObject(
            driver, '_read_sha256file',
            wraps=driver._read_sha256file)).mock
        self.restore_over(chain['newest'], self.existing_volume(original))
        ids = [c.args[0]['id'] for c in read.call_args_list]
        self.assertEqual(1, ids.count(chain['newest'].id))
        self.assertEqual(len(ids), len(set(ids)))

    def test_volume_read_into_buffers_used_again(self):
        # Pieces of the volume are read into the buffers of a pool, as
        # backups read them, not into a new one each.
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        buffers = []
        real = volume_io.VolumeSource.load_piece

        def load_piece(source, offset, size, buffer=None):
            buffers.append(buffer)
            return real(source, offset, size, buffer)

        self.useFixture(fixtures.MockPatchObject(
            volume_io.VolumeSource, 'load_piece', load_piece))
        self.assertEqual(data, self.restore_over(
            chain['newest'], self.existing_volume(original)))
        pieces = [b for b in buffers if b is not None]
        self.assertGreater(len(pieces), 2)
        self.assertLess(len({id(b) for b in pieces}), len(pieces))

    @ddt.data(*[(algo, existing) for algo in ('none', 'zlib', 'zstd')
                for existing in ('zeros', 'random', 'restored', 'scattered',
                                 'last-blocks')])
    @ddt.unpack
    def test_restore_over_any_content_ends_as_backup(self, algo, existing):
        driver = self.make_driver(backup_compression_algorithm=algo)
        chain, data = self.make_chain(driver)
        size = len(data)
        rnd = random.Random(existing)
        if existing == 'zeros':
            old = bytes(size)
        elif existing == 'random':
            old = rnd.randbytes(size)
        elif existing == 'restored':
            old = data
        else:
            old = bytearray(data)
            picks = (range(size // SHA - 3, size // SHA)
                     if existing == 'last-blocks'
                     else rnd.sample(range(size // SHA), 5))
            for block in picks:
                old[block * SHA + rnd.randrange(SHA)] ^= 0x41
            old = bytes(old)
        path = self.existing_volume(old + b'tail beyond the backup')
        result = self.restore_over(chain['newest'], path, driver)
        self.assertEqual(data, result[:size])
        self.assertEqual(b'tail beyond the backup', result[size:])
        self.assertEqual(_differing_blocks(old, data), self.written_blocks())
        if existing == 'restored':
            self.assertEqual([], self.checked_names())

    def test_unneeded_damaged_object_not_read_restore_succeeds(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        name = self.damage_last(chain['base'], chains._flip)
        result = self.restore_over(chain['newest'],
                                   self.existing_volume(original))
        self.assertEqual(data, result)
        self.assertNotIn(name, self.checked_names())

    def test_option_off_every_object_checked_and_written(self):
        self.conf.config(restore_changed_blocks_only=False,
                         group=base.chunked.PIPELINE_GROUP)
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        original = self.volume_of(chain['base'], len(data))
        name = self.damage_last(chain['base'], chains._flip)
        path = self.existing_volume(original)
        self.assertRaises(exception.InvalidBackup, self.restore_over,
                          chain['newest'], path, driver)
        with open(path, 'rb') as f:
            self.assertEqual(original, f.read())
        self.assertIn(name, self.checked_names())
        self.assertEqual([], self.writes)

    def test_needed_damaged_object_volume_untouched(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        name = self.damage_last(chain['newest'], chains._flip)
        path = self.existing_volume(original)
        exc = self.assertRaises(exception.InvalidBackup, self.restore_over,
                                chain['newest'], path)
        self.assertIn(name, str(exc))
        self.assertEqual([], self.writes)
        with open(path, 'rb') as f:
            self.assertEqual(original, f.read())

    def test_sha256file_missing_every_object_written(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        newest = chain['newest']
        os.remove(self.path(newest, manifest.sha256file_name(
            newest.service_metadata)))
        logs = self.useFixture(fixtures.FakeLogger(
            name='cinder_chunked_ext.engine.restore_delta'))
        result = self.restore_over(newest, self.existing_volume(original))
        self.assertEqual(data, result)
        self.assertIn('writes every object', logs.output)
        self.assertIn('sha256file', logs.output)
        self.assertEqual(list(range(len(data) // SHA)),
                         self.written_blocks())

    def test_too_many_hash_blocks_every_object_written(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'MAX_BLOCK_HASHES', len(data) // SHA - 1))
        logs = self.useFixture(fixtures.FakeLogger(
            name='cinder_chunked_ext.engine.restore_delta'))
        result = self.restore_over(chain['newest'],
                                   self.existing_volume(original))
        self.assertEqual(data, result)
        self.assertIn('too many hash blocks', logs.output)
        self.assertEqual(list(range(len(data) // SHA)),
                         self.written_blocks())

    def test_volume_smaller_than_backup_not_compared(self):
        chain, data = self.make_chain()
        compare = self.useFixture(fixtures.MockPatchObject(
            restore_delta, '_differing_blocks')).mock
        path = self.existing_volume(data[:SHA])
        result = self.restore_over(chain['newest'], path)
        self.assertEqual(data, result)
        compare.assert_not_called()

    def test_cancel_while_volume_read_nothing_written(self):
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        newest = chain['newest']
        self.useFixture(fixtures.MockPatchObject(restore_delta,
                                                 'PROGRESS_EVERY', 1))
        real = restore_delta._compare
        calls = []

        def compare(*args):
            calls.append(args)
            if len(calls) == 2:
                newest.status = 'available'
            return real(*args)
        self.useFixture(fixtures.MockPatchObject(restore_delta, '_compare',
                                                 compare))
        path = self.existing_volume(original)
        self.assertRaises(exception.BackupRestoreCancel, self.restore_over,
                          newest, path)
        self.assertEqual([], self.writes)
        with open(path, 'rb') as f:
            self.assertEqual(original, f.read())

    def volume_of(self, backup, size):
        """The volume as ``backup`` holds it, restored onto a new one."""
        return self.restore_bytes(backup, size)

    def object_names(self, backup):
        """The names of ``backup``'s data objects (plain or sealed)."""
        return [n for n in self.files(backup)
                if n[len(backup.service_metadata):][:1] == '-']


class EncryptedRestoreChangedBlocksTestCase(RestoreChangedBlocksTestCase,
                                            enc.EncryptedDriverTestCase):
    """The same with every backup encrypted (aes-256-gcm).

    The sha256file is sealed: the comparison opens it with the backup's
    key, and the objects it leaves out are not even authenticated.
    """

    def test_rollback_reads_each_sha256file_once(self):
        # The check pass only authenticates sealed objects, so the write
        # pass checks their decrypted data by the block hashes, which it
        # reads again: the comparison and the check pass share one read.
        chain, data = self.make_chain()
        original = self.volume_of(chain['base'], len(data))
        read = self.useFixture(fixtures.MockPatchObject(
            self.driver, '_read_sha256file',
            wraps=self.driver._read_sha256file)).mock
        self.restore_over(chain['newest'], self.existing_volume(original))
        ids = [c.args[0]['id'] for c in read.call_args_list]
        self.assertEqual(2, ids.count(chain['newest'].id))
