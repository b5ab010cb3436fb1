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

"""The data path of a backup, top to bottom.

:class:`BackupJob` runs one backup for a :class:`ChunkedBackupDriver`:

1. ``run`` checks the geometry, loads the parent's block hashes for an
   incremental backup and prepares the container, the object prefix and
   the metadata to fill (:mod:`~cinder_chunked_ext.engine.backup_records`).
2. The volume is cut into chunks of the driver's ``chunk_size_bytes``
   (``_backup_chunks``).  A full backup stores each chunk as objects of
   at most ``full_backup_object_bytes``; an incremental one hashes the
   chunk on the pool, piece by piece, and stores each run of changed
   hash blocks as one object as soon as its end is known, while the
   hashing goes on (``_backup_changed_runs``).  Objects no larger than a
   piece are written whole by a worker, several at once
   (``_write_small_object``), and committed (written, fsynced, renamed)
   as many at once as the store allows, so that their fsyncs overlap.
   When the volume is a file or a device, each worker reads its own
   piece (``VolumeSource.load``), and the holes of a file are not read
   at all.
3. ``_store_object`` streams one larger object (``_stream_object``):
   pieces of a few MiB are read in order and analysed on the worker pool
   (zero test, SHA-256 per hash block, compression of splittable codecs);
   then two lanes take them in order, one keeping the object's MD5, the
   other framing the stored form and writing it.  At most
   ``max_bytes_in_flight`` of pieces are pending at once.  When
   compression did not make the object smaller it is written again raw,
   as upstream records it.  Objects commit (an upload, for S3) in the
   background, a bounded number at a time.
4. ``backup_records.finalize`` writes ``<prefix>_sha256file`` and then
   ``<prefix>_metadata``: a backup is complete only once its metadata
   exists, so a failure anywhere before leaves nothing that looks
   restorable.

A backup whose status turns ``deleting``/``deleted`` is cancelled: the
job stops writing, and the driver deletes what was written.
"""

import contextlib
import hashlib
import time

from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import backup_records
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import cuts
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import notifications
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

# Pieces handed to the in-order lanes and not yet through them.
LANE_DEPTH = 8
# How often, at most, a running backup re-reads its status.
STATUS_CHECK_SECONDS = 1.0


class _Incompressible(Exception):
    """Raised inside an object writer to drop a compressed attempt."""


class _Cancelled(Exception):
    """Raised inside an object writer when the backup is being deleted."""


def _check_length(data, start, size):
    if len(data) != size:
        raise exception.InvalidVolume(
            reason='the volume ended at offset %d while reading %d '
                   'bytes at %d' % (start + len(data), size, start))


def _hash_read_piece(start, size, data, block_size):
    """Hash one piece read by the caller (a worker's job)."""
    return start, size, pipeline.hash_piece(data, block_size)


def _emit(encoder, writer, result):
    """Frame one analysed piece and write it (an output lane's step)."""
    out = (encoder.feed(result.data, result.encoded, result.zero)
           if encoder is not None else result.data)
    if out:
        writer.write(out)
    return len(out)


def _emit_bytes(writer, data):
    writer.write(data)
    return len(data)


class BackupJob(object):
    """One backup of one volume, from the first read to the metadata.

    The job holds the run's state (the container, the prefix, the
    objects written, the block hashes); the driver it was made for
    provides the geometry, the settings and the storage methods.
    """

    def __init__(self, driver, backup, volume_file):
        self.driver = driver
        self.settings = driver.settings
        self.block_size = driver.sha_block_size_bytes
        self.backup = backup
        self.volume_file = volume_file
        self.container = None
        self.prefix = None
        self.extra_metadata = None
        self.volume_size_bytes = 0
        self.metadata = None
        self.parent_hashes = None
        self.hashes = []
        self.next_number = 1
        self.bytes_done = 0
        self.cancelled = False
        self.last_status_check = 0.0
        # The machinery, set by ``run`` for the duration of the backup.
        self.source = None
        self.pool = None
        self.commits = None      # OrderedWindow of object commits
        self.small = None        # OrderedWindow of whole small objects
        self.whole_object_bytes = 0
        self.md5_lane = None
        self.out_lane = None
        self.progress = None

    @property
    def incremental(self):
        return self.parent_hashes is not None

    # -- the backup, top to bottom -------------------------------------------

    def run(self, backup_metadata=True):
        """Back up the volume; incremental when ``parent_id`` is set."""
        driver = self.driver
        if driver.chunk_size_bytes % self.block_size:
            raise exception.InvalidBackup(
                reason='Chunk size is not multiple of block size for '
                       'creating hash.')
        self.parent_hashes = backup_records.parent_hashes(
            driver, self.backup, self.block_size)
        target = backup_records.prepare(driver, self.backup)
        self.container = target.container
        self.prefix = target.prefix
        self.extra_metadata = target.extra_metadata
        self.metadata = target.metadata
        self.volume_size_bytes = target.volume_size_bytes
        LOG.info('Backing up volume %(volume)s as backup %(backup)s '
                 '(%(kind)s, compression %(algo)s, %(workers)d workers) '
                 'into container %(container)s.',
                 {'volume': self.backup.volume_id, 'backup': self.backup.id,
                  'kind': 'incremental' if self.incremental else 'full',
                  'algo': self.settings.compression,
                  'workers': self.settings.workers,
                  'container': self.container})
        self.progress = notifications.ProgressNotifier(
            driver.env, self, self.settings, driver.enable_progress_timer)
        self.source = volume_io.VolumeSource(self.volume_file)
        writes_at_once = max(1, driver.max_concurrent_writes)
        # Commits wait on the disk or the network, not a CPU: they get a
        # pool of their own, as large as the store accepts commits.
        with concurrency.WorkerPool(self.settings.workers) as pool, \
                concurrency.WorkerPool(writes_at_once) as io_pool:
            self.pool = pool
            self.md5_lane = pool.lane()
            self.out_lane = pool.lane()
            self.commits = concurrency.OrderedWindow(io_pool, writes_at_once)
            # Small objects are stored (committed) by the workers that
            # make them: as many at once as the store accepts commits and
            # the memory bound allows (an object and its stored form).
            self.whole_object_bytes = cuts.whole_object_bytes(
                driver, self.incremental)
            self.small = concurrency.OrderedWindow(
                io_pool, cuts.whole_objects_at_once(
                    driver, self.whole_object_bytes, writes_at_once))
            try:
                self._backup_chunks()
                self._settle_small_objects()
                while len(self.commits):
                    self.commits.pop()   # raises the first failed commit
            except exception.ObjectNotFound:
                # A forced delete removes the objects (on POSIX, their
                # directory) under a running backup: a commit then finds
                # nothing to commit into.  That is the cancellation,
                # not a failure of the backup.
                if not self._cancelled(force=True):
                    raise
            finally:
                # Nothing may still write once we return or raise.
                self.small.drain()
                self.commits.drain()
                self.source.close()
        if self.cancelled:
            # Delete what was written, now that nothing writes any more.
            driver.delete_backup(self.backup)
            LOG.info('Backup %s was cancelled; its objects were deleted.',
                     self.backup.id)
            return
        self.progress.finished()
        if backup_metadata:
            backup_records.add_volume_metadata(driver, self.backup,
                                               self.metadata)
        backup_records.finalize(driver, self.backup, self.container,
                                self.metadata, self.block_size, self.hashes,
                                self.next_number - 1)

    def _backup_chunks(self):
        source = self.source
        chunk_size = self.driver.chunk_size_bytes
        offset = source.start
        while True:
            if self._cancelled(force=True):
                return
            length = source.chunk_length(offset, chunk_size)
            if length == 0:
                return
            if self.incremental:
                self._backup_changed_runs(offset, length)
            else:
                for start, size in cuts.full_objects(
                        self.driver, self.source, offset, length):
                    self._store_any_object(start, size, True)
                    if self.cancelled:
                        return
            if self.cancelled:
                return
            offset += length
            # Done means stored: objects still being stored count as they
            # finish (``_finish_small_object``), never ahead of time; a
            # timed notification waits for them.
            if self.progress.due():
                self._settle_small_objects()
            if not len(self.small):
                self.bytes_done = offset - source.start
            self.progress.tick()

    def _cancelled(self, force=False):
        """Re-read the backup's status; cancel on deleting/deleted."""
        now = time.monotonic()
        if not force and now - self.last_status_check < STATUS_CHECK_SECONDS:
            return self.cancelled
        self.last_status_check = now
        backup = self.backup
        with backup.as_read_deleted():
            backup.refresh()
        if backup.status in (cinder_compat.BackupStatus.DELETING,
                             cinder_compat.BackupStatus.DELETED):
            self.cancelled = True
        return self.cancelled

    def _backup_changed_runs(self, offset, length):
        """Hash one chunk and store its runs of changed blocks.

        The pieces are hashed on the pool in order, and each run of
        changed blocks is stored as soon as the pieces hashed so far show
        where it ends, while the pool goes on hashing: the hashing pass
        (CPU) and the objects' writes (the disk or the network) overlap.
        A run never crosses the chunk's end, as upstream's never do.
        """
        runs = pipeline.ChangedRuns(self.parent_hashes, self.block_size)
        # Closed on the way out, so that no hashing outlives a failure.
        with contextlib.closing(self._hashed_pieces(offset, length)) as hashed:
            for start, size, hashes in hashed:
                self.hashes.extend(hashes)
                for run_offset, run_length in runs.feed(start, hashes, size):
                    self._store_any_object(run_offset, run_length, False)
                    if self.cancelled:
                        return
        for run_offset, run_length in runs.finish():
            self._store_any_object(run_offset, run_length, False)

    def _hashed_pieces(self, offset, length):
        """``(start, size, block hashes)`` of a chunk's pieces, in order."""
        window = concurrency.OrderedWindow(self.pool,
                                           self.driver._window_depth())
        try:
            for start, size in cuts.pieces(self.driver, offset, length):
                while window.full or window.ready:
                    yield window.pop()[1]
                if self.source.direct:
                    window.submit(start, self._hash_at, start, size)
                else:
                    window.submit(start, _hash_read_piece, start, size,
                                  self._read_piece(start, size),
                                  self.block_size)
            while len(window):
                yield window.pop()[1]
        finally:
            window.drain()

    def _read_piece(self, start, size):
        data = self.source.read_at(start, size)
        _check_length(data, start, size)
        return data

    def _load(self, start, size):
        """``(data, zero)`` of a piece, read on this worker.

        ``zero`` is True for a hole (the data is then a shared buffer of
        zeros), None when the data has to be tested.
        """
        data = self.source.load(start, size)
        if data is None:
            return pipeline.zeros(size), True
        _check_length(data, start, size)
        return data, None

    def _hash_at(self, start, size):
        """Read and hash one piece (a worker's job, direct sources)."""
        data, zero = self._load(start, size)
        return start, size, pipeline.block_hashes(
            data, self.block_size, zero or pipeline.is_zero(data))

    def _analyse_at(self, start, size, piece_encoder, want_hashes):
        """Read and analyse one piece (a worker's job, direct sources)."""
        data, zero = self._load(start, size)
        return pipeline.analyse_piece(data, self.block_size, piece_encoder,
                                      want_hashes, zero=zero)

    # -- objects -------------------------------------------------------------

    def _store_any_object(self, offset, length, want_hashes):
        """Store ``[offset, offset + length)`` as the next object.

        An object no larger than ``whole_object_bytes``
        (:func:`cuts.whole_object_bytes`) is handed whole to a worker,
        several at once (incremental backups are mostly such objects, and
        so are full backups' objects on a file system); a larger one is
        streamed.
        """
        if length <= self.whole_object_bytes:
            if self._cancelled():
                return
            # A direct source is read by the worker that stores the object.
            data = (None if self.source.direct
                    else self._read_piece(offset, length))
            name = manifest.object_name(self.prefix, self.next_number)
            self.next_number += 1
            while self.small.full or self.small.ready:
                self._finish_small_object(self.small.pop()[1])
            self.small.submit(name, self._write_small_object, name, offset,
                              length, data, want_hashes)
            return
        # Objects are recorded in number order: settle the small ones.
        self._settle_small_objects()
        self._store_object(offset, length,
                           self.hashes if want_hashes else None)

    def _settle_small_objects(self):
        while len(self.small):
            self._finish_small_object(self.small.pop()[1])

    def _finish_small_object(self, result):
        record, hashes = result
        if hashes is not None:
            self.hashes.extend(hashes)
        self.metadata.objects.append(record)
        self.bytes_done = max(self.bytes_done,
                              record.end - self.source.start)
        self.progress.object_written()

    def _write_small_object(self, name, offset, length, data, want_hashes):
        """Hash, compress and store one whole small object (a worker's job).

        Returns its record and, when asked, its block hashes.  ``data`` is
        None when the worker reads it from a direct source.
        """
        algorithm = self.settings.compression
        zero = None
        if data is None:
            data, zero = self._load(offset, length)
        # Analysed and encoded piece by piece, as a streamed object is:
        # the stored bytes are the same whichever path made them.
        step = self.driver._piece_bytes()
        view = memoryview(data)
        piece_encoder = compression.parallel_piece_encoder(algorithm)
        results = [pipeline.analyse_piece(view[start:start + step],
                                          self.block_size, piece_encoder,
                                          want_hashes, zero=zero)
                   for start in range(0, len(data), step)]
        all_zero = all(result.zero for result in results)
        md5 = (pipeline.zero_md5(len(data)) if all_zero
               else hashlib.md5(data, usedforsecurity=False).hexdigest())
        hashes = None
        if want_hashes:
            hashes = [sha for result in results for sha in result.hashes]
        stored, stored_as = [data], 'none'
        encoder = compression.new_object_encoder(algorithm, len(data))
        if encoder is not None:
            # Written in its parts: joined, they would be one more copy.
            parts = ([encoder.start()] +
                     [encoder.feed(result.data, result.encoded, result.zero)
                      for result in results] +
                     [encoder.finish()])
            if sum(len(part) for part in parts) < len(data):
                stored, stored_as = parts, algorithm
        with self.driver.get_object_writer(
                self.container, name,
                extra_metadata=self.extra_metadata) as writer:
            for part in stored:
                if part:
                    writer.write(part)
        record = manifest.ObjectRecord(name=name, offset=offset,
                                       length=len(data),
                                       compression=stored_as, md5=md5)
        return record, hashes

    def _store_object(self, offset, length, hashes_out):
        """Write one data object covering ``[offset, offset + length)``."""
        name = manifest.object_name(self.prefix, self.next_number)
        algorithm = self.settings.compression
        md5 = None
        try:
            if compression.family(algorithm) is not None:
                try:
                    md5 = self._stream_object(name, offset, length,
                                              algorithm, hashes_out)
                except _Incompressible:
                    LOG.debug('Compression of %s was ineffective; storing '
                              'it raw.', name)
                    hashes_out = None  # collected by the first attempt
            if md5 is None:
                algorithm = 'none'
                md5 = self._stream_object(name, offset, length, None,
                                          hashes_out)
        except _Cancelled:
            return
        self.metadata.objects.append(manifest.ObjectRecord(
            name=name, offset=offset, length=length,
            compression=algorithm, md5=md5))
        self.next_number += 1
        # Count this object's bytes before a notification reports them.
        self.bytes_done = max(self.bytes_done,
                              offset + length - self.source.start)
        self.progress.object_written()

    def _stream_object(self, name, offset, length, algorithm, hashes_out):
        """Read, analyse and write one object; return its MD5.

        Pieces are read in order, analysed on the pool (zero test, block
        hashes, compression of splittable codecs), then handed to two
        lanes that see them in order: one keeps the MD5, the other frames
        the stored form and writes it.  Raises _Incompressible, after
        dropping what was written, when the stored form would not be
        smaller than the data.
        """
        piece_encoder = (compression.parallel_piece_encoder(algorithm)
                         if algorithm else None)
        # zstd runs single-threaded on the output lane: fed piece by piece,
        # its own worker threads cost more than they bring.
        encoder = (compression.new_object_encoder(algorithm, length)
                   if algorithm else None)
        writer = self.driver.get_object_writer(
            self.container, name, extra_metadata=self.extra_metadata)
        window = concurrency.OrderedWindow(self.pool,
                                           self.driver._window_depth())
        lanes = concurrency.LanePair(self.md5_lane, self.out_lane, LANE_DEPTH)
        digest = pipeline.ZeroAwareMd5()
        want_hashes = hashes_out is not None

        def hand_over(result):
            if want_hashes:
                hashes_out.extend(result.hashes)
            lanes.submit((digest.update, result.data, result.zero),
                         (_emit, encoder, writer, result))

        try:
            if encoder is not None:
                lanes.submit(None, (_emit_bytes, writer, encoder.start()))
            for start, size in cuts.pieces(self.driver, offset, length):
                if self._cancelled():
                    raise _Cancelled()
                # Results leave the window as soon as they are there, so
                # the lanes start with the first piece, not when the
                # window is full.
                while window.full or window.ready:
                    hand_over(window.pop()[1])
                if self.source.direct:
                    window.submit(start, self._analyse_at, start, size,
                                  piece_encoder, want_hashes)
                else:
                    window.submit(start, pipeline.analyse_piece,
                                  self._read_piece(start, size),
                                  self.block_size, piece_encoder,
                                  want_hashes)
            while len(window):
                hand_over(window.pop()[1])
            stored = lanes.finish()
            if encoder is not None:
                tail = encoder.finish()
                if stored + len(tail) >= length:
                    raise _Incompressible()
                concurrency.execute(writer.write, tail)
            # Commit (upload) in the background, a bounded number at
            # once; an earlier object's failed commit aborts this one.
            if self.commits.full:
                self.commits.pop()
        except BaseException as e:
            window.drain()
            lanes.drain()
            concurrency.execute(writer.__exit__, type(e), e, None)
            raise
        self.commits.submit(name, writer.__exit__, None, None, None)
        return digest.hexdigest()
