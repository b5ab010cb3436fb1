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

"""Tests of the chunked engine's restores, through the POSIX driver."""

import bz2
import dataclasses
import io
import json
import os
from unittest import mock
import zlib

import ddt
import fixtures
import zstandard

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import restore as restore_path
from cinder_chunked_ext.engine import restore_check
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests.unit import test_chunked_backup as base

CHUNK = base.CHUNK
SHA = base.SHA
MiB = base.MiB
GiB = base.GiB
MARK = b'\xee'

mixed_volume = base.mixed_volume
random_bytes = base.random_bytes
text_bytes = base.text_bytes
md5 = base.md5
VolumeFile = base.VolumeFile


def _edit(data, start, end, value=None):
    new = bytearray(data)
    new[start:end] = (random_bytes(end - start, seed=start)
                      if value is None else value * (end - start))
    return bytes(new)


@ddt.ddt
class RestoreTestCase(base.DriverTestCase):

    @ddt.data('none', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd')
    def test_restore_full_new_and_existing_volume_identical(self, algo):
        driver = self.make_driver(backup_compression_algorithm=algo)
        data = mixed_volume(chunks=5, tail=123)
        backup = self.make_backup(data, driver=driver)
        self.assertEqual(data, self.restore_bytes(backup, len(data)))
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False,
                                                  fill=b'\x55'))

    def _chain(self):
        """Full, incremental, incremental: returns backups and volumes."""
        d0 = mixed_volume(chunks=6)
        d1 = _edit(_edit(d0, SHA, 3 * SHA), 4 * CHUNK, 4 * CHUNK + 10)
        d2 = _edit(_edit(d1, 2 * CHUNK - SHA, 2 * CHUNK + SHA),
                   5 * CHUNK, 6 * CHUNK, b'\0')
        full = self.make_backup(d0)
        inc1 = self.make_backup(d1, parent=full)
        inc2 = self.make_backup(d2, parent=inc1)
        return [(full, d0), (inc1, d1), (inc2, d2)]

    def test_restore_chain_each_level_new_and_existing_identical(self):
        for backup, data in self._chain():
            self.assertEqual(data, self.restore_bytes(backup, len(data)))
            self.assertEqual(data, self.restore_bytes(
                backup, len(data), volume_is_new=False, fill=b'\x55'))

    def test_restore_chain_layers_in_order_base_first(self):
        chain = self._chain()
        order = []
        real = self.driver._restore_v1

        def spy(layer, *args, **kwargs):
            order.append(layer.id)
            return real(layer, *args, **kwargs)
        self.useFixture(fixtures.MockPatchObject(self.driver, '_restore_v1',
                                                 side_effect=spy))
        self.restore_bytes(chain[2][0], len(chain[2][1]))
        self.assertEqual([b.id for b, _d in chain], order)

    def test_restore_upstream_written_repository_identical(self):
        # Objects as upstream writes them: whole-chunk one-shot
        # compression, and raw data when it does not shrink.
        chunks = [text_bytes(CHUNK, 1), text_bytes(CHUNK, 2),
                  text_bytes(CHUNK, 3), random_bytes(CHUNK), b'tail' * 10]
        codecs = [('zlib', zlib.compress), ('bz2', bz2.compress),
                  ('zstd', zstandard.ZstdCompressor().compress),
                  ('none', bytes), ('gzip', zlib.compress)]
        backup = self.env.new_backup(
            container='up/st/ream', status='available',
            service_metadata='volume_v_20260101000000_backup_b')
        self.driver.put_container(backup.container)
        entries = []
        offset = 0
        for n, (data, (algo, func)) in enumerate(zip(chunks, codecs), 1):
            name = '%s-%05d' % (backup.service_metadata, n)
            self.write_file(backup, name, func(data))
            entries.append({name: {'offset': offset, 'length': len(data),
                                   'compression': algo, 'md5': md5(data)}})
            offset += len(data)
        self.write_metadata(backup, {
            'version': '1.0.0', 'backup_id': backup.id,
            'volume_id': backup.volume_id, 'backup_name': None,
            'backup_description': None, 'created_at': 'x',
            'objects': entries, 'parent_id': None, 'volume_meta': None})
        volume = b''.join(chunks)
        self.assertEqual(volume, self.restore_bytes(backup, len(volume)))

    def _count_syncs(self, backup, data):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'vol')
        with open(path, 'wb') as f:
            f.truncate(len(data))
        fsync = self.useFixture(fixtures.MockPatchObject(
            volume_io.os, 'fsync', wraps=os.fsync)).mock
        with open(path, 'r+b') as f:
            target = VolumeFile(f)
            self.restore(backup, target)
            flushes = target.flushes
        with open(path, 'rb') as f:
            self.assertEqual(data, f.read())
        return flushes, fsync.call_count

    def test_restore_flush_per_object_sync_once_per_layer(self):
        chain = self._chain()
        backup, data = chain[2]
        count = sum(len(self.objects(b)) for b, _d in chain)
        self.assertGreater(count, len(chain))
        self.assertEqual((count, len(chain)),
                         self._count_syncs(backup, data))

    def test_restore_objects_written_and_flushed_in_batched_hand_overs(self):
        # Each hand-over to a worker thread is a round trip through the
        # hub under eventlet (about 80 us of CPU): an object's writes and
        # its flush go together, and small objects fetched together are
        # written together.
        chain = self._chain()
        backup, data = chain[2]
        count = sum(len(self.objects(b)) for b, _d in chain)
        execute = self.useFixture(fixtures.MockPatchObject(
            restore_path.concurrency, 'execute',
            wraps=restore_path.concurrency.execute)).mock
        self.assertEqual(data, self.restore_bytes(backup, len(data)))
        writes = [c for c in execute.call_args_list
                  if getattr(c.args[0], '__name__', '') in (
                      'write_at', 'write_skipping_zeros', 'flush',
                      'flush_and_sync', '_write_pieces', '_write_and_flush')]
        self.assertEqual({'_write_and_flush'},
                         {c.args[0].__name__ for c in writes})
        self.assertGreaterEqual(len(writes), len(chain))
        self.assertLess(len(writes), count)

    def test_restore_documents_parsed_on_worker_threads(self):
        # A large volume's sha256file is tens of MB of JSON: parsing it
        # on the green thread would stall every operation of the service.
        chain = self._chain()
        backup, data = chain[2]
        execute = self.useFixture(fixtures.MockPatchObject(
            chunked.concurrency, 'execute',
            wraps=chunked.concurrency.execute)).mock
        self.assertEqual(data, self.restore_bytes(backup, len(data)))
        parsed = {getattr(c.args[0], '__qualname__', '')
                  for c in execute.call_args_list}
        self.assertIn('BackupMetadata.from_json', parsed)
        self.assertIn('Sha256File.from_json', parsed)

    def test_restore_sync_bytes_bound_sync_within_layer(self):
        chain = self._chain()
        backup, data = chain[2]
        # A bound smaller than any object: a sync after every object
        # that wrote something, and one at the end of each layer.
        self.useFixture(fixtures.MockPatchObject(restore_path, 'SYNC_BYTES',
                                                 1))
        count = sum(len(self.objects(b)) for b, _d in chain)
        flushes, fsyncs = self._count_syncs(backup, data)
        self.assertEqual(count, flushes)
        self.assertGreater(fsyncs, len(chain))

    def test_restore_volume_metadata_put_per_layer_last_wins(self):
        self.env.volume_metadata['vol'] = '{"layer": 0}'
        full = self.make_backup(text_bytes(CHUNK), volume_id='vol')
        self.env.volume_metadata['vol'] = '{"layer": 1}'
        inc = self.make_backup(text_bytes(CHUNK), parent=full)
        puts = []
        self.useFixture(fixtures.MockPatchObject(
            self.env, 'put_volume_metadata',
            side_effect=lambda vid, meta: puts.append((vid, meta))))
        self.restore_bytes(inc, CHUNK)
        self.assertEqual([('vol', '{"layer": 0}'), ('vol', '{"layer": 1}')],
                         puts)

    def test_restore_volume_metadata_incompatible_operation_error(self):
        self.env.volume_metadata['vol'] = '{"version": 99}'
        backup = self.make_backup(text_bytes(CHUNK), volume_id='vol')
        self.useFixture(fixtures.MockPatchObject(
            self.env, 'put_volume_metadata',
            side_effect=exception.BackupMetadataUnsupportedVersion()))
        self.assertRaises(exception.BackupOperationError,
                          self.restore_bytes, backup, CHUNK)


class SparseRestoreTestCase(base.DriverTestCase):
    """All-zero MiB of the base layer are skipped on a new volume only."""

    def setUp(self):
        super().setUp()
        # Objects and pieces of several MiB, so that 1 MiB is the
        # granularity of the zero test.
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 4 * MiB))
        self.driver = self.make_driver(backup_file_size=2 * MiB)
        self.data = b''.join([text_bytes(MiB, 1), bytes(MiB), bytes(MiB),
                              text_bytes(MiB - 256 * 1024, 2),
                              bytes(256 * 1024)])

    def test_restore_new_volume_zero_mib_of_base_skipped(self):
        backup = self.make_backup(self.data)
        target = VolumeFile(io.BytesIO(MARK * len(self.data)))
        self.restore(backup, target)
        self.assertFalse(target.written(MiB, 3 * MiB))
        self.assertTrue(target.written(0, MiB))
        # The last MiB holds data: written whole, zeros included.
        self.assertTrue(target.written(4 * MiB - 1, 4 * MiB))
        result = target.getvalue()
        self.assertEqual(MARK * 2 * MiB, result[MiB:3 * MiB])
        self.assertEqual(self.data[:MiB], result[:MiB])
        self.assertEqual(self.data[3 * MiB:], result[3 * MiB:])

    def test_restore_existing_volume_zero_mib_written(self):
        backup = self.make_backup(self.data)
        target = VolumeFile(io.BytesIO(MARK * len(self.data)))
        self.restore(backup, target, volume_is_new=False)
        self.assertTrue(target.written(MiB, 3 * MiB))
        self.assertEqual(self.data, target.getvalue())

    def test_restore_new_volume_incremental_zeroed_region_zeros(self):
        # The seed skipped zero MiB in every layer, so a region that an
        # incremental backup zeroed kept the base layer's bytes.
        full = self.make_backup(self.data)
        zeroed = bytes(MiB) + self.data[MiB:]
        inc = self.make_backup(zeroed, parent=full)
        self.assertEqual([(0, MiB)], [(f['offset'], f['length'])
                                      for _n, f in self.objects(inc)])
        target = VolumeFile(io.BytesIO(bytes(len(zeroed))))
        self.restore(inc, target)
        # Written twice: the base layer's data, then the incremental
        # layer's zeros, which are not skipped.
        self.assertEqual([(0, MiB), (0, MiB)],
                         [w for w in target.writes if w[0] < MiB])
        self.assertEqual(bytes(MiB), target.getvalue()[:MiB])
        self.assertEqual(zeroed, target.getvalue())

    def test_restore_seed_behaviour_detected_by_region_check(self):
        # Proof that the test above can fail: skipping zeros in every
        # layer, as the seed did, leaves the stale base bytes.
        full = self.make_backup(self.data)
        zeroed = bytes(MiB) + self.data[MiB:]
        inc = self.make_backup(zeroed, parent=full)
        real = self.driver._restore_v1

        def every_layer_sparse(layer, volume_id, meta, volume_file,
                               volume_is_new, requested, **kwargs):
            return real(layer, volume_id, meta, volume_file, True,
                        requested, **kwargs)
        self.useFixture(fixtures.MockPatchObject(
            self.driver, '_restore_v1', side_effect=every_layer_sparse))
        result = self.restore_bytes(inc, len(zeroed))
        self.assertEqual(self.data[:MiB], result[:MiB])
        self.assertNotEqual(zeroed, result)


class CancelRestoreTestCase(base.DriverTestCase):

    def test_restore_status_changed_cancel_after_current_object(self):
        data = text_bytes(4 * CHUNK)
        backup = self.make_backup(data)

        def on_write(offset, length):
            self.env.status_override[backup.id] = 'available'
        target = VolumeFile(io.BytesIO(bytes(len(data))), on_write=on_write)
        self.assertRaises(exception.BackupRestoreCancel, self.restore,
                          backup, target)
        self.assertTrue(target.written(0, CHUNK))
        self.assertFalse(target.written(CHUNK, 4 * CHUNK))

    def test_restore_chain_requested_status_checked_in_base_layer(self):
        data = text_bytes(3 * CHUNK)
        full = self.make_backup(data)
        inc = self.make_backup(_edit(data, 0, SHA), parent=full)

        def on_write(offset, length):
            self.env.status_override[inc.id] = 'error'
        target = VolumeFile(io.BytesIO(bytes(len(data))), on_write=on_write)
        exc = self.assertRaises(exception.BackupRestoreCancel, self.restore,
                                inc, target)
        self.assertIn(inc.volume_id, str(exc))
        self.assertFalse(target.written(CHUNK, 3 * CHUNK))


@ddt.ddt
class VerifyRestoreTestCase(base.DriverTestCase):
    """Damaged objects are found before their data reaches the volume."""

    def _damage(self, backup, n, change):
        name, fields = self.objects(backup)[n]
        stored = self.read_file(backup, name)
        self.write_file(backup, name, change(stored))
        return name, fields

    def _restore_damaged(self, backup, size, error=exception.CorruptBackup):
        target = VolumeFile(io.BytesIO(MARK * size))
        exc = self.assertRaises(error, self.restore, backup, target,
                                volume_is_new=False)
        return exc, target

    @staticmethod
    def _flip(index, mask=0x01):
        def change(stored):
            data = bytearray(stored)
            data[index] ^= mask
            return bytes(data)
        return change

    def _two_pass(self):
        # Objects larger than half of max_bytes_in_flight are verified
        # in a first pass, then read again and written.
        self.driver.settings = dataclasses.replace(
            self.driver.settings, max_bytes_in_flight=CHUNK // 2)

    @ddt.data(False, True)
    def test_restore_raw_byte_flipped_checksum_mismatch_nothing_written(
            self, two_pass):
        if two_pass:
            self._two_pass()
        data = random_bytes(3 * CHUNK)
        backup = self.make_backup(data)
        name, fields = self._damage(backup, 1, self._flip(CHUNK // 2))
        self.assertEqual('none', fields['compression'])
        exc, target = self._restore_damaged(backup, len(data),
                                            exception.ChecksumMismatch)
        self.assertIn(backup.id, str(exc))
        self.assertIn(name, str(exc))
        self.assertIn(fields['md5'], str(exc))
        self.assertIsInstance(exc, exception.InvalidBackup)
        # Every object is checked before the first write: the object
        # before the damaged one is not written either.
        self.assertEqual([], target.writes)
        self.assertEqual(MARK * len(data), target.getvalue())

    def test_streamed_verify_pass_writes_nothing_of_damaged_object(self):
        # Without a check pass (none proved the objects), an object too
        # large to hold is verified in a pass of its own, then written:
        # the verifying pass must not write.
        self._two_pass()
        self.useFixture(fixtures.MockPatchObject(
            restore_check, 'check_chain', return_value={}))
        data = random_bytes(3 * CHUNK)
        backup = self.make_backup(data)
        name, fields = self._damage(backup, 1, self._flip(CHUNK // 2))
        self.assertEqual(CHUNK, fields['offset'])
        exc, target = self._restore_damaged(backup, len(data),
                                            exception.ChecksumMismatch)
        self.assertIn(name, str(exc))
        self.assertEqual(MARK * (2 * CHUNK), target.getvalue()[CHUNK:])
        # The object before it was verified, then written; nothing else.
        self.assertEqual(data[:CHUNK], target.getvalue()[:CHUNK])
        self.assertEqual(CHUNK, max(offset + length
                                    for offset, length in target.writes))

    def test_restore_verification_disabled_damaged_data_written(self):
        driver = self.make_driver()
        self.conf.config(verify_checksums_on_restore=False,
                         group=chunked.PIPELINE_GROUP)
        unverified = self.make_driver()
        data = random_bytes(2 * CHUNK)
        backup = self.make_backup(data, driver=driver)
        self._damage(backup, 0, self._flip(10))
        result = self.restore_bytes(backup, len(data), driver=unverified)
        self.assertEqual(data[10] ^ 0x01, result[10])
        self.assertEqual(data[11:], result[11:])

    @ddt.data(('none', False), ('zlib', False), ('bz2', False),
              ('zstd', False), ('none', True), ('zlib', True))
    @ddt.unpack
    def test_restore_truncated_object_corrupt_naming_it(self, algo,
                                                        two_pass):
        driver = self.make_driver(backup_compression_algorithm=algo)
        if two_pass:
            driver.settings = dataclasses.replace(
                driver.settings, max_bytes_in_flight=CHUNK // 2)
        data = text_bytes(3 * CHUNK)
        backup = self.make_backup(data, driver=driver)
        name, fields = self._damage(backup, 2,
                                    lambda stored: stored[:len(stored) // 2])
        self.assertEqual(algo, fields['compression'])
        target = VolumeFile(io.BytesIO(MARK * len(data)))
        exc = self.assertRaises(exception.CorruptBackup, self.restore,
                                backup, target, False, driver)
        self.assertIn(name, str(exc))
        self.assertEqual([], target.writes)
        self.assertEqual(MARK * len(data), target.getvalue())

    def test_restore_raw_object_too_long_corrupt(self):
        data = random_bytes(2 * CHUNK)
        backup = self.make_backup(data)
        name, _f = self._damage(backup, 0, lambda stored: stored + b'x')
        exc, target = self._restore_damaged(backup, len(data))
        self.assertIn(name, str(exc))
        self.assertIn('more than', str(exc))
        self.assertEqual([], target.writes)

    @ddt.data(('zlib', -1), ('zstd', -1),
              *[(algo, where) for algo in ('zlib', 'bz2', 'zstd')
                for where in (0.1, 0.5, 0.9)])
    @ddt.unpack
    def test_restore_compressed_bit_flipped_corrupt_nothing_written(
            self, algo, where):
        driver = self.make_driver(backup_compression_algorithm=algo)
        data = text_bytes(2 * CHUNK)
        backup = self.make_backup(data, driver=driver)
        stored = self.read_file(backup, self.objects(backup)[0][0])
        index = int(len(stored) * where) if where >= 0 else len(stored) - 1
        # A flipped bit that decodes to the same data (deflate's padding
        # and unused code lengths) damages nothing: take the first one
        # from ``index`` on that changes what upstream would decode.
        decode = {'zlib': zlib.decompress, 'bz2': bz2.decompress,
                  'zstd': zstandard.ZstdDecompressor().decompress}[algo]
        while index < len(stored):
            try:
                if decode(self._flip(index, 0x10)(stored)) != data[:CHUNK]:
                    break
            except Exception:
                break
            index += 1
        self.assertLess(index, len(stored))
        name, fields = self._damage(backup, 0, self._flip(index, 0x10))
        self.assertEqual(algo, fields['compression'])
        exc, target = self._restore_damaged(backup, len(data))
        self.assertIn(name, str(exc))
        self.assertIn(backup.id, str(exc))
        self.assertEqual([], target.writes)

    def test_restore_zstd_garbage_corrupt_naming_object(self):
        driver = self.make_driver(backup_compression_algorithm='zstd')
        data = text_bytes(2 * CHUNK)
        backup = self.make_backup(data, driver=driver)
        name, _f = self._damage(backup, 1, lambda stored: b'\0' * 100)
        exc, target = self._restore_damaged(backup, len(data))
        self.assertIn(name, str(exc))
        self.assertFalse(target.written(CHUNK, 2 * CHUNK))


class CheckBeforeWriteTestCase(base.DriverTestCase):
    """Metadata the format does not allow is refused before any write."""

    def _backup(self, chunks=3):
        self.data = text_bytes(chunks * CHUNK)
        return self.make_backup(self.data)

    def _rewrite(self, backup, change):
        doc = self.metadata(backup)
        change(doc, [next(iter(entry.values())) for entry in doc['objects']])
        self.write_metadata(backup, doc)

    def _refused(self, backup, error=exception.CorruptBackup):
        target = VolumeFile(io.BytesIO(MARK * len(self.data)))
        exc = self.assertRaises(error, self.restore, backup, target,
                                volume_is_new=False)
        self.assertEqual([], target.writes)
        self.assertEqual(MARK * len(self.data), target.getvalue())
        return exc

    def test_restore_unknown_metadata_version_unsupported(self):
        backup = self._backup()
        self._rewrite(backup, lambda doc, objs: doc.update(version='1.0.1'))
        exc = self._refused(backup, exception.UnsupportedBackupVersion)
        self.assertIsInstance(exc, exception.InvalidBackup)
        self.assertIn('1.0.1', str(exc))

    def test_restore_object_beyond_volume_size_corrupt(self):
        backup = self._backup()

        def change(doc, objs):
            objs[1]['offset'] = GiB - 10
        self._rewrite(backup, change)
        exc = self._refused(backup)
        self.assertIn('beyond', str(exc))
        self.assertIn(backup.id, str(exc))

    def test_restore_offset_far_beyond_volume_corrupt(self):
        backup = self._backup()
        self._rewrite(backup,
                      lambda doc, objs: objs[2].update(offset=2 ** 50))
        self._refused(backup)

    def test_restore_length_beyond_volume_corrupt(self):
        backup = self._backup()
        self._rewrite(backup,
                      lambda doc, objs: objs[2].update(length=GiB))
        self._refused(backup)

    def test_restore_overlapping_objects_corrupt(self):
        backup = self._backup()
        self._rewrite(backup,
                      lambda doc, objs: objs[1].update(offset=CHUNK - 1))
        exc = self._refused(backup)
        self.assertIn('overlaps', str(exc))

    def test_restore_negative_offset_corrupt(self):
        backup = self._backup()
        self._rewrite(backup, lambda doc, objs: objs[0].update(offset=-1))
        self._refused(backup)

    def test_restore_foreign_object_name_corrupt(self):
        backup = self._backup()

        def change(doc, objs):
            entry = doc['objects'][1]
            name = next(iter(entry))
            doc['objects'][1] = {'../../etc/passwd': entry[name]}
        self._rewrite(backup, change)
        exc = self._refused(backup)
        self.assertIn('../../etc/passwd', str(exc))

    def test_restore_other_backups_object_name_corrupt(self):
        backup = self._backup()
        other = self.make_backup(text_bytes(CHUNK), container='shared')

        def change(doc, objs):
            entry = doc['objects'][0]
            doc['objects'][0] = {other.service_metadata + '-00001':
                                 next(iter(entry.values()))}
        self._rewrite(backup, change)
        self._refused(backup)

    def test_restore_unexpected_object_invalid_naming_it(self):
        backup = self._backup()
        stray = backup.service_metadata + '-00042'
        self.write_file(backup, stray, b'stray')
        exc = self._refused(backup, exception.InvalidBackup)
        self.assertIn(stray, str(exc))

    def test_restore_missing_object_invalid_naming_it(self):
        backup = self._backup()
        name = self.objects(backup)[2][0]
        os.remove(self.path(backup, name))
        exc = self._refused(backup, exception.InvalidBackup)
        self.assertIn(name, str(exc))

    def test_restore_metadata_not_json_corrupt(self):
        backup = self._backup()
        self.write_file(backup, backup.service_metadata + '_metadata',
                        b'{"version": "1.0.0", "objects": [')
        self._refused(backup)

    def test_restore_parent_cycle_corrupt(self):
        full = self._backup()
        inc = self.make_backup(_edit(self.data, 0, SHA), parent=full)
        full.parent_id = inc.id
        exc = self._refused(inc)
        self.assertIn('loops', str(exc))

    def test_restore_self_parent_corrupt(self):
        full = self._backup()
        full.parent_id = full.id
        self._refused(full)

    def test_restore_chain_hostile_incremental_nothing_written(self):
        full = self._backup()
        inc = self.make_backup(_edit(self.data, 0, SHA), parent=full)
        self._rewrite(inc, lambda doc, objs: objs[0].update(offset=2 * GiB))
        self._refused(inc)

    def test_restore_chain_incremental_missing_object_nothing_written(self):
        full = self._backup()
        inc = self.make_backup(_edit(self.data, 0, SHA), parent=full)
        os.remove(self.path(inc, self.objects(inc)[0][0]))
        self._refused(inc, exception.InvalidBackup)

    def test_restore_chain_parent_unknown_version_nothing_written(self):
        full = self._backup()
        inc = self.make_backup(_edit(self.data, 0, SHA), parent=full)
        self._rewrite(full, lambda doc, objs: doc.update(version='9'))
        self._refused(inc, exception.UnsupportedBackupVersion)

    def test_restore_metadata_read_before_status_objects_intact(self):
        # The check is of the documents only: a good backup still
        # restores after a refused one.
        backup = self._backup()
        doc = self.metadata(backup)
        self._rewrite(backup, lambda d, objs: objs[0].update(offset=-5))
        self._refused(backup)
        self.write_metadata(backup, doc)
        self.assertEqual(self.data, self.restore_bytes(backup,
                                                       len(self.data)))


class StandaloneEnvironmentTestCase(base.DriverTestCase):

    def test_restore_other_driver_instance_same_repository(self):
        data = mixed_volume(chunks=3)
        backup = self.make_backup(data)
        other = self.make_driver()
        self.assertIsNot(other, self.driver)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=other))

    def test_restore_environment_from_context(self):
        self.assertIs(self.env, self.driver.env)
        env = fakes.FakeEnvironment()
        driver = base.posix.PosixBackupDriver(fakes.FakeContext(env),
                                              backup_path=self.repo)
        self.assertIs(env, driver.env)

    def test_restore_metadata_json_unchanged_by_restore(self):
        backup = self.make_backup(text_bytes(CHUNK))
        before = self.metadata(backup)
        self.restore_bytes(backup, CHUNK)
        self.assertEqual(before, self.metadata(backup))
        self.assertEqual(json.dumps(before, sort_keys=True, indent=2),
                         self.read_file(
                             backup,
                             backup.service_metadata + '_metadata').decode())

    def test_restore_reader_closed_after_each_object(self):
        data = text_bytes(3 * CHUNK)
        backup = self.make_backup(data)
        readers = []
        real = self.driver.store.open_reader

        def open_reader(container, name, extra_metadata=None):
            reader = real(container, name, extra_metadata)
            readers.append(reader)
            return reader
        self.useFixture(fixtures.MockPatchObject(
            self.driver.store, 'open_reader', side_effect=open_reader))
        self.restore_bytes(backup, len(data))
        # The metadata, the sha256file (its block hashes check the
        # objects) and three objects.
        self.assertEqual(5, len(readers))
        for reader in readers:
            self.assertTrue(reader._file.closed)

    def test_restore_object_list_through_driver_listing(self):
        backup = self.make_backup(text_bytes(CHUNK))
        with mock.patch.object(self.driver, 'get_container_entries',
                               wraps=self.driver.get_container_entries) as ls:
            self.restore_bytes(backup, CHUNK)
        ls.assert_called_with(backup.container, backup.service_metadata)
