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

"""A backup reads each byte of the volume once and stores what it hashed.

If the volume changes between two reads of the same region (a volume in
use, an RBD image being written), a backup that hashes one read and
stores another records hashes of data it did not store: the next
incremental skips blocks it should store, and a restore returns wrong
data without an error.  Reading twice also doubles the I/O of the
changed regions (incremental backups) or of a whole random volume
(compression attempted, then dropped).
"""

import io
import os

import ddt
import fixtures

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext.tests.unit import test_chunked_backup as base


class ChangingVolume(object):
    """A volume whose every region changes right after it is read.

    What a reader sees is whatever was there when it read; a second read
    of a region returns other bytes.  ``bytes_read`` counts every read.
    """

    def __init__(self, data):
        self._buf = bytearray(data)
        self._pos = 0
        self.bytes_read = 0

    def read(self, size=-1):
        start = self._pos
        end = len(self._buf)
        if size >= 0:
            end = min(end, start + size)
        out = bytes(self._buf[start:end])
        for block in range(start, end, base.SHA):
            self._buf[block] ^= 0xff        # a writer was here
        self._pos = end
        self.bytes_read += len(out)
        return out

    def seek(self, offset, whence=os.SEEK_SET):
        self._pos = offset if whence == os.SEEK_SET else len(self._buf)
        return self._pos

    def tell(self):
        return self._pos


def changed_copy(data):
    """``data`` with a changed region in each of a few chunks."""
    out = bytearray(data)
    for start in (base.SHA, 3 * base.CHUNK + 5, 4 * base.CHUNK + 3 * base.SHA):
        out[start:start + 3 * base.SHA] = os.urandom(3 * base.SHA)
    return bytes(out)


@ddt.ddt
class IncrementalSingleReadTestCase(base.DriverTestCase):

    def _check_hashes_are_of_stored_bytes(self, full, inc, size):
        restored = self.restore_bytes(inc, size)
        self.assertEqual(base.sha256_list(restored), self.sha256s(inc))
        return restored

    def test_incremental_volume_changing_under_it_hashes_what_it_stores(self):
        data = base.mixed_volume(chunks=6)
        full = self.make_backup(data)
        volume = ChangingVolume(changed_copy(data))
        inc = self.make_backup(None, parent=full, volume_file=volume)
        self.assertEqual(len(data), volume.bytes_read)
        self._check_hashes_are_of_stored_bytes(full, inc, len(data))

    def test_incremental_direct_file_changing_under_it_hashes_what_stored(
            self):
        data = base.mixed_volume(chunks=6)
        full = self.make_backup(data)
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'vol')
        with open(path, 'wb') as f:
            f.write(changed_copy(data))
        loaded = []

        def after_read(offset, size):
            loaded.append(size)
            # A writer changes the region right after it was read.
            with open(path, 'r+b') as f:
                f.seek(offset)
                f.write(bytes(b ^ 0xff for b in f.read(8)))
        real_load = volume_io.VolumeSource.load
        real_load_into = volume_io.VolumeSource.load_into

        def load(source, offset, size):
            got = real_load(source, offset, size)
            after_read(offset, size)
            return got

        def load_into(source, offset, size, buffer):
            got = real_load_into(source, offset, size, buffer)
            after_read(offset, size)
            return got
        self.useFixture(fixtures.MockPatchObject(
            volume_io.VolumeSource, 'load', load))
        self.useFixture(fixtures.MockPatchObject(
            volume_io.VolumeSource, 'load_into', load_into))
        with open(path, 'rb') as volume:
            inc = self.make_backup(None, parent=full, volume_file=volume)
        self.assertEqual(len(data), sum(loaded))
        self._check_hashes_are_of_stored_bytes(full, inc, len(data))

    def _volume_file(self, data):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'vol')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def _buffers_taken_one_worker(self):
        """The ids of the read buffers taken, and a one-worker driver."""
        taken = []
        real_take = pipeline.ReadBuffers.take

        def take(buffers):
            buffer = real_take(buffers)
            taken.append(id(buffer))
            return buffer
        self.useFixture(fixtures.MockPatchObject(
            pipeline.ReadBuffers, 'take', take))
        return taken, self.make_driver(workers=1,
                                       group=chunked.PIPELINE_GROUP)

    def test_incremental_direct_file_pieces_read_into_reused_buffers(self):
        # Every piece has a changed block; the pieces are read into a few
        # buffers taken again and again, and what is stored is copies of
        # the changed runs, never bytes of a piece read later.
        data = base.mixed_volume(chunks=6)
        changed = bytearray(data)
        for offset in range(base.SHA, len(data), base.PIECE):
            changed[offset:offset + 10] = os.urandom(10)
        full = self.make_backup(data)
        path = self._volume_file(changed)
        taken, driver = self._buffers_taken_one_worker()
        with open(path, 'rb') as volume:
            inc = self.make_backup(None, parent=full, volume_file=volume,
                                   driver=driver)
        self.assertEqual(len(data) // base.PIECE, len(taken))
        self.assertLess(len(set(taken)), len(taken) // 2)
        restored = self._check_hashes_are_of_stored_bytes(full, inc,
                                                          len(data))
        self.assertEqual(bytes(changed), restored)

    def test_full_direct_file_objects_read_into_reused_buffers(self):
        data = base.mixed_volume(chunks=6)
        path = self._volume_file(data)
        taken, driver = self._buffers_taken_one_worker()
        with open(path, 'rb') as volume:
            full = self.make_backup(None, volume_file=volume, driver=driver)
        self.assertGreater(len(taken), 4)
        self.assertLess(len(set(taken)), len(taken) // 2)
        self.assertEqual(data, self.restore_bytes(full, len(data)))
        self.assertEqual(base.sha256_list(data), self.sha256s(full))

    def test_incremental_long_run_objects_of_a_piece_restored(self):
        data = base.mixed_volume(chunks=4)
        full = self.make_backup(data)
        changed = bytearray(data)
        changed[base.CHUNK:2 * base.CHUNK] = os.urandom(base.CHUNK)
        inc = self.make_backup(bytes(changed), parent=full)
        lengths = [entry[name]['length']
                   for entry in self.metadata(inc)['objects']
                   for name in entry]
        self.assertEqual([base.PIECE] * (base.CHUNK // base.PIECE), lengths)
        self.assertEqual(bytes(changed), self.restore_bytes(
            inc, len(changed), volume_is_new=False, fill=b'\x55'))


class CountingVolume(io.BytesIO):
    """A volume file that is not a plain file: read through ``read``."""

    bytes_read = 0

    def read(self, size=-1):
        out = super().read(size)
        self.bytes_read += len(out)
        return out

    def fileno(self):
        raise io.UnsupportedOperation('no descriptor')


@ddt.ddt
class IncompressibleSingleReadTestCase(base.DriverTestCase):
    """Streamed objects of random data are read once and stored raw."""

    def streaming_driver(self, algorithm):
        driver = self.make_driver(backup_compression_algorithm=algorithm)
        # Stores that hold objects until their upload (S3, Swift) stream
        # the objects larger than a piece.
        driver.store.streams_writes = False
        return driver

    @ddt.data('zlib', 'zstd', 'bz2')
    def test_random_volume_read_once_stored_raw(self, algorithm):
        driver = self.streaming_driver(algorithm)
        data = os.urandom(3 * base.CHUNK + 100)
        volume = CountingVolume(data)
        backup = self.make_backup(data, driver=driver, volume_file=volume)
        self.assertEqual(len(data), volume.bytes_read)
        stored = {entry[name]['compression']
                  for entry in self.metadata(backup)['objects']
                  for name in entry}
        self.assertEqual({'none'}, stored)
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=driver))

    @ddt.data('zlib', 'zstd')
    def test_text_then_random_object_read_once_compressed_restored(
            self, algorithm):
        driver = self.streaming_driver(algorithm)
        data = (base.text_bytes(base.PIECE) +
                os.urandom(base.CHUNK - base.PIECE))
        volume = CountingVolume(data)
        backup = self.make_backup(data, driver=driver, volume_file=volume)
        self.assertEqual(len(data), volume.bytes_read)
        entry = self.metadata(backup)['objects'][0]
        self.assertEqual(algorithm, list(entry.values())[0]['compression'])
        self.assertEqual(data, self.restore_bytes(backup, len(data),
                                                  driver=driver))
