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

"""Direct reads, holes, small full-backup objects and zero objects.

Everything runs on real files in a temporary directory: sparse volume
files whose holes the file system reports through SEEK_DATA/SEEK_HOLE,
a pipe and a character device for the fallbacks, and the POSIX store
for the order of fsyncs and renames.
"""

import collections
import hashlib
import io
import os
import threading
import zlib

import ddt
import fixtures
import testtools
import zstandard

from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import cuts
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import objects
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import posix as posix_store
from cinder_chunked_ext.tests.unit import test_chunked_backup as base

KiB = 1024
MiB = 1024 * KiB
SHA = base.SHA


def write_sparse(path, size, extents):
    """A file of ``size`` bytes with data only at ``extents``."""
    with open(path, 'wb') as f:
        f.truncate(size)
        for offset, data in extents:
            f.seek(offset)
            f.write(data)
    with open(path, 'rb') as f:
        return f.read()


def holes_reported(directory):
    """Whether the file system here reports holes (ext4, xfs, tmpfs do)."""
    path = os.path.join(directory, 'probe')
    write_sparse(path, 4 * MiB, [(3 * MiB, b'x' * 4096)])
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA) >= MiB
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(path)


class _SparseTestCase(testtools.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        if not holes_reported(self.dir):
            self.skipTest('this file system does not report holes')

    def sparse_file(self, size, extents, name='volume'):
        path = os.path.join(self.dir, name)
        return path, write_sparse(path, size, extents)


class VolumeSourceTestCase(_SparseTestCase):

    def test_source_regular_file_direct_and_holes_known(self):
        path, _data = self.sparse_file(2 * MiB, [(MiB, b'a' * 4096)])
        with open(path, 'rb') as f:
            source = volume_io.VolumeSource(f)
            self.addCleanup(source.close)
            self.assertTrue(source.direct)
            self.assertTrue(source.holes_known)

    def test_source_tpool_proxy_unwrapped_direct(self):
        from eventlet import tpool
        path, data = self.sparse_file(2 * MiB, [(MiB, b'a' * 4096)])
        with open(path, 'rb') as f:
            source = volume_io.VolumeSource(tpool.Proxy(f))
            self.addCleanup(source.close)
            self.assertTrue(source.direct)
            self.assertEqual(data[MiB:MiB + 8192],
                             source.load(MiB, 8192))

    def test_source_hole_load_none_data_load_bytes(self):
        path, data = self.sparse_file(
            3 * MiB, [(MiB, b'a' * 4096), (MiB + 64 * KiB, b'b' * 4096)])
        with open(path, 'rb') as f:
            source = volume_io.VolumeSource(f)
            self.addCleanup(source.close)
            self.assertIsNone(source.load(0, MiB))
            self.assertIsNone(source.load(2 * MiB, MiB))
            self.assertEqual(data[MiB - 4096:MiB + 128 * KiB],
                             source.load(MiB - 4096, 132 * KiB))

    def _source(self, path):
        f = open(path, 'rb')
        self.addCleanup(f.close)
        source = volume_io.VolumeSource(f)
        self.addCleanup(source.close)
        return source

    def test_source_load_into_reads_data_leaves_holes_alone(self):
        path, data = self.sparse_file(3 * MiB, [(MiB, b'a' * 4096)])
        source = self._source(path)
        buffer = bytearray(b'\x55' * MiB)
        self.assertFalse(source.load_into(0, MiB, buffer))
        self.assertEqual(b'\x55' * MiB, buffer)
        self.assertTrue(source.load_into(MiB, MiB, buffer))
        self.assertEqual(data[MiB:2 * MiB], buffer)

    def test_source_load_into_short_volume_refused(self):
        path, _data = self.sparse_file(MiB + 100, [(MiB, b'a' * 100)])
        e = self.assertRaises(exception.InvalidVolume,
                              self._source(path).load_into,
                              MiB, 4096, bytearray(4096))
        self.assertIn('ended at offset %d' % (MiB + 100), str(e))

    def test_source_hole_queries_caller_offset_unchanged(self):
        path, _data = self.sparse_file(2 * MiB, [(MiB, b'a' * 4096)])
        with open(path, 'rb') as f:
            f.seek(12345)
            source = volume_io.VolumeSource(f)
            self.addCleanup(source.close)
            source.is_hole(0, MiB)
            source.holes(0, 2 * MiB, SHA, SHA)
            source.load(MiB, 4096)
            self.assertEqual(12345, f.tell())
            self.assertEqual(12345, source.start)

    def test_source_holes_aligned_and_smallest_kept(self):
        path, _data = self.sparse_file(
            4 * MiB, [(0, b'a' * 4096), (MiB + 4096, b'b' * 100),
                      (MiB + 64 * KiB, b'c' * 4096)])
        with open(path, 'rb') as f:
            source = volume_io.VolumeSource(f)
            self.addCleanup(source.close)
            holes = source.holes(0, 4 * MiB, 64 * KiB, 128 * KiB)
        # The hole after the first block shrinks to whole 64 KiB units;
        # the 60 KiB one between b and c is too small; the last one runs
        # to the end.
        self.assertEqual([(64 * KiB, MiB), (MiB + 128 * KiB, 4 * MiB)],
                         holes)

    def test_source_pipe_not_direct(self):
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b'data')
        os.close(write_fd)
        with os.fdopen(read_fd, 'rb') as f:
            source = volume_io.VolumeSource(f)
            self.assertFalse(source.direct)
            self.assertFalse(source.holes_known)
            self.assertFalse(source.is_hole(0, 4))

    def test_source_character_device_not_direct(self):
        with open('/dev/zero', 'rb') as f:
            self.assertEqual((None, False), volume_io.own_descriptor(f))

    def test_source_wrapper_with_descriptor_not_direct(self):
        path, data = self.sparse_file(2 * MiB, [(MiB, b'a' * 4096)])
        with open(path, 'rb') as f:
            wrapper = base.VolumeFile(f)
            self.assertEqual(f.fileno(), wrapper.fileno())
            source = volume_io.VolumeSource(wrapper)
            self.assertFalse(source.direct)
            self.assertEqual(data[MiB:MiB + 10], source.read_at(MiB, 10))

    def test_source_file_without_descriptor_not_direct(self):
        source = volume_io.VolumeSource(io.BytesIO(b'x' * 100))
        self.assertFalse(source.direct)
        self.assertEqual(b'x' * 10, source.read_at(5, 10))


class FullBackupShapesTestCase(_SparseTestCase, base.DriverTestCase):
    """Full backups of sparse files: objects cut at holes, restorable."""

    def setUp(self):
        super().setUp()
        self.conf.config(backup_file_size=MiB)
        self.conf.config(full_backup_object_bytes=256 * KiB,
                         group=chunked.PIPELINE_GROUP)
        self.useFixture(fixtures.MockPatchObject(
            cuts, 'HOLE_OBJECT_BYTES', 64 * KiB))
        self.driver = self.make_driver()

    def _back_up_file(self, path, **kwargs):
        with open(path, 'rb') as f:
            return self.make_backup(None, volume_file=f, **kwargs)

    def test_full_backup_sparse_file_objects_cut_at_holes(self):
        rnd = base.random_bytes(12 * KiB, seed=3)
        path, data = self.sparse_file(
            2 * MiB + 5000,
            [(0, base.text_bytes(40 * KiB)), (600 * KiB, rnd),
             (2 * MiB, b'tail' * 1250)])
        backup = self._back_up_file(path)
        objs = self.objects(backup)
        spans = [(o['offset'], o['length']) for _n, o in objs]
        # Contiguous, whole volume, none beyond 256 KiB.
        self.assertEqual(0, spans[0][0])
        for (off, length), (nxt, _l) in zip(spans, spans[1:]):
            self.assertEqual(off + length, nxt)
        self.assertEqual(len(data), sum(length for _o, length in spans))
        self.assertLessEqual(max(length for _o, length in spans), 256 * KiB)
        # The data at 0 and at 600 KiB end objects where holes begin.
        self.assertIn((0, 40 * KiB), spans)
        self.assertIn((600 * KiB, 12 * KiB), spans)
        self.assertEqual(base.sha256_list(data), self.sha256s(backup))
        # A new volume reads as zeros; an existing one holds old data.
        for is_new, fill in ((True, b'\0'), (False, b'\xee')):
            self.assertEqual(data, self.restore_bytes(
                backup, len(data), volume_is_new=is_new, fill=fill))

    def test_full_backup_holes_not_read(self):
        path, data = self.sparse_file(4 * MiB, [(MiB, b'z' * 8192)])
        reads = []
        real_pread = os.pread
        self.useFixture(fixtures.MockPatchObject(
            volume_io.os, 'pread',
            side_effect=lambda fd, n, off: reads.append(n) or
            real_pread(fd, n, off)))
        backup = self._back_up_file(path)
        self.assertLess(sum(reads), 128 * KiB)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False))

    def test_full_backup_object_bytes_zero_one_object_per_chunk(self):
        self.conf.config(full_backup_object_bytes=0,
                         group=chunked.PIPELINE_GROUP)
        driver = self.make_driver()
        path, data = self.sparse_file(2 * MiB, [(0, b'a' * 4096)])
        with open(path, 'rb') as f:
            backup = self.make_backup(None, volume_file=f, driver=driver)
        self.assertEqual([(0, MiB), (MiB, MiB)],
                         [(o['offset'], o['length'])
                          for _n, o in self.objects(backup)])

    def test_incremental_of_sparse_file_only_changes_stored(self):
        path, data = self.sparse_file(2 * MiB, [(0, b'a' * 8192)])
        full = self._back_up_file(path)
        with open(path, 'r+b') as f:
            f.seek(MiB + 4 * SHA)
            f.write(b'n' * SHA)
        with open(path, 'rb') as f:
            changed = f.read()
        incr = self._back_up_file(path, parent=full)
        self.assertEqual([(MiB + 4 * SHA, SHA)],
                         [(o['offset'], o['length'])
                          for _n, o in self.objects(incr)])
        self.assertEqual(base.sha256_list(changed), self.sha256s(incr))
        self.assertEqual(changed, self.restore_bytes(incr, len(changed),
                                                     volume_is_new=False))


@ddt.ddt
class ZeroFormTestCase(testtools.TestCase):
    """Zero objects recognised from their stored bytes."""

    def setUp(self):
        super().setUp()
        fresh_zero_forms(self)

    @ddt.data(0, 1, 65520, 65521, 65522, 4 * MiB + 3, 10 ** 9)
    def test_adler32_zeros_same_as_zlib(self, length):
        for start in (1, zlib.adler32(b'some data'), 0xfff0fff0):
            self.assertEqual(_adler32_in_steps(length, start),
                             compression.adler32_zeros(length, start))

    @ddt.data('zlib', 'gzip', 'bz2', 'zstd')
    def test_zero_form_learnt_once_then_recognised(self, algorithm):
        stored = compression.compress(algorithm, bytes(300 * KiB))
        # Nothing is encoded to recognise a form: it is learnt when an
        # object in that form decodes to zeros.
        self.assertFalse(compression.is_zero_form(algorithm, 300 * KiB,
                                                  stored))
        compression.remember_zero_form(algorithm, 300 * KiB, stored)
        self.assertTrue(compression.is_zero_form(algorithm, 300 * KiB,
                                                 stored))

    def test_zero_form_upstream_zlib_learnt_then_recognised(self):
        stored = zlib.compress(bytes(777 * KiB))
        compression.remember_zero_form('zlib', 777 * KiB, stored)
        self.assertTrue(compression.is_zero_form('zlib', 777 * KiB, stored))

    def test_zero_form_other_length_or_data_not_recognised(self):
        stored = zlib.compress(bytes(100 * KiB))
        self.assertFalse(compression.is_zero_form('zlib', 100 * KiB + 1,
                                                  stored))
        self.assertFalse(compression.is_zero_form(
            'zlib', 100 * KiB, zlib.compress(b'\1' + bytes(100 * KiB - 1))))

    def test_zero_form_none_is_zero_test(self):
        self.assertTrue(compression.is_zero_form('none', 10, bytes(10)))
        self.assertFalse(compression.is_zero_form('none', 10, bytes(9)))
        self.assertFalse(compression.is_zero_form('none', 2, b'\0\1'))


def fresh_zero_forms(testcase):
    """No zero form remembered by an earlier test."""
    testcase.useFixture(fixtures.MockPatchObject(
        compression, '_zero_forms', collections.OrderedDict()))


def _adler32_in_steps(length, start):
    value, step = start, bytes(4 * MiB)
    while length:
        n = min(length, len(step))
        value = zlib.adler32(step[:n], value)
        length -= n
    return value


class ZeroObjectRestoreTestCase(base.DriverTestCase):
    """Restores of zero objects decode nothing when the form is known."""

    def setUp(self):
        super().setUp()
        fresh_zero_forms(self)
        self.decodes = []
        real = compression.open_decoding_reader
        self.useFixture(fixtures.MockPatchObject(
            objects.compression, 'open_decoding_reader',
            side_effect=lambda name, source, *a: self.decodes.append(name)
            or real(name, source, *a)))

    def _zero_backup(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        driver = self.make_driver()
        data = bytes(3 * base.CHUNK)
        return data, self.make_backup(data, driver=driver)

    def test_zero_objects_existing_volume_decoded_once_then_known(self):
        data, backup = self._zero_backup('zlib')
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False,
                                                  fill=b'\xab'))
        # The first zero objects of a form and length are decoded (one
        # per worker and one on the restore's own thread at most: they
        # may be fetched side by side before the first is remembered);
        # the others, and every one of a later restore, are known.
        self.assertGreaterEqual(len(self.decodes), 1)
        self.assertLessEqual(len(self.decodes),
                             self.driver.settings.workers + 1)
        first = len(self.decodes)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False,
                                                  fill=b'\xab'))
        self.assertEqual(first, len(self.decodes))

    def test_zero_object_unknown_form_decoded_once_then_known(self):
        data, backup = self._zero_backup('zstd')
        # Replace every object by another zstd encoding of the zeros.
        encoder = zstandard.ZstdCompressor(level=1, write_checksum=True)
        other = encoder.compress(bytes(base.CHUNK))
        for name, _fields in self.objects(backup):
            self.write_file(backup, name, other)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False,
                                                  fill=b'\xab'))
        first = len(self.decodes)
        self.assertGreaterEqual(first, 1)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  volume_is_new=False,
                                                  fill=b'\xab'))
        self.assertEqual(first, len(self.decodes))

    def test_zero_object_damaged_form_reported(self):
        data, backup = self._zero_backup('zlib')
        name = self.objects(backup)[1][0]
        self.write_file(backup, name, zlib.compress(b'\1' * base.CHUNK))
        self.assertRaises(exception.ChecksumMismatch, self.restore_bytes,
                          backup, len(data), volume_is_new=False)

    def test_zero_object_md5_is_zeros(self):
        _data, backup = self._zero_backup('zlib')
        for _name, fields in self.objects(backup):
            self.assertEqual(
                hashlib.md5(bytes(fields['length'])).hexdigest(),
                fields['md5'])
            self.assertEqual(pipeline.zero_md5(fields['length']),
                             fields['md5'])


class ParallelCommitTestCase(base.DriverTestCase):
    """Small objects commit side by side, each fsynced before its rename."""

    def test_small_objects_each_fsynced_before_renamed(self):
        # posix_sync = fsync: each file (syncfs: test_posix_durability).
        self.conf.config(posix_sync='fsync', group='chunked_backup')
        self.driver = self.make_driver()
        events = []
        lock = threading.Lock()
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd):
            try:
                path = os.readlink('/proc/self/fd/%d' % fd)
            except OSError:
                path = None
            real_fsync(fd)
            with lock:
                events.append(('fsync', path))

        def rename(src, dst):
            real_rename(src, dst)
            with lock:
                events.append(('rename', os.path.realpath(src),
                               os.path.realpath(dst)))

        self.useFixture(fixtures.MockPatchObject(posix_store.os, 'fsync',
                                                 fsync))
        self.useFixture(fixtures.MockPatchObject(posix_store.os, 'rename',
                                                 rename))
        data = base.mixed_volume(chunks=6)
        full = self.make_backup(data)
        changed = bytearray(data)
        for block in range(0, len(data) // SHA, 3):
            changed[block * SHA] ^= 0xff
        events.clear()
        incr = self.make_backup(bytes(changed), parent=full)
        renames = [e for e in events if e[0] == 'rename']
        names = [n for n, _f in self.objects(incr)]
        self.assertGreater(len(names), 10)
        self.assertEqual(sorted(self.files(incr)),
                         sorted(os.path.basename(dst)
                                for _e, _s, dst in renames))
        for index, event in enumerate(events):
            if event[0] == 'rename':
                self.assertIn(('fsync', event[1]), events[:index])
        self.assertEqual(bytes(changed), self.restore_bytes(
            incr, len(changed), volume_is_new=False))

    def test_posix_store_commits_several_at_once(self):
        self.assertGreater(posix_store.PosixStore.max_concurrent_writes, 1)

    def test_small_objects_in_the_works_bounded_by_the_store(self):
        # An incremental's small objects are made and committed at most
        # ``max_concurrent_small_writes`` at once, whatever the workers.
        self.useFixture(fixtures.MockPatchObject(
            posix_store.PosixStore, 'max_concurrent_small_writes', 2))
        self.driver = self.make_driver(workers=8,
                                       group=chunked.PIPELINE_GROUP)
        lock = threading.Lock()
        open_now = [0]
        most = [0]
        real_init = posix_store._AtomicFileWriter.__init__
        real_commit = posix_store._AtomicFileWriter._commit

        def init(writer, *args, **kwargs):
            real_init(writer, *args, **kwargs)
            with lock:
                open_now[0] += 1
                most[0] = max(most[0], open_now[0])

        def commit(writer):
            try:
                real_commit(writer)
            finally:
                with lock:
                    open_now[0] -= 1

        data = base.mixed_volume(chunks=6)
        full = self.make_backup(data)
        changed = bytearray(data)
        for block in range(0, len(data) // SHA, 3):
            changed[block * SHA] ^= 0xff
        self.useFixture(fixtures.MockPatchObject(
            posix_store._AtomicFileWriter, '__init__', init))
        self.useFixture(fixtures.MockPatchObject(
            posix_store._AtomicFileWriter, '_commit', commit))
        incr = self.make_backup(bytes(changed), parent=full)
        self.assertGreater(len(self.objects(incr)), 10)
        self.assertGreaterEqual(most[0], 1)
        self.assertLessEqual(most[0], 2)
        self.assertEqual(bytes(changed), self.restore_bytes(
            incr, len(changed), volume_is_new=False))


class WholeObjectsAtOnceTestCase(testtools.TestCase):
    """How many whole objects are in the works, by size and store."""

    def driver(self, small=None, workers=8, in_flight=256 * MiB):
        class Settings(object):
            pass
        settings = Settings()
        settings.workers = workers
        settings.max_bytes_in_flight = in_flight
        self.share = in_flight

        class Driver(object):
            max_concurrent_small_writes = small

            def piece_bytes(self):
                return 4 * MiB
        driver = Driver()
        driver.settings = settings
        return driver

    def test_pieces_as_many_as_the_store_finds_worth(self):
        self.assertEqual(4, cuts.whole_objects_at_once(
            self.driver(small=4), 32 * KiB, 16, self.share))

    def test_pieces_all_commits_when_store_says_nothing(self):
        self.assertEqual(16, cuts.whole_objects_at_once(
            self.driver(small=None), 32 * KiB, 16, self.share))

    def test_pieces_never_more_than_commits_or_memory(self):
        self.assertEqual(3, cuts.whole_objects_at_once(
            self.driver(small=8), 32 * KiB, 3, self.share))
        # Pieces get half of the share: the other half is being hashed.
        self.assertEqual(1, cuts.whole_objects_at_once(
            self.driver(small=8, in_flight=16 * MiB), 4 * MiB, 16,
            self.share))
        self.assertEqual(2, cuts.whole_objects_at_once(
            self.driver(small=8, in_flight=32 * MiB), 4 * MiB, 16,
            self.share))

    def test_large_objects_one_per_worker_whatever_small_says(self):
        self.assertEqual(9, cuts.whole_objects_at_once(
            self.driver(small=4, workers=8, in_flight=1024 * MiB), 16 * MiB,
            16, self.share))
        self.assertEqual(3, cuts.whole_objects_at_once(
            self.driver(small=4, workers=2), 16 * MiB, 16, self.share))

    def test_posix_small_writes_fewer_than_commits(self):
        store = posix_store.PosixStore
        self.assertGreaterEqual(store.max_concurrent_small_writes, 2)
        self.assertLess(store.max_concurrent_small_writes,
                        store.max_concurrent_writes)


class ProxiedVolumeWritesTestCase(testtools.TestCase):
    """Restore writes reach the volume behind a tpool proxy directly.

    They run on a native worker thread already; going through the
    proxy costs a thread lookup in eventlet's ``tpool.execute`` per call.
    """

    def setUp(self):
        super().setUp()
        from eventlet import tpool
        self.volume = io.BytesIO(bytes(4 * MiB))
        self.proxied = tpool.Proxy(self.volume)
        # Any call through the proxy fails the test.
        self.useFixture(fixtures.MockPatchObject(
            tpool, 'proxy_call', side_effect=AssertionError('proxied')))

    def test_write_at_proxied_volume_written_directly(self):
        volume_io.write_at(self.proxied, MiB, b'x' * 10)
        self.assertEqual(b'x' * 10, self.volume.getvalue()[MiB:MiB + 10])

    def test_write_skipping_zeros_proxied_volume_written_directly(self):
        data = bytes(MiB) + b'y' * MiB
        volume_io.write_skipping_zeros(self.proxied, 0, data)
        self.assertEqual(data, self.volume.getvalue()[:2 * MiB])

    def test_flush_and_sync_proxied_volume_flushed_directly(self):
        volume_io.flush(self.proxied)
        volume_io.flush_and_sync(self.proxied)
