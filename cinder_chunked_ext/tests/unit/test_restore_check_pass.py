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

"""The restore's check pass: every object proved before the first write.

Over an existing volume a damaged object anywhere in the chain (the last
object of the newest layer, the last of the full backup) leaves the
volume byte for byte as it was; a tampered encrypted object does so on
any volume.  Restoring a plain backup onto a new volume keeps a single
pass.
"""

import io

import ddt
import fixtures

from cinder_chunked_ext.engine import objects
from cinder_chunked_ext.engine import restore
from cinder_chunked_ext.engine import restore_check
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import sealed
from cinder_chunked_ext.tests.unit import test_chunked_backup as base
from cinder_chunked_ext.tests.unit import test_encrypted_backups as enc

CHUNK = base.CHUNK
SHA = base.SHA
MARK = b'\xee'


def _edit(data, start, end, seed):
    new = bytearray(data)
    new[start:end] = base.random_bytes(end - start, seed=seed)
    return bytes(new)


def _flip(stored):
    data = bytearray(stored)
    data[len(data) // 2] ^= 0x10
    return bytes(data)


def _truncate(stored):
    return stored[:len(stored) // 2]


class ChainMixin(object):
    """A chain of three backups whose layers each end in a data object."""

    def make_chain(self, driver=None):
        d0 = base.mixed_volume(chunks=4, tail=0)
        d0 = _edit(d0, 4 * CHUNK - SHA, 4 * CHUNK, 1)
        d1 = _edit(d0, SHA, 2 * SHA, 2)
        d2 = _edit(_edit(d1, 2 * CHUNK, 2 * CHUNK + SHA, 3),
                   4 * CHUNK - SHA, 4 * CHUNK, 4)
        full = self.make_backup(d0, driver=driver)
        inc1 = self.make_backup(d1, parent=full, driver=driver)
        inc2 = self.make_backup(d2, parent=inc1, driver=driver)
        return {'base': full, 'middle': inc1, 'newest': inc2}, d2

    def last_object(self, backup):
        names = [n for n in self.files(backup)
                 if n[len(backup.service_metadata):][:1] == '-']
        return max(names)

    def damage_last(self, backup, change):
        name = self.last_object(backup)
        self.write_file(backup, name, change(self.read_file(backup, name)))
        return name

    def restore_refused(self, backup, size, error, volume_is_new=False,
                        driver=None, fill=MARK):
        target = base.VolumeFile(io.BytesIO(fill * size))
        exc = self.assertRaises(error, self.restore, backup, target,
                                volume_is_new, driver)
        return exc, target


@ddt.ddt
class PlainCheckPassTestCase(ChainMixin, base.DriverTestCase):

    @ddt.data(*[(algo, layer, change)
                for algo in ('none', 'zlib', 'zstd')
                for layer in ('newest', 'base')
                for change in ('flip', 'truncate')])
    @ddt.unpack
    def test_restore_existing_last_object_damaged_volume_byte_identical(
            self, algo, layer, change):
        driver = self.make_driver(backup_compression_algorithm=algo)
        chain, data = self.make_chain(driver)
        name = self.damage_last(chain[layer],
                                _flip if change == 'flip' else _truncate)
        exc, target = self.restore_refused(chain['newest'], len(data),
                                           exception.InvalidBackup,
                                           driver=driver)
        self.assertIn(name, str(exc))
        self.assertIn(chain[layer].id, str(exc))
        self.assertEqual([], target.writes)
        self.assertEqual(MARK * len(data), target.getvalue())

    def test_restore_existing_undamaged_chain_identical_each_object_checked(
            self):
        chain, data = self.make_chain()
        checks = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object',
            wraps=restore_check.check_object)).mock
        result = self.restore_bytes(chain['newest'], len(data),
                                    volume_is_new=False, fill=MARK)
        self.assertEqual(data, result)
        count = sum(len(self.objects(b)) for b in chain.values())
        self.assertEqual(count, checks.call_count)

    def test_check_pass_small_objects_share_worker_tasks(self):
        # One worker task per object costs more than checking a small
        # one: consecutive small objects are checked by one task, and the
        # status is still read every few objects.
        chain, data = self.make_chain()
        tasks = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_batch',
            wraps=restore_check.check_batch)).mock
        checks = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object',
            wraps=restore_check.check_object)).mock
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'STATUS_EVERY', 2))
        status = self.useFixture(fixtures.MockPatchObject(
            restore, 'check_status', wraps=restore.check_status)).mock
        result = self.restore_bytes(chain['newest'], len(data),
                                    volume_is_new=False, fill=MARK)
        self.assertEqual(data, result)
        count = sum(len(self.objects(b)) for b in chain.values())
        self.assertEqual(count, checks.call_count)
        self.assertLess(tasks.call_count, count)
        self.assertGreaterEqual(status.call_count, count // 3)

    def test_restore_new_plain_single_pass_no_check(self):
        chain, data = self.make_chain()
        checks = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object')).mock
        self.assertEqual(data, self.restore_bytes(chain['newest'],
                                                  len(data)))
        self.assertEqual(0, checks.call_count)

    def test_restore_new_chain_checked_by_block_hashes_no_md5(self):
        # Onto a new volume the decoded data of each object is checked
        # against its backup's sha256file (SHA-256 of each hash block,
        # a zero test for zero blocks) instead of the metadata's MD5.
        chain, data = self.make_chain()
        md5 = self.useFixture(fixtures.MockPatchObject(
            objects.hashlib, 'md5', wraps=objects.hashlib.md5)).mock
        block_checks = self.useFixture(fixtures.MockPatchObject(
            objects.BlockCheck, 'matched', autospec=True,
            side_effect=objects.BlockCheck.matched)).mock
        self.assertEqual(data, self.restore_bytes(chain['newest'],
                                                  len(data)))
        self.assertEqual(0, md5.call_count)
        self.assertGreater(block_checks.call_count, 0)

    def test_restore_new_damaged_sha256file_md5_decides_restored(self):
        chain, data = self.make_chain()
        for backup in chain.values():
            self._damage_sha256file(backup)
        md5 = self.useFixture(fixtures.MockPatchObject(
            objects.hashlib, 'md5', wraps=objects.hashlib.md5)).mock
        self.assertEqual(data, self.restore_bytes(chain['newest'],
                                                  len(data)))
        self.assertGreaterEqual(md5.call_count, len(chain))

    @ddt.data('none', 'zlib')
    def test_restore_new_damaged_object_refused_naming_it(self, algo):
        driver = self.make_driver(backup_compression_algorithm=algo)
        chain, data = self.make_chain(driver)
        name = self.damage_last(chain['middle'], _flip)
        exc, _target = self.restore_refused(
            chain['newest'], len(data), exception.InvalidBackup,
            volume_is_new=True, driver=driver, fill=b'\0')
        self.assertIn(name, str(exc))

    def assert_restored_by_md5_without_hashes(self, chain, data):
        """Restore ``chain`` onto a new volume: MD5s, no sha256file read."""
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'MAX_BLOCK_HASHES', 1))
        md5 = self.useFixture(fixtures.MockPatchObject(
            objects.hashlib, 'md5', wraps=objects.hashlib.md5)).mock
        reads = self.useFixture(fixtures.MockPatchObject(
            self.driver, '_read_sha256file',
            wraps=self.driver._read_sha256file)).mock
        self.assertEqual(data, self.restore_bytes(chain['newest'],
                                                  len(data)))
        self.assertGreater(md5.call_count, 0)
        self.assertEqual(0, reads.call_count)

    def test_restore_new_large_volume_md5_not_block_hashes(self):
        # The hashes of a large volume would cost more memory than a
        # restore may hold: its objects are checked by their MD5.
        chain, data = self.make_chain()
        self.assert_restored_by_md5_without_hashes(chain, data)

    def test_restore_new_unknown_size_large_sha256file_md5(self):
        # A record without a size (found in a repository) is bounded by
        # the stored size of its sha256file instead.
        chain, data = self.make_chain()
        for backup in chain.values():
            backup.size = None
        self.assert_restored_by_md5_without_hashes(chain, data)

    def test_restore_existing_undamaged_chain_no_md5(self):
        # The check pass compares block hashes (the sha256file), the
        # write pass proves it reads the checked bytes by their CRC-32:
        # nothing is hashed with MD5.
        chain, data = self.make_chain()
        real = objects.decoded_pieces
        crcs = []

        def spy(*args, **kwargs):
            crcs.append(kwargs.get('stored_crc'))
            return real(*args, **kwargs)
        self.useFixture(fixtures.MockPatchObject(
            objects, 'decoded_pieces', side_effect=spy))
        md5 = self.useFixture(fixtures.MockPatchObject(
            objects.hashlib, 'md5', wraps=objects.hashlib.md5)).mock
        checks = self.useFixture(fixtures.MockPatchObject(
            objects, 'check_stored', wraps=objects.check_stored)).mock
        result = self.restore_bytes(chain['newest'], len(data),
                                    volume_is_new=False, fill=MARK)
        self.assertEqual(data, result)
        self.assertTrue(crcs)
        self.assertNotIn(None, crcs)
        self.assertGreater(checks.call_count, 0)
        self.assertEqual(0, md5.call_count)

    def _damage_sha256file(self, backup):
        name = backup.service_metadata + '_sha256file'
        doc = self.read_file(backup, name)
        sha = self.sha256s(backup)[-1].encode()
        flipped = bytes([sha[0] ^ 0x01]) + sha[1:]
        self.write_file(backup, name, doc.replace(sha, flipped))

    def test_restore_existing_damaged_sha256file_md5_decides_restored(self):
        chain, data = self.make_chain()
        for backup in chain.values():
            self._damage_sha256file(backup)
        md5 = self.useFixture(fixtures.MockPatchObject(
            objects.hashlib, 'md5', wraps=objects.hashlib.md5)).mock
        result = self.restore_bytes(chain['newest'], len(data),
                                    volume_is_new=False, fill=MARK)
        self.assertEqual(data, result)
        self.assertGreaterEqual(md5.call_count, len(chain))

    def test_restore_existing_damaged_object_and_sha256file_refused(self):
        chain, data = self.make_chain()
        self._damage_sha256file(chain['newest'])
        self.damage_last(chain['newest'], _flip)
        exc, target = self.restore_refused(chain['newest'], len(data),
                                           exception.InvalidBackup)
        self.assertIn(self.last_object(chain['newest']), str(exc))
        self.assertEqual([], target.writes)

    def test_restore_existing_unreadable_sha256file_md5_checked(self):
        chain, data = self.make_chain()
        backup = chain['base']
        self.write_file(backup, backup.service_metadata + '_sha256file',
                        b'not json')
        self.damage_last(backup, _truncate)
        _exc, target = self.restore_refused(chain['newest'], len(data),
                                            exception.CorruptBackup)
        self.assertEqual([], target.writes)

    def test_restore_existing_object_changed_after_check_refused(self):
        driver = self.make_driver(backup_compression_algorithm='none')
        chain, data = self.make_chain(driver)
        real = restore_check.check_chain
        damaged = []

        def check_then_damage(*args, **kwargs):
            checked = real(*args, **kwargs)
            damaged.append(self.damage_last(chain['newest'], _flip))
            return checked
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_chain', side_effect=check_then_damage))
        exc, target = self.restore_refused(chain['newest'], len(data),
                                           exception.CorruptBackup,
                                           driver=driver)
        self.assertIn(damaged[0], str(exc))
        self.assertIn('changed since it was checked', str(exc))
        # The layers below were written; none of the changed object.
        self.assertNotEqual(data[4 * CHUNK - SHA:],
                            target.getvalue()[4 * CHUNK - SHA:])

    def test_restore_existing_check_raises_base_exception_reaches_caller(
            self):
        class Stop(BaseException):
            pass
        chain, data = self.make_chain()
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object', side_effect=Stop()))
        _exc, target = self.restore_refused(chain['newest'], len(data), Stop)
        self.assertEqual([], target.writes)

    def test_restore_existing_verification_disabled_no_check_pass(self):
        self.conf.config(verify_checksums_on_restore=False,
                         group='chunked_backup')
        driver = self.make_driver()
        chain, data = self.make_chain(driver)
        checks = self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_object')).mock
        self.assertEqual(data, self.restore_bytes(
            chain['newest'], len(data), volume_is_new=False, fill=MARK,
            driver=driver))
        self.assertEqual(0, checks.call_count)


@ddt.ddt
class EncryptedCheckPassTestCase(ChainMixin, enc.EncryptedDriverTestCase):

    @ddt.data(*[(layer, new, codec) for layer in ('newest', 'base')
                for new in (True, False) for codec in ('zlib', 'none')])
    @ddt.unpack
    def test_restore_tampered_object_refused_volume_untouched(
            self, layer, volume_is_new, codec):
        driver = self.make_driver(backup_compression_algorithm=codec)
        chain, data = self.make_chain(driver)
        name = self.damage_last(chain[layer], _flip)
        exc, target = self.restore_refused(
            chain['newest'], len(data), exception.ObjectAuthenticationFailed,
            volume_is_new=volume_is_new, driver=self.make_driver())
        self.assertIn(name, str(exc))
        self.assertEqual([], target.writes)
        self.assertEqual(MARK * len(data), target.getvalue())

    @ddt.data(True, False)
    def test_restore_encrypted_check_authenticates_without_decoding(
            self, volume_is_new):
        chain, data = self.make_chain()
        auth = self.useFixture(fixtures.MockPatchObject(
            sealed.OpeningReader, 'authenticate', autospec=True,
            side_effect=sealed.OpeningReader.authenticate)).mock
        plain_checks = self.useFixture(fixtures.MockPatchObject(
            objects, 'check_stored')).mock
        result = self.restore_bytes(
            chain['newest'], len(data), volume_is_new=volume_is_new,
            fill=b'\0' if volume_is_new else MARK, driver=self.make_driver())
        self.assertEqual(data, result)
        count = sum(len(self.files(b)) - 2 for b in chain.values())
        self.assertEqual(count, auth.call_count)
        self.assertEqual(0, plain_checks.call_count)
