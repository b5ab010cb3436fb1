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

"""How a backup cuts a volume, and how much of it is in the works at once.

A chunk (the driver's ``chunk_size_bytes``) is cut into objects: in a
full backup, of at most ``[chunked_backup] full_backup_object_bytes``,
and also where the data and the holes of a file-backed volume meet; in
an incremental one, at the runs of changed hash blocks.  Objects are
read and analysed in pieces of a few MiB.  Objects up to
:func:`whole_object_bytes` are stored whole by one worker, several side
by side (:func:`whole_objects_at_once`); larger ones are streamed.
"""

from cinder_chunked_ext.engine import concurrency

# Holes of a file-backed volume at least this large become objects of
# their own in a full backup.
HOLE_OBJECT_BYTES = 1024 ** 2


def pieces(driver, offset, length):
    """``(offset, length)`` of the pieces of ``[offset, offset + length)``."""
    step = driver.piece_bytes()
    end = offset + length
    for start in range(offset, end, step):
        yield start, min(step, end - start)


def full_objects(driver, source, offset, length):
    """``(offset, length)`` of a full backup's objects in one chunk.

    At most ``full_backup_object_bytes`` each; on a file with holes,
    objects also end where the data and the holes of at least
    ``HOLE_OBJECT_BYTES`` meet (at hash block boundaries), so that a
    restore finds those holes as zero objects it need not decode.
    """
    step = driver.full_object_bytes()
    end = offset + length
    cuts = {offset, end}
    if source.holes_known and step < length:
        for first, last in concurrency.execute(
                source.holes, offset, end, driver.sha_block_size_bytes,
                HOLE_OBJECT_BYTES):
            cuts.update((first, last))
    bounds = sorted(cuts)
    for start, stop in zip(bounds, bounds[1:]):
        for piece in range(start, stop, step):
            yield piece, min(step, stop - piece)


def whole_object_bytes(driver, incremental, share):
    """The largest object a worker stores whole, from one read.

    A piece; in a full backup on a store whose writers pass the data on
    as they get it (a file system), also its objects (``[chunked_backup]
    full_backup_object_bytes``, 16 MiB by default) when at least two of
    them and their stored forms fit in the operation's ``share`` of the
    bytes in flight.  Whole objects are stored side by side, one per
    worker, where a streamed object passes its pieces through two lanes
    one object after the other and waits for them at each object's end.
    A store that holds each object until it uploads it would hold a
    third copy of every object in the works.  An incremental backup
    stores its changed runs in objects of at most a piece, from the
    buffers it hashed.
    """
    piece = driver.piece_bytes()
    if incremental or not driver.streams_writes:
        return piece
    full = driver.full_object_bytes()
    if 4 * full <= share:
        return max(piece, full)
    return piece


def whole_objects_at_once(driver, size, writes_at_once, share):
    """How many whole objects of up to ``size`` may be in the works.

    Pieces: as many as the store finds worth committing at once (their
    commits are mostly waiting; ``max_concurrent_small_writes``).  Larger
    objects (a full backup's) hold a CPU each: one per worker and one more
    being written.  Either within the operation's ``share`` of the bytes
    in flight (an object and its stored form each); pieces within half
    of it, as an incremental backup hashes pieces beside them.
    """
    if size <= driver.piece_bytes():
        # Beside the pieces being hashed: half of the share.
        by_memory = max(1, share // 2 // (2 * size))
        small = driver.max_concurrent_small_writes or writes_at_once
        return min(writes_at_once, small, by_memory)
    by_memory = max(1, share // (2 * size))
    return min(writes_at_once, by_memory, driver.settings.workers + 1)


def commits_at_once(driver, writes_at_once, share):
    """How many streamed objects may be committing (uploading) at once.

    As many as the store accepts when its writers pass the data on as
    they get it; where a writer holds its object until the commit (S3,
    Swift), also within a quarter of the operation's ``share``.
    """
    if driver.streams_writes:
        return writes_at_once
    held = max(1, share // (4 * driver.full_object_bytes()))
    return min(writes_at_once, held)
