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

"""Over an existing volume, write only the hash blocks that differ.

A restore over an existing volume is most often a rollback: the volume
the backup was taken from, changed since in a few places.  The restored
backup's sha256file holds the SHA-256 of every hash block of the volume
as the chain restores it, so :func:`plan`, before the check pass and
the first write:

1. reads the existing volume and hashes it, on the worker pool (the
   restore's own read-only descriptor of the volume, as backups read
   it; a hole is zeros without being read);
2. marks the blocks whose hash differs from the sha256file's;
3. gives each marked block to the topmost layer of the chain whose
   object covers it (the layer whose data the restore leaves there),
   and keeps, per layer, only the objects that were given blocks, each
   with the mask of its blocks to write.

The restore then checks and restores those objects only, writing the
masked blocks of each (:func:`masked_ranges`).  The result is the
restore of every object in full: a block left as it was already held
the bytes the chain would have written, and every other block is
written by the layer that would have written it last.  A damaged
sha256file can only mark more blocks (a wrong hash matches no block),
never fewer; the objects of those blocks are proved by the check pass
as before, and the objects left out are not read at all.

The plan is only made where it is sound and cheap to know: format
1.0.0 documents whose objects start and end on the sha256file's blocks
(what every backup of ours and of upstream's writes), a volume read
through a descriptor of its own (a file or a block device; not an RBD
image handle), of at least the chain's size, and a sha256file of at
most ``restore_check.MAX_BLOCK_HASHES`` blocks.  Anywhere else, and when
the volume cannot be read, the restore writes every object as before.
"""

import dataclasses

from oslo_log import log as logging

from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext.engine import restore_check
from cinder_chunked_ext.engine import volume_io
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

#: Pieces between two calls of ``on_progress`` while the volume is read.
PROGRESS_EVERY = 64


@dataclasses.dataclass
class Plan:
    """What a restore over an existing volume writes."""

    #: ``(backup, metadata)`` from the full backup up, each metadata
    #: holding the objects to restore only.
    layers: list
    backup_id: str
    #: Object name -> mask (one byte per hash block of the object; 1:
    #: write it).
    masks: dict
    #: The sha256file's block size, which the masks count in.
    block: int
    blocks: int = 0
    differing: int = 0
    #: The restored backup's sha256file hashes, for the check pass to use
    #: rather than read the document again (:meth:`take_hashes`).
    sha256s: list = None

    def take_hashes(self):
        """``{backup id: hashes}`` for the check pass; dropped from here.

        The write pass does not need them, and they are the largest
        thing a restore holds (about 4 MB per GiB of volume).
        """
        hashes, self.sha256s = self.sha256s, None
        return {self.backup_id: hashes} if hashes else {}

    def writer(self, obj, write):
        """``write(volume_file, offset, data)`` limited to ``obj``'s mask.

        An object without a mask (none is restored without one) and one
        whose every block is marked are written in full.
        """
        mask = self.masks.get(obj.name)
        if mask is None or 0 not in mask:
            return write
        block, base = self.block, obj.offset

        def write_marked(volume_file, offset, data):
            with memoryview(data) as view:
                for start, stop in masked_ranges(mask, base, block, offset,
                                                 len(data)):
                    write(volume_file, start,
                          view[start - offset:stop - offset])
        return write_marked


def masked_ranges(mask, base, block, offset, length):
    """``(start, stop)`` of ``[offset, offset + length)`` to write.

    ``mask`` has one byte per hash block of ``block`` bytes of an object
    that starts at ``base``; the ranges are the parts of the given span
    whose blocks are marked, in order.
    """
    end = offset + length
    first = (offset - base) // block
    last = min(len(mask), -(-(end - base) // block))
    index = first
    while index < last:
        index = mask.find(1, index, last)
        if index < 0:
            return
        stop = mask.find(0, index, last)
        if stop < 0:
            stop = last
        yield (max(offset, base + index * block),
               min(end, base + stop * block))
        index = stop


def plan(driver, backup, layers, volume_file, on_progress=None):
    """A :class:`Plan` for restoring ``layers`` over ``volume_file``.

    ``layers``: ``(backup, metadata)`` from the full backup up, the last
    one ``backup``'s.  None when the restore should write every object
    (see the module's doc); ``on_progress()`` is called while the volume
    is read (it may raise to cancel the restore).
    """
    source = volume_io.VolumeSource(volume_file)
    try:
        return _plan(driver, backup, layers, source, on_progress)
    finally:
        source.close()


def _plan(driver, backup, layers, source, on_progress):
    every = [obj for _layer, meta in layers for obj in meta.objects]
    if not every:
        return None
    end = max(obj.offset + obj.length for obj in every)
    why = _unreadable(source, end)
    expected = block = None
    if why is None:
        expected, block, why = _expected_hashes(driver, backup, end)
    if why is None and not all(_aligned(obj, block, end) for obj in every):
        why = 'its objects do not start and end on hash blocks'
    if why is not None:
        LOG.info('Restore of backup %(id)s writes every object over the '
                 'existing volume: %(why)s.', {'id': backup['id'],
                                               'why': why})
        return None
    try:
        todo = _differing_blocks(driver, source, expected, block, end,
                                 on_progress)
    except exception.BackupRestoreCancel:
        raise
    except (OSError, exception.InvalidVolume) as e:
        LOG.warning('Restore of backup %(id)s cannot read the existing '
                    'volume to compare it (%(error)s); writing every '
                    'object.', {'id': backup['id'], 'error': e})
        return None
    result = Plan(layers=[], masks={}, block=block, blocks=len(expected),
                  differing=todo.count(1), sha256s=expected,
                  backup_id=backup['id'])
    kept_layers = []
    # The topmost layer covering a block is the one whose data a restore
    # leaves there: claims go from the requested backup down.
    for layer, meta in reversed(layers):
        kept = []
        for obj in meta.objects:
            first = obj.offset // block
            last = -(-(obj.offset + obj.length) // block)
            mask = bytes(todo[first:last])
            if 1 in mask:
                kept.append(obj)
                result.masks[obj.name] = mask
                todo[first:last] = bytes(last - first)
        kept_layers.append((layer, dataclasses.replace(meta, objects=kept)))
    result.layers = list(reversed(kept_layers))
    objects_kept = len(result.masks)
    LOG.info('Restore of backup %(id)s over the existing volume: '
             '%(differing)d of %(blocks)d hash blocks differ from the '
             'backup; restoring them from %(kept)d of %(objects)d objects '
             '(the others are not read).',
             {'id': backup['id'], 'differing': result.differing,
              'blocks': result.blocks, 'kept': objects_kept,
              'objects': len(every)})
    return result


def _unreadable(source, end):
    """Why the volume cannot be compared, or None."""
    if not source.direct:
        return ('it is not read through a descriptor of its own (an RBD '
                'image handle, a pipe or a wrapper)')
    if source.start != 0:
        return 'it is not handed over at its first byte'
    if source.size is None or source.size < end:
        return 'it is smaller than the backup'
    return None


def _expected_hashes(driver, backup, end):
    """``(hashes, block size, None)`` or ``(None, None, why)``."""
    try:
        sha = restore_check.load_sha256file(driver, backup)
    except (exception.CorruptBackup, exception.ObjectNotFound) as e:
        return None, None, 'its sha256file cannot be used (%s)' % e
    if sha is None:
        return None, None, 'the volume has too many hash blocks to compare'
    block = sha.chunk_size
    if not block or block <= 0:
        return None, None, 'its sha256file has no block size'
    if len(sha.sha256s) != -(-end // block):
        return None, None, ('its sha256file covers %d blocks, not the %d '
                            'of the backup' % (len(sha.sha256s),
                                               -(-end // block)))
    return sha.sha256s, block, None


def _aligned(obj, block, end):
    stop = obj.offset + obj.length
    return obj.offset % block == 0 and (stop % block == 0 or stop == end)


def _differing_blocks(driver, source, expected, block, end, on_progress):
    """A bytearray with a 1 for every block of the volume that differs."""
    piece = max(1, driver.piece_bytes() // block) * block
    todo = bytearray(len(expected))
    with budget.for_settings(driver.settings).operation() as op:
        def depth():
            return max(1, min(2 * op.workers, op.share() // (2 * piece)))

        window = concurrency.OrderedWindow(op.cpu, depth)
        # The pieces are read into buffers used again, as backups do.
        buffers = pipeline.ReadBuffers(piece, keep=depth)
        since = PROGRESS_EVERY
        try:
            for start in range(0, end, piece):
                while window.full:
                    _mark(todo, *window.pop()[1])
                if on_progress is not None and since >= PROGRESS_EVERY:
                    on_progress()
                    since = 0
                since += 1
                first = start // block
                size = min(piece, end - start)
                window.submit(None, _compare, source, buffers, start, size,
                              block, expected[first:first + -(-size // block)])
            while len(window):
                _mark(todo, *window.pop()[1])
        except BaseException:
            window.drain()
            raise
    return todo


def _mark(todo, first, differs):
    todo[first:first + len(differs)] = differs


def _compare(source, buffers, start, size, block, expected):
    """``(first block, mask)`` of one piece of the volume (a worker's job)."""
    with buffers.lent(size) as buffer:
        data, zero = source.load_piece(start, size, buffer)
        hashes = pipeline.block_hashes(data, block,
                                       zero or pipeline.is_zero(data))
    return start // block, bytes(h != e for h, e in zip(hashes, expected))
