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

"""Tests of the chunked engine's backups, through the POSIX driver.

:class:`DriverTestCase` (also used by the restore and concurrency tests)
sets a small geometry: 4 KiB hash blocks, 64 KiB objects and 16 KiB
pieces, so volumes of a few hundred KiB give several objects of several
pieces each.
"""

import bz2
import hashlib
import io
import json
import logging
import os
import random
import re
from unittest import mock
import zlib

import ddt
import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools
import zstandard

from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import backup as backup_path
from cinder_chunked_ext.engine import backup_records
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import notifications
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests import fakes

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SHA = 4 * KiB
CHUNK = 16 * SHA
PIECE = 4 * SHA


def random_bytes(size, seed=0):
    return random.Random(seed).randbytes(size)


def text_bytes(size, seed=0):
    """Compressible data that is not all zeros."""
    rnd = random.Random(seed)
    words = [b'cinder ', b'backup ', b'chunk ', b'volume\n', b'\x00' * 64]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words)
    return bytes(out[:size])


def mixed_volume(chunks=5, tail=1000, seed=0):
    """Chunks of text, random data and zeros, and a short last object."""
    kinds = [text_bytes, random_bytes, lambda size, seed: bytes(size)]
    parts = [kinds[i % 3](CHUNK, seed + i) for i in range(chunks)]
    parts.append(text_bytes(tail, seed + 99))
    return b''.join(parts)


def sha256_list(data, block=SHA):
    return [hashlib.sha256(data[off:off + block]).hexdigest()
            for off in range(0, len(data), block)]


def md5(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class VolumeFile(object):
    """A volume file that records what the driver does to it.

    Wraps a real file object; ``writes`` lists ``(offset, length)``,
    ``flushes`` counts flushes, and ``on_read`` / ``on_write`` hooks run
    before each read / write.
    """

    def __init__(self, wrapped, on_read=None, on_write=None):
        self._file = wrapped
        self.writes = []
        self.flushes = 0
        self.on_read = on_read
        self.on_write = on_write

    def read(self, size=-1):
        if self.on_read:
            self.on_read(self._file.tell(), size)
        return self._file.read(size)

    def write(self, data):
        if self.on_write:
            self.on_write(self._file.tell(), len(data))
        self.writes.append((self._file.tell(), len(data)))
        return self._file.write(data)

    def seek(self, offset, whence=os.SEEK_SET):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def flush(self):
        self.flushes += 1
        self._file.flush()

    def fileno(self):
        return self._file.fileno()

    def getvalue(self):
        return self._file.getvalue()

    def written(self, start, end):
        """True when any write touched ``[start, end)``."""
        return any(off < end and start < off + length
                   for off, length in self.writes)


class StreamOnly(object):
    """A volume that can only be read in order (a pipe, an RBD stream)."""

    def __init__(self, data):
        self._buf = io.BytesIO(data)

    def read(self, size=-1):
        return self._buf.read(size)


class FakeTime(object):
    """Stands in for the time module in chunked: each call is later."""

    def __init__(self, step=1000.0):
        self.now = 0.0
        self.step = step

    def monotonic(self):
        self.now += self.step
        return self.now


class DriverTestCase(testtools.TestCase):
    """A PosixBackupDriver on a temp dir, with small geometry."""

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(cfg.CONF))
        self.conf.config(backup_file_size=CHUNK,
                         backup_sha_block_size_bytes=SHA,
                         backup_compression_algorithm='zlib',
                         backup_create_containers=True,
                         backup_container=None,
                         backup_enable_progress_timer=True,
                         backup_timer_interval=120,
                         backup_object_number_per_notification=10)
        self.conf.config(workers=2, max_bytes_in_flight=8 * MiB,
                         verify_checksums_on_restore=True,
                         group=chunked.PIPELINE_GROUP)
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 PIECE))
        self.repo = self.useFixture(fixtures.TempDir()).path
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.driver = self.make_driver()

    def make_driver(self, **overrides):
        if overrides:
            self.conf.config(**overrides)
        return posix.PosixBackupDriver(self.context, backup_path=self.repo)

    def make_backup(self, data, parent=None, driver=None, volume_file=None,
                    volume_size_gib=None, **fields):
        """Back ``data`` up (incremental when ``parent``); return backup."""
        if parent is not None:
            fields.setdefault('parent_id', parent.id)
            fields.setdefault('volume_id', parent.volume_id)
            if volume_size_gib is None:
                volume_size_gib = parent.size
        backup = self.env.new_backup(volume_size_gib or 1, **fields)
        (driver or self.driver).backup(
            backup, volume_file if volume_file is not None
            else io.BytesIO(data))
        if backup.status == 'creating':
            backup.status = 'available'
        return backup

    def restore(self, backup, target, volume_is_new=True, driver=None):
        backup.status = 'restoring'
        (driver or self.driver).restore(backup, backup.volume_id, target,
                                        volume_is_new)
        return target

    def restore_bytes(self, backup, size, volume_is_new=True, fill=b'\0',
                      driver=None):
        target = VolumeFile(io.BytesIO(fill * size))
        self.restore(backup, target, volume_is_new, driver)
        return target.getvalue()

    # -- the repository on disk --------------------------------------------

    def path(self, backup, name=''):
        return os.path.join(self.repo, backup.container, name)

    def files(self, backup):
        """Names in the backup's directory that belong to the backup."""
        return sorted(n for n in os.listdir(self.path(backup))
                      if n.startswith(backup.service_metadata))

    def read_file(self, backup, name):
        with open(self.path(backup, name), 'rb') as f:
            return f.read()

    def write_file(self, backup, name, data):
        with open(self.path(backup, name), 'wb') as f:
            f.write(data)

    def metadata(self, backup):
        return json.loads(self.read_file(
            backup, manifest.metadata_name(backup.service_metadata)))

    def write_metadata(self, backup, doc):
        self.write_file(backup,
                        manifest.metadata_name(backup.service_metadata),
                        json.dumps(doc, sort_keys=True, indent=2).encode())

    def objects(self, backup):
        """``[(name, fields), ...]`` from the stored metadata."""
        return [next(iter(entry.items()))
                for entry in self.metadata(backup)['objects']]

    def sha256s(self, backup):
        return json.loads(self.read_file(
            backup, manifest.sha256file_name(backup.service_metadata))
        )['sha256s']


@ddt.ddt
class FullBackupTestCase(DriverTestCase):

    def test_backup_full_one_object_per_chunk(self):
        data = mixed_volume(chunks=5, tail=1000)
        backup = self.make_backup(data)
        prefix = backup.service_metadata
        names = ['%s-%05d' % (prefix, n) for n in range(1, 7)]
        self.assertEqual(names + [prefix + '_metadata',
                                  prefix + '_sha256file'],
                         self.files(backup))
        objects = self.objects(backup)
        self.assertEqual(names, [name for name, _f in objects])
        self.assertEqual([(i * CHUNK, CHUNK) for i in range(5)]
                         + [(5 * CHUNK, 1000)],
                         [(f['offset'], f['length']) for _n, f in objects])
        self.assertEqual(6, backup.object_count)
        self.assertEqual(6, self.env.saved[backup.id]['object_count'])

    def test_backup_names_container_and_prefix_as_upstream(self):
        backup = self.make_backup(text_bytes(CHUNK))
        bid = backup.id
        self.assertEqual('%s/%s/%s' % (bid[0:2], bid[2:4], bid),
                         backup.container)
        self.assertIsNotNone(re.fullmatch(
            r'volume_%s_\d{14}_backup_%s' % (backup.volume_id, bid),
            backup.service_metadata))
        self.assertEqual(backup.service_metadata,
                         self.env.saved[bid]['service_metadata'])

    def test_backup_sha256file_hashlib_per_block_exact_layout(self):
        data = mixed_volume(chunks=3, tail=SHA + 10)
        backup = self.make_backup(data, display_description='d')
        expected = {
            'version': '1.0.0',
            'backup_id': backup.id,
            'volume_id': backup.volume_id,
            'backup_name': 'test backup',
            'backup_description': 'd',
            'created_at': '2026-01-02 03:04:05+00:00',
            'chunk_size': SHA,
            'sha256s': sha256_list(data),
        }
        self.assertEqual(3 * 16 + 2, len(expected['sha256s']))
        self.assertEqual(
            json.dumps(expected, sort_keys=True, indent=2).encode('utf-8'),
            self.read_file(backup, manifest.sha256file_name(
                backup.service_metadata)))

    def test_backup_metadata_exact_layout(self):
        data = mixed_volume(chunks=4, tail=300)
        backup = self.make_backup(data)
        entries = []
        for n, offset in enumerate(range(0, len(data), CHUNK), 1):
            piece = data[offset:offset + CHUNK]
            shrinks = len(zlib.compress(piece)) < len(piece)
            entries.append({'%s-%05d' % (backup.service_metadata, n): {
                'offset': offset, 'length': len(piece),
                'compression': 'zlib' if shrinks else 'none',
                'md5': md5(piece)}})
        expected = {
            'version': '1.0.0',
            'backup_id': backup.id,
            'volume_id': backup.volume_id,
            'backup_name': 'test backup',
            'backup_description': None,
            'created_at': '2026-01-02 03:04:05+00:00',
            'objects': entries,
            'parent_id': None,
            'volume_meta': None,
        }
        self.assertEqual(
            json.dumps(expected, sort_keys=True, indent=2).encode('utf-8'),
            self.read_file(backup, manifest.metadata_name(
                backup.service_metadata)))

    @ddt.data(('none', 'none', None),
              ('off', 'none', None),
              ('no', 'none', None),
              ('zlib', 'zlib', zlib.decompress),
              ('gzip', 'gzip', zlib.decompress),
              ('bz2', 'bz2', bz2.decompress),
              ('bzip2', 'bzip2', bz2.decompress),
              ('zstd', 'zstd', zstandard.ZstdDecompressor().decompress),
              ('ZLIB', 'zlib', zlib.decompress))
    @ddt.unpack
    def test_backup_compression_stored_decodable_and_restores(
            self, configured, recorded, decompress):
        driver = self.make_driver(backup_compression_algorithm=configured)
        data = (text_bytes(3 * CHUNK) + random_bytes(CHUNK)
                + text_bytes(5000, seed=7))
        backup = self.make_backup(data, driver=driver)
        objects = self.objects(backup)
        self.assertEqual(5, len(objects))
        for n, (name, fields) in enumerate(objects):
            piece = data[fields['offset']:fields['offset']
                         + fields['length']]
            stored = self.read_file(backup, name)
            self.assertEqual(md5(piece), fields['md5'])
            if n == 3 or decompress is None:
                # Random data does not shrink: stored raw whatever the
                # algorithm.
                self.assertEqual('none', fields['compression'], name)
                self.assertEqual(piece, stored)
            else:
                self.assertEqual(recorded, fields['compression'], name)
                self.assertLess(len(stored), len(piece))
                self.assertEqual(piece, decompress(stored))
        self.assertEqual(data, self.restore_bytes(backup, len(data)))

    def test_backup_incompressible_stored_raw_without_leftovers(self):
        data = random_bytes(3 * CHUNK)
        backup = self.make_backup(data)
        for n, (name, fields) in enumerate(self.objects(backup)):
            self.assertEqual('none', fields['compression'])
            self.assertEqual(data[n * CHUNK:(n + 1) * CHUNK],
                             self.read_file(backup, name))
        # The dropped compressed attempts left no temporary files.
        self.assertEqual(self.files(backup),
                         sorted(os.listdir(self.path(backup))))

    def test_backup_all_zero_volume_compressed_small(self):
        backup = self.make_backup(bytes(4 * CHUNK))
        for name, fields in self.objects(backup):
            self.assertEqual('zlib', fields['compression'])
            self.assertLess(len(self.read_file(backup, name)), 1024)
            self.assertEqual(md5(bytes(CHUNK)), fields['md5'])

    @ddt.data('none', 'zlib', 'bz2', 'zstd')
    def test_backup_whole_objects_same_bytes_as_streamed(self, algorithm):
        # On a file system a full backup's objects are stored whole, side
        # by side; elsewhere they stream through the lanes.  Both must
        # store the same objects, byte for byte.
        self.conf.config(backup_compression_algorithm=algorithm)
        driver = self.make_driver()
        data = mixed_volume(chunks=6, tail=5000, seed=7)
        data = data[:CHUNK] + bytes(PIECE) + data[CHUNK + PIECE:]
        real = backup_path.BackupJob._stream_object
        streamed = []

        def counting(job, name, *args):
            streamed.append(name)
            return real(job, name, *args)
        with mock.patch.object(backup_path.BackupJob, '_stream_object',
                               counting):
            whole = self.make_backup(data, driver=driver)
            self.assertEqual([], streamed)
            with mock.patch.object(posix.PosixBackupDriver,
                                   'streams_writes', False):
                pieced = self.make_backup(data, driver=driver)
        self.assertEqual(6, len(set(streamed)))

        def stored(backup):
            return [(fields, self.read_file(backup, name))
                    for name, fields in self.objects(backup)]
        self.assertEqual(stored(whole), stored(pieced))
        self.assertEqual(self.sha256s(whole), self.sha256s(pieced))
        self.assertEqual(data, self.restore_bytes(whole, len(data)))

    def test_backup_default_piece_size_same_result(self):
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 4 * MiB))
        data = mixed_volume(chunks=4)
        backup = self.make_backup(data)
        self.assertEqual(sha256_list(data), self.sha256s(backup))
        self.assertEqual(data, self.restore_bytes(backup, len(data)))

    def test_backup_stream_only_volume_same_result(self):
        data = mixed_volume(chunks=4, tail=777)
        backup = self.make_backup(data, volume_file=StreamOnly(data))
        self.assertEqual(sha256_list(data), self.sha256s(backup))
        self.assertEqual([md5(data[o:o + CHUNK])
                          for o in range(0, len(data), CHUNK)],
                         [f['md5'] for _n, f in self.objects(backup)])

    def test_backup_chunk_not_multiple_of_block_refused(self):
        driver = self.make_driver(backup_file_size=CHUNK + 512)
        backup = self.env.new_backup()
        exc = self.assertRaises(exception.InvalidBackup, driver.backup,
                                backup, io.BytesIO(bytes(CHUNK)))
        self.assertIn('multiple', str(exc))
        self.assertEqual([], os.listdir(self.repo))

    def test_backup_unsafe_container_refused_nothing_created(self):
        backup = self.env.new_backup(container='../escape')
        self.assertRaises(exception.UnsafePath, self.driver.backup, backup,
                          io.BytesIO(bytes(CHUNK)))
        self.assertEqual([], os.listdir(self.repo))
        self.assertFalse(os.path.exists(os.path.join(
            os.path.dirname(self.repo), 'escape')))

    def test_backup_shared_container_backups_kept_apart(self):
        first = self.make_backup(text_bytes(2 * CHUNK), container='shared')
        second = self.make_backup(random_bytes(CHUNK), container='shared')
        self.assertEqual(4, len(self.files(first)))
        self.assertEqual(3, len(self.files(second)))
        self.driver.delete_backup(first)
        self.assertEqual([], self.files(first))
        self.assertEqual(3, len(self.files(second)))
        self.assertEqual(random_bytes(CHUNK),
                         self.restore_bytes(second, CHUNK))

    def test_backup_volume_read_error_no_metadata(self):
        data = text_bytes(4 * CHUNK)

        def fail(offset, size):
            if offset >= 2 * CHUNK:
                raise IOError('device error')
        volume = VolumeFile(io.BytesIO(data), on_read=fail)
        backup = self.env.new_backup()
        self.assertRaises(IOError, self.driver.backup, backup, volume)
        self.assertNotIn(backup.service_metadata + '_metadata',
                         os.listdir(self.path(backup)))

    def test_backup_store_error_no_metadata(self):
        backup = self.env.new_backup()
        real = self.driver.store.open_writer

        def writer(container, name, extra_metadata=None, **kwargs):
            if name.endswith('-00002'):
                raise exception.PermanentStoreError(reason='disk full')
            return real(container, name, extra_metadata, **kwargs)
        self.useFixture(fixtures.MockPatchObject(
            self.driver.store, 'open_writer', side_effect=writer))
        self.assertRaises(exception.PermanentStoreError, self.driver.backup,
                          backup, io.BytesIO(text_bytes(3 * CHUNK)))
        self.assertNotIn(backup.service_metadata + '_metadata',
                         os.listdir(self.path(backup)))

    def test_backup_commit_error_no_metadata_no_temporary_files(self):
        backup = self.env.new_backup()
        real = self.driver.store.open_writer

        def writer(container, name, extra_metadata=None, **kwargs):
            opened = real(container, name, extra_metadata, **kwargs)
            if name.endswith('-00001'):
                opened._commit = mock.Mock(
                    side_effect=exception.TransientStoreError(reason='503'))
            return opened
        self.useFixture(fixtures.MockPatchObject(
            self.driver.store, 'open_writer', side_effect=writer))
        self.assertRaises(exception.TransientStoreError, self.driver.backup,
                          backup, io.BytesIO(text_bytes(6 * CHUNK)))
        names = os.listdir(self.path(backup))
        self.assertNotIn(backup.service_metadata + '_metadata', names)
        # Writers still open when the failure surfaced were aborted.
        self.assertEqual([], [n for n in names if n.startswith('.')])

    def test_backup_create_containers_false_missing_container_error(self):
        driver = self.make_driver(backup_create_containers=False)
        backup = self.env.new_backup()
        exc = self.assertRaises(exception.ObjectNotFound, driver.backup,
                                backup, io.BytesIO(text_bytes(CHUNK)))
        self.assertIn(backup.container, str(exc))
        self.assertEqual([], os.listdir(self.repo))

    def test_backup_create_containers_false_existing_container_used(self):
        driver = self.make_driver(backup_create_containers=False)
        os.makedirs(os.path.join(self.repo, 'precreated'))
        data = text_bytes(CHUNK)
        backup = self.make_backup(data, driver=driver,
                                  container='precreated')
        self.assertEqual(3, len(self.files(backup)))
        self.assertEqual(data, self.restore_bytes(backup, len(data)))


class IncrementalBackupTestCase(DriverTestCase):

    def _edit(self, data, *ranges):
        new = bytearray(data)
        for start, end in ranges:
            new[start:end] = random_bytes(end - start, seed=start)
        return bytes(new)

    def test_incremental_changed_runs_one_object_each(self):
        base = text_bytes(5 * CHUNK)
        full = self.make_backup(base)
        changed = self._edit(
            base,
            (SHA + 5, SHA + 6),                       # block 1
            (2 * CHUNK + 3 * SHA, 2 * CHUNK + 6 * SHA - 1),  # blocks 3-5
            (2 * CHUNK + 9 * SHA, 2 * CHUNK + 9 * SHA + 1),  # block 9
            (4 * CHUNK - SHA, 4 * CHUNK + SHA))       # across a chunk edge
        inc = self.make_backup(changed, parent=full)
        objects = self.objects(inc)
        self.assertEqual(
            [(SHA, SHA),
             (2 * CHUNK + 3 * SHA, 3 * SHA),
             (2 * CHUNK + 9 * SHA, SHA),
             (4 * CHUNK - SHA, SHA),
             (4 * CHUNK, SHA)],
            [(f['offset'], f['length']) for _n, f in objects])
        self.assertEqual(['%s-%05d' % (inc.service_metadata, n)
                          for n in range(1, 6)],
                         [name for name, _f in objects])
        for _name, fields in objects:
            self.assertEqual(md5(changed[fields['offset']:fields['offset']
                                         + fields['length']]),
                             fields['md5'])
        self.assertEqual(full.id, self.metadata(inc)['parent_id'])
        # The sha256file covers the whole volume, not only the changes.
        self.assertEqual(sha256_list(changed), self.sha256s(inc))
        self.assertEqual(5, inc.object_count)

    def test_incremental_scattered_runs_several_per_task(self):
        # Each task is a round trip to a worker thread (through the hub
        # under eventlet): runs of the same piece are stored together,
        # each still an object of its own, in order.
        base = text_bytes(4 * CHUNK)
        full = self.make_backup(base)
        edits = [(n * 2 * SHA + 1, n * 2 * SHA + 2) for n in range(32)]
        changed = self._edit(base, *edits)
        writes = self.useFixture(fixtures.MockPatchObject(
            backup_path.BackupJob, '_write_small_objects', autospec=True,
            side_effect=backup_path.BackupJob._write_small_objects)).mock
        inc = self.make_backup(changed, parent=full)
        objects = self.objects(inc)
        self.assertEqual([(n * 2 * SHA, SHA) for n in range(32)],
                         [(f['offset'], f['length']) for _n, f in objects])
        self.assertEqual(['%s-%05d' % (inc.service_metadata, n)
                          for n in range(1, 33)],
                         [name for name, _f in objects])
        self.assertLess(writes.call_count, 32)
        self.assertEqual(changed, self.restore_bytes(inc, len(changed)))

    def test_backup_metadata_encoded_on_worker_thread(self):
        data = mixed_volume(chunks=3)
        execute = self.useFixture(fixtures.MockPatchObject(
            backup_records.concurrency, 'execute',
            wraps=backup_records.concurrency.execute)).mock
        backup = self.make_backup(data)
        encoded = [c for c in execute.call_args_list
                   if getattr(c.args[0], '__qualname__', '') ==
                   'BackupMetadata.to_json']
        self.assertEqual(1, len(encoded))
        self.assertEqual(data, self.restore_bytes(backup, len(data)))

    def test_incremental_unchanged_no_objects(self):
        data = mixed_volume(chunks=3)
        full = self.make_backup(data)
        inc = self.make_backup(data, parent=full)
        self.assertEqual([], self.objects(inc))
        self.assertEqual(sha256_list(data), self.sha256s(inc))
        self.assertEqual(data, self.restore_bytes(inc, len(data)))

    def test_incremental_partial_last_block_clipped(self):
        base = text_bytes(2 * CHUNK + 100)
        full = self.make_backup(base)
        changed = base[:-1] + b'\xff'
        inc = self.make_backup(changed, parent=full)
        self.assertEqual([(2 * CHUNK, 100)],
                         [(f['offset'], f['length'])
                          for _n, f in self.objects(inc)])

    def test_incremental_stream_only_volume_same_objects(self):
        base = text_bytes(3 * CHUNK)
        full = self.make_backup(base)
        changed = self._edit(base, (CHUNK + SHA, CHUNK + 2 * SHA))
        inc = self.make_backup(changed, parent=full,
                               volume_file=StreamOnly(changed))
        self.assertEqual([(CHUNK + SHA, SHA)],
                         [(f['offset'], f['length'])
                          for _n, f in self.objects(inc)])
        self.assertEqual(changed, self.restore_bytes(inc, len(changed)))

    def test_incremental_hash_block_size_changed_refused(self):
        full = self.make_backup(text_bytes(2 * CHUNK))
        driver = self.make_driver(backup_sha_block_size_bytes=2 * SHA)
        backup = self.env.new_backup(parent_id=full.id,
                                     volume_id=full.volume_id)
        exc = self.assertRaises(exception.InvalidBackup, driver.backup,
                                backup, io.BytesIO(text_bytes(2 * CHUNK)))
        self.assertIn('Hash block size has changed', str(exc))
        self.assertIsNone(backup.service_metadata)

    def test_incremental_volume_grew_refused(self):
        full = self.make_backup(text_bytes(2 * CHUNK))
        backup = self.env.new_backup(2, parent_id=full.id,
                                     volume_id=full.volume_id)
        exc = self.assertRaises(exception.InvalidBackup, self.driver.backup,
                                backup, io.BytesIO(text_bytes(2 * CHUNK)))
        self.assertIn('Volume size increased', str(exc))
        self.assertIsNone(backup.service_metadata)

    def test_incremental_missing_parent_sha256file_error(self):
        full = self.make_backup(text_bytes(CHUNK))
        os.remove(self.path(full, full.service_metadata + '_sha256file'))
        backup = self.env.new_backup(parent_id=full.id,
                                     volume_id=full.volume_id)
        self.assertRaises(exception.ObjectNotFound, self.driver.backup,
                          backup, io.BytesIO(text_bytes(CHUNK)))


class CancelBackupTestCase(DriverTestCase):

    def _cancel_after(self, backup, offset, status):
        def on_read(position, size):
            if position >= offset:
                self.env.status_override[backup.id] = status
        return on_read

    def _check_cancelled(self, status):
        data = text_bytes(6 * CHUNK)
        backup = self.env.new_backup()
        volume = VolumeFile(io.BytesIO(data),
                            on_read=self._cancel_after(backup, 2 * CHUNK,
                                                       status))
        self.assertIsNone(self.driver.backup(backup, volume))
        self.assertEqual([], self.files(backup))
        self.assertNotIn(100, [n[1]['backup_percent']
                               for n in self.env.notifications])
        # It did start: the volume was read past the cancel point.
        self.assertGreaterEqual(volume.tell(), 2 * CHUNK)

    def test_backup_status_deleting_objects_deleted_no_metadata(self):
        self._check_cancelled('deleting')

    def test_backup_status_deleted_objects_deleted_no_metadata(self):
        self._check_cancelled('deleted')

    def test_backup_other_status_change_not_cancelled(self):
        data = text_bytes(3 * CHUNK)
        backup = self.env.new_backup()
        volume = VolumeFile(io.BytesIO(data),
                            on_read=self._cancel_after(backup, CHUNK,
                                                       'error'))
        self.driver.backup(backup, volume)
        self.assertEqual(5, len(self.files(backup)))


class ProgressTestCase(DriverTestCase):

    def _percents(self, backup):
        return [info['backup_percent']
                for bid, info in self.env.notifications if bid == backup.id]

    def test_progress_every_n_objects_then_100(self):
        driver = self.make_driver(backup_object_number_per_notification=2)
        backup = self.make_backup(text_bytes(5 * CHUNK), driver=driver)
        self.assertEqual([2 * CHUNK * 100 / GiB, 4 * CHUNK * 100 / GiB,
                          100], self._percents(backup))
        info = self.env.notifications[-1][1]
        self.assertEqual(backup.service_metadata, info['prefix'])
        self.assertIn('list', info)
        self.assertIn('volume_meta', info)

    def test_progress_timer_each_interval_bytes_based(self):
        self.useFixture(fixtures.MockPatchObject(notifications, 'time',
                                                 FakeTime()))
        driver = self.make_driver(backup_timer_interval=1,
                                  backup_object_number_per_notification=100)
        backup = self.make_backup(text_bytes(4 * CHUNK), driver=driver)
        self.assertEqual([k * CHUNK * 100 / GiB for k in (1, 2, 3, 4)]
                         + [100], self._percents(backup))

    def test_progress_timer_tiny_interval_after_each_chunk(self):
        driver = self.make_driver(backup_timer_interval=0,
                                  backup_object_number_per_notification=100)
        backup = self.make_backup(text_bytes(3 * CHUNK), driver=driver)
        self.assertEqual([k * CHUNK * 100 / GiB for k in (1, 2, 3)]
                         + [100], self._percents(backup))

    def test_progress_timer_disabled_only_final(self):
        self.useFixture(fixtures.MockPatchObject(notifications, 'time',
                                                 FakeTime()))
        driver = self.make_driver(backup_timer_interval=1,
                                  backup_enable_progress_timer=False,
                                  backup_object_number_per_notification=100)
        backup = self.make_backup(text_bytes(4 * CHUNK), driver=driver)
        self.assertEqual([100], self._percents(backup))

    def test_progress_percent_bounded_by_100(self):
        # A volume file larger than the recorded size (1 GiB) must not
        # report more than 100%.
        self.useFixture(fixtures.MockPatchObject(backup_records, 'GiB', CHUNK))
        driver = self.make_driver(backup_object_number_per_notification=1)
        backup = self.make_backup(text_bytes(3 * CHUNK), driver=driver)
        percents = self._percents(backup)
        self.assertEqual(4, len(percents))
        self.assertTrue(all(0 <= p <= 100 for p in percents), percents)
        self.assertEqual(sorted(percents), percents)

    def test_progress_notifier_failure_backup_completes(self):
        self.useFixture(fixtures.MockPatchObject(
            self.env, 'notify_progress', side_effect=RuntimeError('down')))
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        data = text_bytes(CHUNK)
        backup = self.make_backup(data)
        self.assertEqual(data, self.restore_bytes(backup, len(data)))
        self.assertIn('progress notification', logger.output)


class VolumeMetadataTestCase(DriverTestCase):

    def test_backup_volume_metadata_stored_and_restored(self):
        volume_id = 'vol-1'
        self.env.volume_metadata[volume_id] = '{"version": 2, "x": "y"}'
        data = text_bytes(CHUNK)
        backup = self.make_backup(data, volume_id=volume_id)
        self.assertEqual('{"version": 2, "x": "y"}',
                         self.metadata(backup)['volume_meta'])
        self.env.volume_metadata.clear()
        self.restore_bytes(backup, len(data))
        self.assertEqual({volume_id: '{"version": 2, "x": "y"}'},
                         self.env.volume_metadata)

    def test_backup_without_backup_metadata_flag_none(self):
        self.env.volume_metadata['vol-1'] = '{"x": 1}'
        backup = self.env.new_backup(volume_id='vol-1')
        self.driver.backup(backup, io.BytesIO(text_bytes(CHUNK)),
                           backup_metadata=False)
        self.assertIsNone(self.metadata(backup)['volume_meta'])

    def test_backup_volume_metadata_failure_backup_deleted(self):
        self.useFixture(fixtures.MockPatchObject(
            self.env, 'get_volume_metadata',
            side_effect=RuntimeError('db down')))
        logger = self.useFixture(fixtures.FakeLogger(level=logging.ERROR))
        backup = self.env.new_backup()
        self.assertRaises(RuntimeError, self.driver.backup, backup,
                          io.BytesIO(text_bytes(2 * CHUNK)))
        self.assertEqual([], self.files(backup))
        self.assertIn(backup.volume_id, logger.output)


class DeleteTestCase(DriverTestCase):

    def test_delete_backup_all_objects_by_prefix(self):
        backup = self.make_backup(mixed_volume(chunks=3))
        # A stray object of the same backup not in its metadata.
        self.write_file(backup, backup.service_metadata + '-00099', b'x')
        self.driver.delete_backup(backup)
        self.assertEqual([], os.listdir(self.path(backup)))

    def test_delete_backup_listing_failure_succeeds_with_warning(self):
        backup = self.make_backup(text_bytes(CHUNK))
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.useFixture(fixtures.MockPatchObject(
            self.driver.store, 'list_objects',
            side_effect=exception.TransientStoreError(reason='timeout')))
        self.assertIsNone(self.driver.delete_backup(backup))
        self.assertIn(backup.id, logger.output)
        self.assertIn('timeout', logger.output)

    def test_delete_backup_missing_container_succeeds(self):
        backup = self.env.new_backup(container='never/created')
        backup.service_metadata = 'volume_x_1_backup_%s' % backup.id
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.driver.delete_backup(backup)
        self.assertIn('Could not list', logger.output)

    def test_delete_backup_never_started_no_op(self):
        backup = self.env.new_backup()
        self.assertIsNone(self.driver.delete_backup(backup))
        self.assertEqual([], os.listdir(self.repo))

    def test_delete_backup_twice_no_error(self):
        backup = self.make_backup(text_bytes(CHUNK))
        self.driver.delete_backup(backup)
        self.driver.delete_backup(backup)
        self.assertEqual([], self.files(backup))


class RecordTestCase(DriverTestCase):

    def test_support_force_delete_true(self):
        self.assertTrue(self.driver.support_force_delete)

    def test_export_record_dict(self):
        backup = self.make_backup(text_bytes(CHUNK))
        self.assertIsInstance(self.driver.export_record(backup), dict)

    def test_import_record_safe_container_accepted(self):
        backup = self.env.new_backup(container='aa/bb/cc')
        self.assertIsNone(self.driver.import_record(backup, {}))

    def test_import_record_unsafe_container_refused(self):
        for container in ('../../etc', '/etc', 'a/../../b', 'a\x00b'):
            backup = self.env.new_backup(container=container)
            self.assertRaises(exception.UnsafePath,
                              self.driver.import_record, backup, {})

    def test_driver_unknown_compression_refused(self):
        self.useFixture(fixtures.MockPatchObject(
            chunked.EngineSettings, 'from_conf',
            return_value=mock.Mock(compression='lzma', workers=1)))
        self.assertRaises(exception.UnsupportedCompression,
                          posix.PosixBackupDriver, self.context,
                          backup_path=self.repo)

    def test_check_for_setup_error_repository_a_file_refused(self):
        path = os.path.join(self.repo, 'file')
        with open(path, 'w'):
            pass
        driver = posix.PosixBackupDriver(self.context, backup_path=path)
        self.assertRaises(exception.StoreConfigurationError,
                          driver.check_for_setup_error)
