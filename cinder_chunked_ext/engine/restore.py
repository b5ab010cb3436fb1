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

"""The data path of a restore, top to bottom.

:func:`restore_chain` restores a backup and the chain below it:

1. It reads the metadata of every backup of the chain, and checks each
   against the volume (:func:`objects.check_placement`) and against the
   objects actually stored (:func:`objects.object_list_difference`)
   before the first write: a damaged layer anywhere leaves the volume as
   it was.
2. Over an existing volume (with ``restore_changed_blocks_only``, the
   default), it reads and hashes the volume and keeps, of each layer,
   the objects that hold a block that differs from the backup, each
   with the mask of the blocks it is to write
   (:mod:`~cinder_chunked_ext.engine.restore_delta`).
3. Over an existing volume (with ``verify_checksums_on_restore``, the
   default), and for the sealed objects of encrypted backups onto any
   volume, a check pass proves every object to restore before the first
   write (:mod:`~cinder_chunked_ext.engine.restore_check`): a damaged
   or tampered object anywhere in the chain leaves the volume
   untouched.  With the driver's read spool (``restore_spool_dir``),
   the bytes it read are kept on local disk for the write pass, which
   then fetches nothing twice (:mod:`~cinder_chunked_ext.store.read_spool`).
4. It restores the layers from the full backup up, each through the
   driver's version-dispatched method (``_restore_v1`` for format
   1.0.0), which runs a :class:`LayerRestore`.
5. A layer's objects are fetched, decompressed and verified (length and
   content, :func:`objects.decoded_pieces`: the block hashes of the
   layer's sha256file, or the MD5; for an object the check pass proved,
   the CRC-32 of the stored bytes instead) ahead on the worker pool, in
   batches of consecutive small objects (one task fetches a batch, one
   writes it), and written in order once verified; the object at the
   head of the queue
   that is too large to hold streams through three lanes (read and
   decompress, hash, write).  Onto a new volume,
   zero pieces are not written (the volume is sparse) and zero objects
   of the base layer are not even read.  Zero objects are otherwise
   recognised by their stored bytes (:func:`objects.is_zero_object`, or
   by the check pass) and not decompressed.  The volume is flushed
   after every object and synced at the end of each layer and after
   every ``SYNC_BYTES`` written, and the requested backup's status is
   re-read between objects: any status but ``restoring`` cancels the
   restore.
"""

import collections

from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import objects
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import restore_check
from cinder_chunked_ext.engine import restore_delta
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

# Bytes written to the volume between two syncs.  Upstream syncs after
# every object, which costs a disk flush per object once objects are
# small; what matters is that the restore is on disk when it returns.
SYNC_BYTES = 1024 ** 3

# A batch of small objects fetched (and written) by one worker task: at
# most this many bytes (one object at least) and objects.
BATCH_BYTES = 4 * 1024 ** 2
BATCH_OBJECTS = 64


def restore_chain(driver, backup, volume_id, volume_file, volume_is_new):
    """Restore ``backup`` (and the chain below it) to ``volume_file``.

    Raises BackupRestoreCancel when the backup's status changes away
    from ``restoring``.  With the driver's read spool (see
    :mod:`cinder_chunked_ext.store.read_spool`), the objects the check
    pass reads are read from its copies by the write pass.
    """
    with driver.restore_spool() as spool:
        _restore_chain(driver, backup, volume_id, volume_file,
                       volume_is_new, spool)


def _restore_chain(driver, backup, volume_id, volume_file, volume_is_new,
                   spool):
    LOG.info('Restoring backup %(id)s to %(new)s volume %(volume)s.',
             {'id': backup['id'], 'volume': volume_id,
              'new': 'new' if volume_is_new else 'existing'})
    metadata = driver._read_metadata(backup)
    restore_layer = driver._restore_function(backup, metadata)
    chain = objects.backup_chain(driver.env, backup)
    metas = [metadata] + [driver._read_metadata(b) for b in chain[1:]]
    for layer, layer_meta in zip(chain, metas):
        _check_layer(driver, layer, layer_meta)
    layers = list(reversed(list(zip(chain, metas))))
    delta = None
    if not volume_is_new and driver.settings.restore_changed_blocks_only:
        delta = restore_delta.plan(
            driver, backup, layers, volume_file,
            on_progress=lambda: check_status(backup, volume_id))
    known_hashes = {}
    if delta is not None:
        layers = delta.layers
        known_hashes = delta.take_hashes()
    checked = restore_check.check_chain(
        driver, layers, volume_is_new,
        on_progress=lambda: check_status(backup, volume_id),
        known_hashes=known_hashes)
    known_hashes = None     # held no longer than the check pass
    if spool is not None:
        # The write pass reads each copy once, and copies nothing more.
        spool.stop_recording()
    restored = []
    for layer, layer_meta in layers:
        is_base = not layer.parent_id
        try:
            restore_layer(layer, volume_id, layer_meta, volume_file,
                          volume_is_new and is_base, backup,
                          checked=checked, write_masks=delta)
        except exception.BackupRestoreCancel:
            raise
        except Exception:
            LOG.error('Restore of backup %(id)s to volume %(volume)s failed '
                      'in layer %(layer)s after restoring %(done)s.',
                      {'id': backup['id'], 'volume': volume_id,
                       'layer': layer['id'],
                       'done': ', '.join(restored) or 'nothing'})
            raise
        restored.append(layer['id'])
        if layer_meta.volume_meta:
            try:
                driver.put_metadata(volume_id, layer_meta.volume_meta)
            except exception.BackupMetadataUnsupportedVersion:
                msg = 'Metadata restore failed due to incompatible version.'
                LOG.error(msg)
                raise exception.BackupOperationError(msg)
    LOG.info('Restore of backup %(id)s to volume %(volume)s finished.',
             {'id': backup['id'], 'volume': volume_id})


def check_status(requested, volume_id, backup_id=None):
    """Cancel (BackupRestoreCancel) unless ``requested`` is restoring.

    ``backup_id``: the layer being restored, named in the error
    (default: the requested backup).
    """
    with requested.as_read_deleted():
        requested.refresh()
    if requested.status != cinder_compat.BackupStatus.RESTORING:
        raise exception.BackupRestoreCancel(
            back_id=backup_id or requested['id'], vol_id=volume_id)


def _check_layer(driver, backup, metadata):
    """Refuse a layer whose objects are misplaced, missing or extra."""
    objects.check_placement(backup, metadata)
    missing, unexpected = objects.object_list_difference(driver, backup,
                                                         metadata)
    if missing or unexpected:
        raise exception.InvalidBackup(
            reason='restore_backup aborted, actual object list does not '
                   'match object list stored in metadata of backup %s '
                   '(missing: %s; unexpected: %s).'
                   % (backup['id'], ', '.join(missing) or 'none',
                      ', '.join(unexpected) or 'none'))


class LayerRestore(object):
    """Writes the objects of one format 1.0.0 backup onto the volume.

    ``restore_chain`` has checked the metadata against the volume and
    the stored object list.  The object at the head of the queue streams
    through three lanes (read and decompress, MD5, write); the objects
    after it that are small enough to hold are fetched, decompressed and
    verified ahead on the pool, several batches at once (up to
    ``BATCH_BYTES`` or ``BATCH_OBJECTS`` of consecutive objects per
    task).  Each is written, in order, once verified (see
    ``_restore_streamed`` for large objects); a batch in one task too.
    """

    def __init__(self, driver, backup, volume_id, metadata, volume_file,
                 volume_is_new, requested_backup, checked=None,
                 write_masks=None):
        self.driver = driver
        self.settings = driver.settings
        self.backup = backup
        self.container = backup['container']
        self.volume_id = volume_id
        self.metadata = metadata
        self.extra_metadata = metadata.extra_metadata
        self.volume_file = volume_file
        self.volume_is_new = volume_is_new
        self.requested_backup = requested_backup
        # What the check pass proved, by object name (may be empty).
        self.checked = checked or {}
        self._lengths = collections.Counter()
        self._write = (volume_io.write_skipping_zeros if volume_is_new
                       else volume_io.write_at)
        # The hash blocks to write of each object (a restore_delta.Plan),
        # when only the blocks that differ are written.
        self.write_masks = write_masks
        self.op = None      # the operation's budget, while ``run`` runs
        self._sha256s = None    # see _block_hashes

    def run(self):
        # The head object may hold up to half of the operation's share of
        # the bytes in flight; the objects fetched ahead share a quarter
        # (two of the 16 MiB objects of a full backup with the default
        # bound and one operation), the rest is for the decoders' and the
        # writes' buffers.  The share is asked again before every object.
        self._sha256s = self._block_hashes()
        with budget.for_settings(self.settings).operation() as op:
            self.op = op
            pool = op.cpu
            lanes = (op.lane(), op.lane(), op.lane())
            # (objects, future or None, bytes held): a batch of small
            # objects fetched ahead on one worker, or the head object.
            ahead = collections.deque()
            held = 0
            unsynced = 0
            waiting = collections.deque(self.metadata.objects)
            try:
                while waiting or ahead:
                    if not ahead:
                        obj = waiting.popleft()
                        ahead.append(([(obj, self._known_zeros(obj))], None,
                                      0))
                    while (waiting and self._holdable(waiting[0]) and
                           held + waiting[0].length <= op.share() // 4):
                        batch, size = self._next_batch(waiting, held, op)
                        ahead.append((batch, pool.submit(
                            self._fetch_batch, batch), size))
                        held += size
                    batch, future, size = ahead.popleft()
                    self._check_status()
                    for obj, _zero in batch:
                        LOG.debug('Restoring object %(name)s of backup '
                                  '%(id)s at offset %(offset)d.',
                                  {'name': obj.name, 'id': self.backup['id'],
                                   'offset': obj.offset})
                    error = None
                    if future is None:
                        obj, zero = batch[0]
                        written = [(obj, [] if zero else
                                    self._restore_streamed(lanes, obj))]
                        unsynced += 0 if zero else obj.length
                    else:
                        written, error = future.result()
                        held -= size
                        unsynced += sum(len(data) for _obj, pieces in written
                                        for data in pieces)
                    # Flushed after every object (the standalone tool
                    # counts restored objects by the flushes); synced at
                    # the end of the layer and every SYNC_BYTES.
                    sync = (error is not None or unsynced >= SYNC_BYTES
                            or not (waiting or ahead))
                    if written:
                        concurrency.execute(self._write_and_flush, written,
                                            sync)
                    if error is not None:
                        raise error
                    if sync:
                        unsynced = 0
                    concurrency.cooperative_yield()
            finally:
                concurrency.wait_quietly(future for _b, future, _s in ahead)

    def _next_batch(self, waiting, held, op):
        """Consecutive small objects for one worker: ``(batch, bytes)``.

        ``batch`` is ``[(object, known zeros)]``: up to ``BATCH_BYTES`` of
        objects (at least one) and ``BATCH_OBJECTS`` of them, within what
        may be held ahead.  A batch is one round trip to a worker to fetch
        it and one to write it: an incremental's objects are thousands of
        a few hash blocks each.
        """
        batch, size = [], 0
        while (waiting and self._holdable(waiting[0])
               and len(batch) < BATCH_OBJECTS
               and held + size + waiting[0].length <= op.share() // 4
               and (not batch or size + waiting[0].length <= BATCH_BYTES)):
            obj = waiting.popleft()
            zero = self._known_zeros(obj)
            batch.append((obj, zero))
            if not zero:
                size += obj.length
        return batch, size

    def _fetch_batch(self, batch):
        """``([(object, pieces)], error)`` of a batch (a worker's job).

        Each object is fetched and verified in turn; the first that fails
        ends the batch, and the objects before it are still written (as
        when each object was its own task) before its error is raised.
        """
        done = []
        for obj, zero in batch:
            try:
                done.append((obj, [] if zero else self._fetch_verified(obj)))
            except Exception as e:
                return done, e
        return done, None

    def _block_hashes(self):
        """This layer's sha256file hashes, if objects are checked by them.

        Only for objects whose content the check pass has not proved
        (over an existing volume it proves every plain one; it only
        authenticates sealed ones): their decoded data is checked by
        the hashes instead of the MD5s (see :class:`objects.BlockCheck`).
        """
        def proved(obj):
            seen = self.checked.get(obj.name)
            return seen is not None and (seen.zero or
                                         seen.stored_crc is not None)

        if not self.settings.verify_checksums or all(
                proved(obj) for obj in self.metadata.objects):
            return None
        # On this (green) thread: opening an encrypted sha256file may
        # need the key manager.
        return restore_check.block_hashes(self.driver, self.backup)

    def _holdable(self, obj):
        """Small enough to verify in memory before writing any of it.

        With the default bound of 128 MiB and one operation that includes
        S3's 50 MB objects.
        """
        return obj.length <= self.op.share() // 2

    def _check_status(self):
        check_status(self.requested_backup, self.volume_id, self.backup['id'])

    def _known_zeros(self, obj):
        """True for an all-zero object that a new volume already holds.

        Known from its MD5 alone, so it costs nothing to restore.  The
        MD5 of zeros is computed once per length, and only for a length
        seen twice (typically every full chunk), so objects of unique
        lengths never pay for it.
        """
        if not self.volume_is_new:
            return False
        self._lengths[obj.length] += 1
        if self._lengths[obj.length] < 2:
            return False
        return obj.md5 == concurrency.execute(pipeline.zero_md5, obj.length)

    def _decoded(self, obj, lanes=None):
        decode_lane, md5_lane = (lanes[0], lanes[1]) if lanes else (None,
                                                                    None)
        seen = self.checked.get(obj.name)
        return objects.decoded_pieces(
            self.driver, self.backup, self.container, obj,
            self.extra_metadata, decode_lane=decode_lane, md5_lane=md5_lane,
            depth=self.op.lane_depth(self.driver.piece_bytes()),
            stored_crc=seen.stored_crc if seen is not None else None,
            block_hashes=objects.object_block_hashes(
                obj, self._sha256s, self.driver.sha_block_size_bytes)
            if self._sha256s else None)

    def _zero_pieces(self, obj):
        """Nothing on a new volume; shared zero buffers otherwise."""
        if self.volume_is_new:
            return []
        step = self.driver.piece_bytes()
        return [pipeline.zeros(min(step, obj.length - start))
                for start in range(0, obj.length, step)]

    def _fetch_verified(self, obj, lanes=None):
        """All of ``obj``'s data, decompressed and checked (a worker's job).

        A zero object recognised by its stored bytes (here or by the
        check pass) is not decompressed.
        """
        seen = self.checked.get(obj.name)
        if seen is not None and seen.zero:
            return self._zero_pieces(obj)
        if (seen is None or seen.stored_crc is None) and concurrency.execute(
                objects.is_zero_object, self.driver, self.container, obj,
                self.extra_metadata):
            return self._zero_pieces(obj)
        return list(self._decoded(obj, lanes))

    def _writer(self, obj):
        """What writes ``obj``'s data: its marked blocks only, if masked."""
        if self.write_masks is None:
            return self._write
        return self.write_masks.writer(obj, self._write)

    def _write_and_flush(self, written, sync):
        """Write ``[(object, pieces)]``, flush each, fsync if ``sync``.

        A worker's job.  One task for all of it: each task is a round
        trip to a worker thread.
        """
        last = len(written) - 1
        for index, (obj, pieces) in enumerate(written):
            write = self._writer(obj)
            offset = obj.offset
            for data in pieces:
                write(self.volume_file, offset, data)
                offset += len(data)
            if sync and index == last:
                volume_io.flush_and_sync(self.volume_file)
            else:
                volume_io.flush(self.volume_file)

    def _restore_streamed(self, lanes, obj):
        """Restore one object through the lanes; return what to write.

        Returns the pieces still to be written (with the object's flush,
        in one task), or nothing when they were written as decoded.

        An object small enough to hold is verified before any of it is
        written.  A larger one is written as it is decoded once the
        check pass proved it (it fails, naming the object, only if the
        stored object changed since); onto an existing volume without a
        check pass it is verified in a pass of its own first, so that
        bad data never overwrites good; onto a new volume it is verified
        as it is written (the restore fails at that object, naming it,
        and the new volume must not be used).
        """
        verify = self.settings.verify_checksums
        seen = self.checked.get(obj.name)
        if (verify or seen is not None) and self._holdable(obj):
            return self._fetch_verified(obj, lanes)
        if seen is not None and seen.zero:
            return self._zero_pieces(obj)
        if verify and seen is None and not self.volume_is_new:
            self._stream_decoded(lanes, obj, write=False)
        self._stream_decoded(lanes, obj, write=True)
        return ()

    def _stream_decoded(self, lanes, obj, write):
        """Decode ``obj`` on one lane, MD5 it on another, write on a third.

        With ``write`` False, the object is only verified: nothing of it
        reaches the volume.
        """
        write_lane = lanes[2]
        write = self._writer(obj) if write else None
        writes = collections.deque()
        offset = obj.offset
        depth = self.op.lane_depth(self.driver.piece_bytes())
        try:
            for data in self._decoded(obj, lanes):
                if not write:
                    continue
                while len(writes) >= depth:
                    writes.popleft().result()
                writes.append(write_lane.submit(write, self.volume_file,
                                                offset, data))
                offset += len(data)
            while writes:
                writes.popleft().result()
        finally:
            concurrency.wait_quietly(writes)
