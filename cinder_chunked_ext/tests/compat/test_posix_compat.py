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

"""Our POSIX driver and Cinder's, on one repository, both ways round.

Both drivers run in one process on Cinder's test database with real
``objects.Backup`` / ``objects.Volume`` records, real files and Cinder's
own configuration options; nothing of either data path is mocked.  Each
backup is made the way the backup manager makes it (the volume file
opened for reading and wrapped with ``cinder.utils.tpool_wrap``), and
the manager's bookkeeping after a backup (status, size, dependent count)
is reproduced on the records.
"""

import hashlib
import json
import os
import stat

import ddt
import fixtures

from cinder_chunked_ext.drivers import posix as ours_posix
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import environment
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests.compat import base

KiB = base.KiB
MiB = base.MiB

UPSTREAM = 'upstream'
OURS = 'ours'
SERVICES = {UPSTREAM: base.UPSTREAM_POSIX, OURS: base.OURS_POSIX}
ALGORITHMS = ('none', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd')

# Several objects per backup: 16 KiB hash blocks, 8 blocks per object.
BLOCK = 16 * KiB
CHUNK = 8 * BLOCK
# Text, random (stored raw even when compressing), zeros, a mix; then a
# last chunk of three blocks and 777 bytes: the volume size is a multiple
# of neither the object size nor the hash block size.
LAYOUT = 'tttttttt' + 'rrrrrrrr' + 'zzzzzzzz' + 'trzttrzt' + 'tzr'
TAIL = 777


def _volume(seed=1):
    data = base.volume_data(LAYOUT, BLOCK, seed)
    return data + base.volume_data('r', BLOCK, seed + 1000)[:TAIL]


def _other(which):
    return OURS if which == UPSTREAM else UPSTREAM


class PosixCompatTestCase(base.CinderDBTestCase):
    """Helpers: back up and restore with either driver."""

    block = BLOCK
    chunk = CHUNK

    def setUp(self):
        super().setUp()
        from cinder.backup.drivers import posix as upstream_posix
        from cinder.db import api as db_api
        from cinder import objects
        from cinder import utils as cinder_utils
        self.upstream_posix = upstream_posix
        self.db_api = db_api
        self.objects = objects
        self.cinder_utils = cinder_utils
        self.conf.config(backup_sha_block_size_bytes=self.block,
                         backup_file_size=self.chunk,
                         backup_enable_progress_timer=False)
        self.source = self.create_volume(
            metadata={'compat-key': 'compat-value'})

    def driver(self, which):
        if which == UPSTREAM:
            return self.upstream_posix.PosixBackupDriver(self.ctxt)
        return ours_posix.PosixBackupDriver(self.ctxt)

    def back_up(self, which, data, parent=None, volume=None):
        """A backup of ``data`` by ``which``, finished as the manager does."""
        volume = volume or self.source
        path = self.write_volume('source-%s' % volume.id, data)
        backup = self.create_backup(volume, parent=parent,
                                    service=SERVICES[which])
        with open(path, 'rb') as f:
            updates = self.driver(which).backup(
                backup, self.cinder_utils.tpool_wrap(f))
        backup.refresh()
        backup.status = 'available'
        backup.size = volume.size
        if updates:
            backup.update(updates)
        backup.save()
        if parent is not None:
            self.db_api.backup_add_dependent(self.ctxt, parent.id)
        return backup

    def restore(self, which, backup, size, volume_is_new):
        """Restore ``backup`` with ``which``; return the volume's bytes."""
        target = self.create_volume(status='restoring-backup')
        name = 'target-%s' % target.id
        if volume_is_new:
            path = self.new_volume_file(name, size)
        else:
            path = self.existing_volume_file(name, size)
        backup.status = 'restoring'
        backup.save()
        try:
            with open(path, 'r+b') as f:
                self.driver(which).restore(
                    backup, target.id, self.cinder_utils.tpool_wrap(f),
                    volume_is_new)
        finally:
            backup.status = 'available'
            backup.save()
        self.restored_volume = self.objects.Volume.get_by_id(self.ctxt,
                                                             target.id)
        return self.read_volume(path)

    def assertRestores(self, expected, backup, msg='',
                       drivers=(UPSTREAM, OURS), new=(True, False)):
        """``drivers`` restore ``expected`` onto new and used volumes."""
        for which in drivers:
            for volume_is_new in new:
                restored = self.restore(which, backup, len(expected),
                                        volume_is_new)
                where = ('%s restore by %s onto a %s volume' %
                         (msg, which, 'new' if volume_is_new else 'used'))
                self.assertSameBytes(expected, restored, where)

    def metadata(self, backup):
        return self.read_document(backup, '_metadata')

    def read_document(self, backup, suffix):
        path = os.path.join(self.repo, backup.container,
                            backup.service_metadata + suffix)
        with open(path, 'rb') as f:
            return json.loads(f.read().decode('utf-8'))

    def object_files(self, backup):
        directory = os.path.join(self.repo, backup.container)
        if not os.path.isdir(directory):
            return []
        return sorted(name for name in os.listdir(directory)
                      if name.startswith(backup.service_metadata))


def _objects(metadata):
    """``[(name, fields)]`` of a metadata document, in stored order."""
    return [list(entry.items())[0] for entry in metadata['objects']]


@ddt.ddt
class RoundTripTestCase(PosixCompatTestCase):
    """One driver backs up; both restore it; the other one deletes it."""

    def _round_trip(self, writer, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = _volume()
        backup = self.back_up(writer, data)

        self.assertEqual(SERVICES[writer], backup.service)
        expected_container = os.path.join(backup.id[0:2], backup.id[2:4],
                                          backup.id)
        self.assertEqual(expected_container, backup.container)
        self.assertTrue(backup.service_metadata.startswith(
            'volume_%s_' % self.source.id))
        self.assertTrue(backup.service_metadata.endswith(
            '_backup_%s' % backup.id))
        meta = self.metadata(backup)
        objects = _objects(meta)
        self.assertEqual(5, len(objects))
        self.assertEqual(5, backup.object_count)
        self.assertEqual(
            [0, CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK],
            [fields['offset'] for _name, fields in objects])
        self.assertEqual(len(data),
                         sum(fields['length'] for _name, fields in objects))
        compressions = [fields['compression'] for _name, fields in objects]
        if algorithm == 'none':
            self.assertEqual(['none'] * 5, compressions)
        else:
            # Text and zeros compress; random data is stored raw.
            self.assertEqual(algorithm, compressions[0])
            self.assertEqual('none', compressions[1])
            self.assertEqual(algorithm, compressions[2])

        reader = _other(writer)
        self.assertRestores(data, backup, 'backup by %s,' % writer,
                            drivers=[reader])
        volume_meta = self.restored_volume.metadata
        self.assertEqual('compat-value', volume_meta.get('compat-key'))

        backup.status = 'deleting'
        backup.save()
        self.driver(reader).delete_backup(backup)
        self.assertEqual([], self.object_files(backup))

    @ddt.data(*ALGORITHMS)
    def test_backup_by_upstream_restored_by_ours_identical(self, algorithm):
        self._round_trip(UPSTREAM, algorithm)

    @ddt.data(*ALGORITHMS)
    def test_backup_by_ours_restored_by_upstream_identical(self, algorithm):
        self._round_trip(OURS, algorithm)

    @ddt.data('none', 'zlib', 'zstd')
    def test_backup_documents_same_volume_same_content(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = _volume()
        theirs = self.back_up(UPSTREAM, data)
        ours = self.back_up(OURS, data)

        their_meta, our_meta = self.metadata(theirs), self.metadata(ours)
        self.assertEqual(sorted(their_meta), sorted(our_meta))
        self.assertEqual(their_meta['version'], our_meta['version'])
        self.assertEqual(json.loads(their_meta['volume_meta']),
                         json.loads(our_meta['volume_meta']))

        def summary(backup, meta):
            prefix = backup.service_metadata
            return [(name[len(prefix):], fields['offset'], fields['length'],
                     fields['compression'], fields['md5'])
                    for name, fields in _objects(meta)]
        self.assertEqual(summary(theirs, their_meta),
                         summary(ours, our_meta))

        their_sha = self.read_document(theirs, '_sha256file')
        our_sha = self.read_document(ours, '_sha256file')
        self.assertEqual(sorted(their_sha), sorted(our_sha))
        self.assertEqual(BLOCK, our_sha['chunk_size'])
        self.assertEqual(their_sha['sha256s'], our_sha['sha256s'])

        # Same permissions on what each driver created.
        def modes(backup):
            directory = os.path.join(self.repo, backup.container)
            return ({stat.S_IMODE(os.stat(directory).st_mode)} |
                    {stat.S_IMODE(os.stat(os.path.join(directory, n)).st_mode)
                     for n in self.object_files(backup)})
        self.assertEqual(modes(theirs), modes(ours))


class CinderEnvironmentTestCase(PosixCompatTestCase):
    """Inside Cinder our engine reads Cinder's own records."""

    def test_environment_inside_cinder_reads_cinder_records(self):
        backup = self.create_backup(self.source)
        driver = self.driver(OURS)
        self.assertIsInstance(driver.env, environment.CinderEnvironment)
        found = driver.env.get_backup(backup.id)
        self.assertIsInstance(found, self.objects.Backup)
        self.assertEqual(backup.volume_id, found.volume_id)
        self.assertEqual(1, driver.env.volume_size_gib(self.source.id))
        meta = json.loads(driver.env.get_volume_metadata(self.source.id))
        self.assertEqual(self.upstream_posix.PosixBackupDriver(
            self.ctxt).get_metadata(self.source.id),
            driver.get_metadata(self.source.id))
        self.assertIn('version', meta)


@ddt.ddt
class IncrementalChainTestCase(PosixCompatTestCase):
    """Chains whose layers were written by different drivers."""

    def _changes(self):
        v0 = _volume(seed=7)
        # Layer 2: new data inside the first chunk, a random run zeroed in
        # the second, and the last partial hash block changed.
        v1 = base.overwrite(v0, 3 * BLOCK, base.volume_data('rr', BLOCK, 11))
        v1 = base.overwrite(v1, CHUNK + 2 * BLOCK, bytes(4 * BLOCK))
        v1 = base.overwrite(v1, len(v1) - 100, b'\x01' * 100)
        # Layer 3: the zeros of the third chunk become data, a block of
        # the first change goes back to zeros, one byte of the mixed chunk.
        v2 = base.overwrite(v1, 2 * CHUNK, base.volume_data('tr', BLOCK, 12))
        v2 = base.overwrite(v2, 4 * BLOCK, bytes(BLOCK))
        v2 = base.overwrite(v2, 3 * CHUNK + 5, b'\xff')
        return v0, v1, v2

    @ddt.data((UPSTREAM, OURS, UPSTREAM), (OURS, UPSTREAM, OURS))
    @ddt.unpack
    def test_chain_mixed_drivers_restores_every_layer(
            self, first, second, third):
        self.conf.config(backup_compression_algorithm='zlib')
        v0, v1, v2 = self._changes()
        full = self.back_up(first, v0)
        incr1 = self.back_up(second, v1, parent=full)
        incr2 = self.back_up(third, v2, parent=incr1)

        # Only the changed runs were stored in each incremental.
        self.assertEqual(5, full.object_count)
        self.assertEqual(3, incr1.object_count)
        self.assertEqual(3, incr2.object_count)
        self.assertEqual(1, self.objects.Backup.get_by_id(
            self.ctxt, full.id).num_dependent_backups)
        for backup in (incr1, incr2):
            meta = self.metadata(backup)
            self.assertEqual(backup.parent_id, meta['parent_id'])
            sha = self.read_document(backup, '_sha256file')
            self.assertEqual(-(-len(v0) // BLOCK), len(sha['sha256s']))

        self.assertRestores(v2, incr2, 'layer 3,')
        self.assertRestores(v1, incr1, 'layer 2,', new=[True])
        self.assertRestores(v0, full, 'layer 1,', new=[False])

    @ddt.data(UPSTREAM, OURS)
    def test_rollback_by_ours_writes_changed_blocks_only(self, writer):
        # A chain written by either driver, restored by ours over the
        # volume its full backup was taken from: the result is the newest
        # layer, and only the hash blocks that differ are written (the
        # last one partial: the volume is no multiple of the block).
        self.conf.config(backup_compression_algorithm='zlib')
        v0, v1, v2 = self._changes()
        full = self.back_up(writer, v0)
        incr1 = self.back_up(writer, v1, parent=full)
        incr2 = self.back_up(writer, v2, parent=incr1)
        writes = []
        real = volume_io.write_at

        def recording(volume_file, offset, data):
            writes.append((offset, len(data)))
            return real(volume_file, offset, data)
        self.useFixture(fixtures.MockPatchObject(volume_io, 'write_at',
                                                 recording))
        target = self.create_volume(status='restoring-backup')
        path = self.write_volume('target-%s' % target.id, v0)
        incr2.status = 'restoring'
        incr2.save()
        with open(path, 'r+b') as f:
            self.driver(OURS).restore(incr2, target.id,
                                      self.cinder_utils.tpool_wrap(f), False)
        self.assertSameBytes(v2, self.read_volume(path))
        written = sorted({block for offset, length in writes
                          for block in range(offset // BLOCK,
                                             -(-(offset + length) // BLOCK))})
        differing = [i for i in range(-(-len(v2) // BLOCK))
                     if v0[i * BLOCK:(i + 1) * BLOCK] !=
                     v2[i * BLOCK:(i + 1) * BLOCK]]
        self.assertNotEqual([], differing)
        self.assertEqual(differing, written)

    @ddt.data((UPSTREAM, UPSTREAM), (UPSTREAM, OURS), (OURS, UPSTREAM),
              (OURS, OURS))
    @ddt.unpack
    def test_region_zeroed_by_incremental_new_volume_reads_zero(
            self, first, second):
        # Cinder 29 skips zero pieces only in the base layer of a restore
        # onto a new volume; the seed skipped them in every layer and so
        # left the full backup's bytes where the incremental wrote zeros.
        self.conf.config(backup_compression_algorithm='zstd')
        v0 = _volume(seed=3)
        v1 = base.overwrite(v0, 0, bytes(CHUNK))          # a whole object
        v1 = base.overwrite(v1, CHUNK + BLOCK, bytes(3 * BLOCK))
        self.assertNotEqual(bytes(CHUNK), v0[:CHUNK])
        full = self.back_up(first, v0)
        incr = self.back_up(second, v1, parent=full)

        for which in (UPSTREAM, OURS):
            restored = self.restore(which, incr, len(v1), volume_is_new=True)
            where = 'restore by %s' % which
            self.assertSameBytes(bytes(CHUNK), restored[:CHUNK], where)
            self.assertSameBytes(bytes(3 * BLOCK),
                                 restored[CHUNK + BLOCK:CHUNK + 4 * BLOCK],
                                 where)
            self.assertSameBytes(v1, restored, where)


@ddt.ddt
class LargeObjectTestCase(PosixCompatTestCase):
    """Objects larger than our pieces: split compression meets upstream.

    Our driver compresses each object in pieces of 4 MiB on several
    workers and verifies large objects in a first pass when restoring;
    upstream compresses and decompresses every object in one call.
    """

    block = 32 * KiB
    # Just over one 4 MiB piece, and over half of max_bytes_in_flight.
    chunk = 4 * MiB + 4 * 32 * KiB

    def setUp(self):
        super().setUp()
        self.conf.config(workers=2, max_bytes_in_flight=8 * MiB,
                         group=chunked.PIPELINE_GROUP)

    def _data(self):
        per_chunk = self.chunk // self.block
        # The second piece of the first object is random: the object as a
        # whole still compresses.
        layout = 't' * (per_chunk - 8) + 'r' * 8 + 'tz' * 8
        return base.volume_data(layout, self.block, 5) + b'end'

    @ddt.data('zlib', 'bz2', 'zstd')
    def test_large_objects_both_ways_identical(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = self._data()
        for writer in (UPSTREAM, OURS):
            backup = self.back_up(writer, data)
            objects = _objects(self.metadata(backup))
            self.assertEqual([0, self.chunk],
                             [fields['offset'] for _name, fields in objects])
            self.assertEqual([algorithm] * 2,
                             [fields['compression']
                              for _name, fields in objects])
            restored = self.restore(_other(writer), backup, len(data),
                                    volume_is_new=False)
            self.assertSameBytes(data, restored,
                                 'backup by %s, restored by %s' %
                                 (writer, _other(writer)))


def _write_sparse(path, data, block):
    """Write ``data`` leaving its all-zero ``block``s as holes."""
    zero = bytes(block)
    with open(path, 'wb') as f:
        for offset in range(0, len(data), block):
            part = data[offset:offset + block]
            if part != zero[:len(part)]:
                f.seek(offset)
                f.write(part)
        f.truncate(len(data))
    return path


@ddt.ddt
class SmallObjectShapesTestCase(PosixCompatTestCase):
    """Full backups of a sparse volume file, in small objects, cut at holes.

    Our full backups write objects of at most full_backup_object_bytes
    and end objects where the holes of a file-backed volume begin and
    end, so their objects are shorter than the chunk and of many
    lengths; upstream restores each at its recorded offset.
    """

    block = 32 * KiB
    chunk = 8 * MiB

    def setUp(self):
        super().setUp()
        self.conf.config(workers=2, full_backup_object_bytes=2 * MiB,
                         group=chunked.PIPELINE_GROUP)

    def write_volume(self, name, data):
        return _write_sparse(self.volume_path(name), data, 64 * KiB)

    def _data(self):
        per_mib = MiB // self.block
        layout = ('t' * (per_mib * 3 // 2) + 'z' * 3 * per_mib +
                  'r' * 8 + 'z' * 2 * per_mib + 't' * per_mib +
                  'z' * 4 * per_mib + 't' * 4)
        return base.volume_data(layout, self.block, 21) + b'end'

    @ddt.data('none', 'zlib', 'bz2', 'zstd')
    def test_small_objects_cut_at_holes_restored_by_both(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = self._data()
        backup = self.back_up(OURS, data)
        objects = _objects(self.metadata(backup))
        spans = [(fields['offset'], fields['length'])
                 for _name, fields in objects]
        self.assertEqual(len(data), sum(length for _o, length in spans))
        self.assertLessEqual(max(length for _o, length in spans), 2 * MiB)
        hole = (3 * MiB // 2, 2 * MiB)
        self.assertIn(hole, spans)
        zero_md5 = hashlib.md5(bytes(2 * MiB)).hexdigest()
        self.assertEqual(zero_md5, objects[spans.index(hole)][1]['md5'])
        self.assertRestores(data, backup, 'small objects,')


@ddt.ddt
class UpstreamZeroObjectsTestCase(PosixCompatTestCase):
    """Upstream's zero objects restore with ours, known by their bytes."""

    block = 32 * KiB
    chunk = MiB

    def setUp(self):
        super().setUp()
        self.forms = []
        real = compression.is_zero_form

        def recording(*args, **kwargs):
            known = real(*args, **kwargs)
            self.forms.append(known)
            return known

        self.useFixture(fixtures.MockPatchObject(compression,
                                                 'is_zero_form', recording))

    @ddt.data('zlib', 'zstd')
    def test_upstream_zero_objects_restored_by_ours(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        per_mib = MiB // self.block
        data = base.volume_data('t' * per_mib + 'z' * 3 * per_mib +
                                'r' * per_mib + 'z' * 2 * per_mib,
                                self.block, 5)
        backup = self.back_up(UPSTREAM, data)
        # One worker: with two, two zero objects of an unknown form can
        # both be checked before the first one decoded is remembered.
        self.conf.config(workers=1, group=chunked.PIPELINE_GROUP)
        self.assertRestores(data, backup, 'upstream zero objects,',
                            drivers=[OURS], new=(False,))
        # Five zero objects: each form is known once an object in it has
        # been decoded to zeros.
        self.assertEqual(5, len(self.forms))
        self.assertGreaterEqual(self.forms.count(True), 4)
        restored = self.restore(OURS, backup, len(data), False)
        self.assertSameBytes(data, restored, 'second restore by ours')
        self.assertEqual([True] * 5, self.forms[5:])


@ddt.ddt
class FastPathTestCase(PosixCompatTestCase):
    """What our fast paths write, upstream restores.

    One object spans whole pieces of each kind: text (compressed on a
    worker), random data (stored as deflate "stored" blocks, since it
    does not compress), zeros (the cached compressed form of a zero
    piece) and text again, so every way of producing a piece meets
    upstream's one-call decompressor.
    """

    block = 32 * KiB
    chunk = 16 * MiB

    def setUp(self):
        super().setUp()
        self.conf.config(workers=2, max_bytes_in_flight=16 * MiB,
                         group=chunked.PIPELINE_GROUP)

    def _data(self):
        per_piece = 4 * MiB // self.block
        layout = ('t' * per_piece + 'r' * per_piece + 'z' * per_piece +
                  't' * (per_piece // 2))
        return base.volume_data(layout, self.block, 11)

    @ddt.data('zlib', 'gzip', 'bz2', 'zstd')
    def test_fast_paths_restored_by_upstream(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = self._data()
        backup = self.back_up(OURS, data)
        objects = _objects(self.metadata(backup))
        self.assertEqual([algorithm], [fields['compression']
                                       for _name, fields in objects])
        for is_new in (True, False):
            restored = self.restore(UPSTREAM, backup, len(data),
                                    volume_is_new=is_new)
            self.assertSameBytes(data, restored, 'restored by upstream')


class CinderInterfaceTestCase(base.CompatTestCase):
    """With Cinder importable, our classes are Cinder's own kinds."""

    def test_driver_subclasses_cinder_backup_driver(self):
        from cinder.backup import driver as cinder_driver
        self.assertTrue(issubclass(ours_posix.PosixBackupDriver,
                                   cinder_driver.BackupDriver))
        self.assertTrue(issubclass(chunked.ChunkedBackupDriver,
                                   cinder_driver.BackupDriver))

    def test_exceptions_subclass_cinder_exceptions(self):
        from cinder import exception as cinder_exception
        expected = [
            (exception.StoreError, cinder_exception.BackupDriverException),
            (exception.ObjectNotFound, cinder_exception.BackupDriverException),
            (exception.PermanentStoreError,
             cinder_exception.BackupDriverException),
            (exception.TransientStoreError,
             cinder_exception.BackupDriverException),
            (exception.StoreConfigurationError,
             cinder_exception.InvalidConfigurationValue),
            (exception.UnsafePath, cinder_exception.InvalidBackup),
            (exception.CorruptBackup, cinder_exception.InvalidBackup),
            (exception.ChecksumMismatch, cinder_exception.InvalidBackup),
            (exception.UnsupportedBackupVersion,
             cinder_exception.InvalidBackup),
            (exception.UnsupportedCompression,
             cinder_exception.InvalidBackup),
        ]
        for ours, theirs in expected:
            self.assertTrue(issubclass(ours, theirs),
                            '%s is not a %s' % (ours.__name__,
                                                theirs.__name__))
            self.assertTrue(issubclass(ours, cinder_exception.CinderException))

    def test_reexported_exceptions_are_cinders(self):
        from cinder import exception as cinder_exception
        for name in ('BackupDriverException', 'BackupRestoreCancel',
                     'BackupOperationError',
                     'BackupMetadataUnsupportedVersion', 'InvalidBackup',
                     'InvalidVolume', 'InvalidConfigurationValue',
                     'ConfigNotFound', 'BackupNotFound'):
            self.assertIs(getattr(cinder_exception, name),
                          getattr(exception, name), name)

    def test_exception_message_formatted_by_cinder(self):
        error = exception.ChecksumMismatch(backup_id='b-1',
                                           object_name='p-00001',
                                           expected='aa', actual='bb')
        text = str(error)
        for part in ('b-1', 'p-00001', 'aa', 'bb'):
            self.assertIn(part, text)
        self.assertEqual(400, error.code)

    def test_backup_status_names_are_cinders(self):
        from cinder.objects import fields
        from cinder_chunked_ext import cinder_compat
        self.assertIs(fields.BackupStatus, cinder_compat.BackupStatus)

    def test_concurrency_mode_agrees_with_cinder(self):
        from cinder import utils as cinder_utils
        self.assertEqual(not cinder_utils.concurrency_mode_threading(),
                         concurrency.eventlet_active())
        marker = object()
        wrapped = concurrency.tpool_wrap(marker)
        theirs = cinder_utils.tpool_wrap(marker)
        self.assertEqual(type(theirs), type(wrapped))


@ddt.ddt
class PieceSizedIncrementalTestCase(PosixCompatTestCase):
    """An incremental's long changed run, in objects of a piece each.

    Since issue 17 an incremental backup stores each run of changed
    blocks from the very buffers it hashed, in objects of at most one
    piece (4 MiB; two hash blocks here), where upstream wrote one
    object per run and chunk: a new object shape for upstream's restore.
    """

    def setUp(self):
        super().setUp()
        self.piece = 2 * BLOCK
        self.useFixture(fixtures.MockPatchObject(chunked, 'PIECE_BYTES',
                                                 self.piece))

    @ddt.data('none', 'zlib', 'bz2', 'zstd')
    def test_long_run_piece_objects_restored_by_upstream(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        v0 = _volume(seed=31)
        # One run of 19 changed blocks over three chunks (3 + 8 + 8 of
        # them), text and random data, and a short run at the end.  Each
        # run is cut into pieces from its own start: upstream wrote 4
        # objects here, ours are 11.
        v1 = base.overwrite(v0, 5 * BLOCK,
                            base.volume_data('trtrrttrrtrttrrtrtr', BLOCK, 32))
        v1 = base.overwrite(v1, len(v1) - 10, b'\x02' * 10)
        full = self.back_up(UPSTREAM, v0)
        incr = self.back_up(OURS, v1, parent=full)

        spans = [(fields['offset'], fields['length'])
                 for _name, fields in _objects(self.metadata(incr))]
        expected = ([(5 * BLOCK, 2 * BLOCK), (7 * BLOCK, BLOCK)] +
                    [(CHUNK + n * self.piece, self.piece)
                     for n in range(2 * CHUNK // self.piece)] +
                    [(4 * CHUNK + 3 * BLOCK, TAIL)])
        self.assertEqual(expected, spans)
        self.assertEqual(len(expected), incr.object_count)
        self.assertRestores(v1, incr, 'piece-sized objects,',
                            drivers=[UPSTREAM])
