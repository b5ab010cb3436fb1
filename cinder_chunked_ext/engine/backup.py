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
   hash blocks (in objects of at most a piece) as soon as its end is
   known, while the hashing goes on, from copies of the very bytes it
   hashed (``_backup_changed_runs``): every byte is read once, and the
   hashes recorded are those of the bytes stored.  Objects no larger than a
   piece are written whole by a worker, several at once
   (``_write_small_object``).  Where the store has a durability barrier
   (POSIX), they are not synced one by one: the barrier makes them
   durable together (:mod:`.durability`: parallel fsyncs, renames, one
   sync per directory) before the sha256file and the metadata are
   written.
   When the volume is a file or a device, each worker reads its own
   piece or whole object (``VolumeSource.load_into``), into a buffer of
   the backup's pool (``read_buffers``) that it gives back once done,
   and the holes of a file are not read at all.
3. ``_store_object`` streams one larger object (``_stream_object``):
   pieces of a few MiB are read in order and analysed on the worker pool
   (zero test, SHA-256 per hash block, compression of splittable codecs);
   then two lanes take them in order, one keeping the object's MD5, the
   other framing the stored form and writing it.  The operation's share
   of the process's ``max_bytes_in_flight`` (:mod:`.budget`) bounds the
   pieces pending.  Whether the object is stored compressed is decided
   at its first piece, from what the workers learned of it: random data
   (an encrypted volume) is stored raw without being read twice.
   Objects commit (an upload, for S3) in the background, a bounded
   number at a time.
4. ``backup_records.finalize`` writes ``<prefix>_sha256file`` and then
   ``<prefix>_metadata``: a backup is complete only once its metadata
   exists, so a failure anywhere before leaves nothing that looks
   restorable.

A backup whose status turns ``deleting``/``deleted`` (or whose objects a
forced delete removed) is cancelled: the job stops writing, and the
driver deletes what was written.  Progress goes out as upstream sends
it (:mod:`.notifications`).
"""

import contextlib
import time

from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import backup_records
from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import cuts
from cinder_chunked_ext.engine import durability
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import notifications
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext.engine import whole_object
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

# How often, at most, a running backup re-reads its status.
STATUS_CHECK_SECONDS = 1.0


class _Cancelled(Exception):
    """Raised inside an object writer when the backup is being deleted."""


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
        self.container = self.prefix = self.extra_metadata = None
        self.metadata = self.parent_hashes = None
        self.volume_size_bytes = 0
        self.hashes = []
        self.next_number = 1
        self.bytes_done = 0
        self.cancelled = False
        self.last_status_check = 0.0
        # The machinery, set by ``run`` for the duration of the backup:
        # the volume, the operation's budget and pool, the windows of
        # object commits and of whole small objects, and the two lanes.
        self.source = self.op = self.pool = self.progress = None
        self.commits = self.small = self.md5_lane = self.out_lane = None
        self.whole_object_bytes = 0
        self.durability = None      # of the small objects

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
            driver.env, self, self.settings, driver.enable_progress_timer,
            driver.chunk_size_bytes)
        self.source = volume_io.VolumeSource(self.volume_file)
        writes_at_once = max(1, driver.max_concurrent_writes)
        with budget.for_settings(self.settings).operation() as op:
            self.op = op
            self.durability = durability.SmallObjects(driver, op.io)
            self.pool = op.cpu
            self.md5_lane = op.lane()
            self.out_lane = op.lane()
            # Commits wait on the disk or the network, not a CPU: they run
            # on the I/O threads, as many at once as the store accepts
            # and, where a writer holds its object until the commit (S3,
            # Swift), as the share of memory allows.
            self.commits = concurrency.OrderedWindow(
                op.io, lambda: cuts.commits_at_once(driver, writes_at_once,
                                                    op.share()))
            self.writes_at_once = writes_at_once
            # Small objects are stored (committed) by the workers that
            # make them: as many at once as the store accepts commits and
            # the share allows (an object and its stored form).
            self.whole_object_bytes = cuts.whole_object_bytes(
                driver, self.incremental, op.share())
            # What workers read pieces (incremental) or whole objects
            # (full) of that size into, again and again: as many kept as
            # the window that reads them allows now.
            self.read_buffers = pipeline.ReadBuffers(
                self.whole_object_bytes,
                keep=(self._hash_window_depth if self.incremental
                      else self._small_window_depth))
            self.small = concurrency.OrderedWindow(
                op.io, self._small_window_depth)
            try:
                self._backup_chunks()
                self._settle_small_objects()
                while len(self.commits):
                    self.commits.pop()   # raises the first failed commit
                if not self.cancelled:
                    self.durability.settle()
            except exception.ObjectNotFound:
                # A forced delete removed the objects (on POSIX, their
                # directory) under us: the cancellation, not a failure.
                if not self._cancelled(force=True):
                    raise
            finally:
                # Nothing may still write once we return or raise.
                self.small.drain()
                self.commits.drain()
                self.source.close()
                # Whatever was not settled (a failure, a cancel).
                self.durability.abandon()
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
            # finish (``_finish_small_objects``), never ahead of time; a
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
        A run is stored from the buffers that were hashed, in objects of
        at most ``whole_object_bytes``; it never crosses the chunk's end,
        as upstream's never do.
        """
        runs = pipeline.ChangedRuns(self.parent_hashes, self.block_size,
                                    max_length=self.whole_object_bytes)
        held = pipeline.HeldPieces()
        # Closed on the way out, so that no hashing outlives a failure.
        with contextlib.closing(self._hashed_pieces(offset, length)) as hashed:
            for start, size, hashes, kept in hashed:
                self.hashes.extend(hashes)
                for kept_offset, kept_data in kept:
                    held.add(kept_offset, kept_data)
                # The kept runs are the piece's changed extents.
                extents = [(at, len(data)) for at, data in kept]
                self._store_runs(
                    (run_offset, run_length, held.take(run_offset,
                                                       run_length))
                    for run_offset, run_length in runs.feed_extents(
                        start, extents, size))
                if self.cancelled:
                    return
                open_start = runs.open_start
                held.drop_before(start + size if open_start is None
                                 else open_start)
        self._store_runs((run_offset, run_length,
                          held.take(run_offset, run_length))
                         for run_offset, run_length in runs.finish())

    def _store_runs(self, runs):
        """Store changed runs ``(offset, length, data)``, several per task.

        A 5% change scattered over a volume is thousands of runs of a few
        hash blocks, and under eventlet each task is a round trip through
        the hub that costs more than compressing such a run.  Consecutive
        runs holding at most ``whole_object_bytes`` between them go to one
        worker, which stores them one after the other, each its own
        object as before.
        """
        batch, size = [], 0
        for run in runs:
            if batch and size + run[1] > self.whole_object_bytes:
                self._store_whole_objects(batch, False)
                batch, size = [], 0
                if self.cancelled:
                    return
            batch.append(run)
            size += run[1]
        if batch:
            self._store_whole_objects(batch, False)

    def _hashed_pieces(self, offset, length):
        """``(start, size, block hashes, kept)`` of a chunk's pieces.

        ``kept``: copies of each piece's changed runs, at their offsets
        (:meth:`_hash_and_keep`).
        """
        window = concurrency.OrderedWindow(self.pool,
                                           self._hash_window_depth)
        try:
            for start, size in cuts.pieces(self.driver, offset, length):
                while window.full or window.ready:
                    yield window.pop()[1]
                if self.source.direct:
                    window.submit(start, self._hash_at, start, size)
                else:
                    window.submit(start, self._hash_and_keep, start,
                                  self.source.read_exactly(start, size),
                                  None)
            while len(window):
                yield window.pop()[1]
        finally:
            window.drain()

    def _hash_window_depth(self):
        """Pieces an incremental hashes (and reads) at once, now."""
        return self.op.hash_window_depth(self.driver.piece_bytes())

    def _small_window_depth(self):
        """Whole objects being made and stored at once, now."""
        return cuts.whole_objects_at_once(
            self.driver, self.whole_object_bytes, self.writes_at_once,
            self.op.share())

    def _hash_at(self, start, size):
        """Read and hash one piece (a worker's job, direct sources).

        Returns ``(start, size, hashes, kept)``: ``kept`` holds copies of
        the piece's changed runs only, and the buffer the piece was read
        into goes back to be read into again (the volume's last piece,
        when shorter, is read into a buffer of its own).
        """
        with self.read_buffers.lent(size) as buffer:
            return self._hash_and_keep(
                start, *self.source.load_piece(start, size, buffer))

    def _hash_and_keep(self, start, data, zero):
        """``(start, size, hashes, kept)`` of a piece read (a worker's job).

        ``kept``: copies of the piece's changed runs, at their offsets.
        """
        hashes = pipeline.block_hashes(data, self.block_size,
                                       zero or pipeline.is_zero(data))
        return start, len(data), hashes, pipeline.changed_blocks(
            data, start, hashes, self.parent_hashes, self.block_size)

    def _analyse_at(self, start, size, piece_encoder, want_hashes, probe):
        """Read and analyse one piece (a worker's job, direct sources)."""
        data, zero = self.source.load_piece(start, size)
        return pipeline.analyse_piece(data, self.block_size, piece_encoder,
                                      want_hashes, zero=zero, probe=probe)

    # -- objects -------------------------------------------------------------

    def _store_any_object(self, offset, length, want_hashes):
        """Store ``[offset, offset + length)`` of a full backup.

        An object no larger than ``whole_object_bytes``
        (:func:`cuts.whole_object_bytes`) is handed whole to a worker,
        several at once (full backups' objects on a file system); a
        larger one is streamed.
        """
        if length <= self.whole_object_bytes:
            # A direct source is read by the worker that stores the object.
            data = (None if self.source.direct
                    else self.source.read_exactly(offset, length))
            self._store_whole(offset, length, want_hashes, data)
            return
        # Objects are recorded in number order: settle the small ones.
        self._settle_small_objects()
        self._store_object(offset, length,
                           self.hashes if want_hashes else None)

    def _store_whole(self, offset, length, want_hashes, data):
        """Hand one object to a worker that stores it whole.

        ``data`` holds its bytes, or is None when the worker reads them
        from a direct source.
        """
        self._store_whole_objects([(offset, length, data)], want_hashes)

    def _store_whole_objects(self, objects, want_hashes):
        """Hand ``[(offset, length, data)]`` to one worker, in this order."""
        if self._cancelled():
            return
        named = []
        for offset, length, data in objects:
            named.append((manifest.object_name(self.prefix,
                                               self.next_number),
                          offset, length, data))
            self.next_number += 1
        while self.small.full or self.small.ready:
            self._finish_small_objects(self.small.pop()[1])
        self.small.submit(named[0][0], self._write_small_objects, named,
                          want_hashes)

    def _settle_small_objects(self):
        while len(self.small):
            self._finish_small_objects(self.small.pop()[1])

    def _finish_small_objects(self, results):
        for record, hashes in results:
            if hashes is not None:
                self.hashes.extend(hashes)
            self.metadata.objects.append(record)
            self.bytes_done = max(self.bytes_done,
                                  record.end - self.source.start)
            self.progress.object_written()
            self.durability.committed()

    def _write_small_objects(self, named, want_hashes):
        """:meth:`_write_small_object` for each of ``named`` in turn."""
        return [self._write_small_object(name, offset, length, data,
                                         want_hashes)
                for name, offset, length, data in named]

    def _write_small_object(self, name, offset, length, data, want_hashes):
        """Hash, compress and store one whole small object (a worker's job).

        Returns its record and, when asked, its block hashes.  ``data`` is
        None when the worker reads it from a direct source.
        """
        zero = None
        with (self.read_buffers.lent(length) if data is None
              else contextlib.nullcontext()) as buffer:
            if data is None:
                data, zero = self.source.load_piece(offset, length, buffer)
            encoded = whole_object.encode(
                data, self.settings.compression, self.driver.piece_bytes(),
                self.block_size, want_hashes, zero=zero)
            with self.driver.get_data_object_writer(
                    self.container, name, offset, len(data),
                    extra_metadata=self.extra_metadata,
                    **self.durability.writer_arguments()) as writer:
                for part in encoded.parts:
                    if part:
                        writer.write(part)
        record = manifest.ObjectRecord(name=name, offset=offset,
                                       length=len(data),
                                       compression=encoded.stored_as,
                                       md5=encoded.md5)
        return record, encoded.hashes

    def _store_object(self, offset, length, hashes_out):
        """Write one data object covering ``[offset, offset + length)``."""
        name = manifest.object_name(self.prefix, self.next_number)
        try:
            md5, stored_as = self._stream_object(name, offset, length,
                                                 hashes_out)
        except _Cancelled:
            return
        self.metadata.objects.append(manifest.ObjectRecord(
            name=name, offset=offset, length=length,
            compression=stored_as, md5=md5))
        self.next_number += 1
        # Count this object's bytes before a notification reports them.
        self.bytes_done = max(self.bytes_done,
                              offset + length - self.source.start)
        self.progress.object_written()

    def _stream_object(self, name, offset, length, hashes_out):
        """Read, analyse and write one object; return its MD5 and codec.

        Pieces are read in order, analysed on the pool (zero test, block
        hashes, compression of splittable codecs), then handed to two
        lanes that see them in order: one keeps the MD5, the other frames
        the stored form and writes it.  The first piece decides whether
        the object is stored compressed: when compressing it saves
        nothing (random data: an encrypted or compressed volume), the
        object is stored raw, and the pieces still to come are not
        compressed.  Nothing is read twice; an object that starts well
        and ends badly may be stored a few bytes larger than raw, which
        upstream restores as well.
        """
        state = compression.StreamedCodec(self.settings.compression, length)
        piece = self.driver.piece_bytes()
        writer = self.driver.get_data_object_writer(
            self.container, name, offset, length,
            extra_metadata=self.extra_metadata)
        window = concurrency.OrderedWindow(
            self.pool, lambda: self.op.window_depth(piece))
        lanes = concurrency.LanePair(self.md5_lane, self.out_lane,
                                     lambda: self.op.lane_depth(piece))
        digest = pipeline.ZeroAwareMd5()
        want_hashes = hashes_out is not None

        def hand_over(result):
            opening = state.decide(result)
            if opening:
                lanes.submit(None, (_emit_bytes, writer, opening))
            if want_hashes:
                hashes_out.extend(result.hashes)
            lanes.submit((digest.update, result.data, result.zero),
                         (_emit, state.encoder, writer, result))

        try:
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
                                  state.piece_encoder, want_hashes,
                                  state.probe)
                else:
                    window.submit(start, pipeline.analyse_piece,
                                  self.source.read_exactly(start, size),
                                  self.block_size, state.piece_encoder,
                                  want_hashes, None, state.probe)
            while len(window):
                hand_over(window.pop()[1])
            lanes.finish()
            if state.encoder is not None:
                concurrency.execute(writer.write, state.encoder.finish())
            # Commit (upload) in the background, a bounded number at
            # once; an earlier object's failed commit aborts this one.
            if self.commits.full:
                self.commits.pop()
        except BaseException as e:
            window.drain()
            lanes.drain()
            concurrency.cleanup_keeping_error(
                e, concurrency.execute, writer.__exit__, type(e), e, None)
            raise
        self.commits.submit(name, writer.__exit__, None, None, None)
        return digest.hexdigest(), state.stored_as
