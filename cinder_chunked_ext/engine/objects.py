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

"""Checks of a backup's stored objects, shared by restore and verify.

There is one path that reads an object back and proves it is what the
backup recorded (:func:`decoded_pieces`: decompress, then check length
and MD5), one check of an object list against the metadata
(:func:`object_list_difference`) and one of the objects' placement
(:func:`check_placement`).  Restore refuses a backup on the first
problem; the standalone tool's verify reports every problem it finds.
"""

import collections
import hashlib
import io

from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception

GiB = 1024 ** 3
MAX_CHAIN_LENGTH = 10000
# The largest stored form of a zero object that is read to recognise it.
ZERO_FORM_MAX_BYTES = 1024 * 1024


def backup_chain(env, backup):
    """``[backup, parent, grandparent, ..., full]``; refuses cycles."""
    chain = [backup]
    seen = {backup['id']}
    current = backup
    while current.parent_id:
        if current.parent_id in seen or len(chain) > MAX_CHAIN_LENGTH:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='the chain of parent backups loops at %s'
                       % current.parent_id)
        current = env.get_backup(current.parent_id)
        seen.add(current['id'])
        chain.append(current)
    return chain


def check_placement(backup, metadata):
    """Refuse metadata that would write outside the volume or overlap."""
    prefix = backup['service_metadata']
    limit = (backup['size'] or 0) * GiB or None
    previous_end = 0
    for obj in sorted(metadata.objects, key=lambda o: o.offset):
        if manifest.object_number(prefix, obj.name) is None:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='object name %r does not belong to prefix %r'
                       % (obj.name, prefix))
        if obj.offset < previous_end:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='object %s overlaps the previous object' % obj.name)
        if limit is not None and obj.end > limit:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='object %s ends at byte %d, beyond the %d-byte '
                       'volume' % (obj.name, obj.end, limit))
        previous_end = obj.end


def object_list_difference(driver, backup, metadata):
    """``(missing, unexpected)``: sorted names, store against metadata.

    The two JSON documents of the backup are not data objects and are
    left out of the comparison.
    """
    names = set(driver._generate_object_names(backup))
    names.discard(driver._metadata_filename(backup))
    names.discard(driver._sha256_filename(backup))
    expected = {obj.name for obj in metadata.objects}
    return sorted(expected - names), sorted(names - expected)


class CrcReader(object):
    """``read(n)`` of another reader, keeping the CRC-32 of what it read.

    The restore's check pass keeps the CRC-32 of the stored bytes it
    proved; the write pass computes it again over what it reads, and so
    knows it decoded the very bytes that were checked.
    """

    def __init__(self, reader):
        self._reader = reader
        self.crc = 0

    def read(self, size=-1):
        data = self._reader.read(size)
        self.crc = compression.zlib.crc32(data, self.crc)
        return data


def _open_decoded(driver, container, obj, extra_metadata, crc=False):
    reader = driver.get_data_object_reader(
        container, obj.name, obj.offset, obj.length,
        extra_metadata=extra_metadata)
    source = CrcReader(reader) if crc else reader
    return reader, source, compression.open_decoding_reader(obj.compression,
                                                            source)


def _check_decoded(driver, backup, obj, total, md5):
    """Refuse data of the wrong length, or (if checked) the wrong MD5."""
    if total != obj.length:
        raise exception.CorruptBackup(
            backup_id=backup['id'],
            reason='object %s holds %s bytes of data, the metadata says '
                   '%d' % (obj.name, total if total <= obj.length
                           else 'more than %d' % obj.length, obj.length))
    if md5 is None:
        return
    actual = md5.hexdigest()
    if actual != obj.md5 and driver.settings.verify_checksums:
        raise exception.ChecksumMismatch(
            backup_id=backup['id'], object_name=obj.name,
            expected=obj.md5, actual=actual)


def _undecodable(backup, obj, error):
    return exception.CorruptBackup(
        backup_id=backup['id'],
        reason='object %s cannot be decompressed (%s)' % (obj.name, error))


def check_stored(driver, backup, container, obj, extra_metadata,
                 block_hashes=None):
    """Decode ``obj`` and check its length and content; nothing is kept.

    Returns the CRC-32 of the stored bytes that were checked (see
    :class:`CrcReader`).  With ``block_hashes`` (the SHA-256 of each
    hash block of the object, from its backup's sha256file) the content
    is checked block by block (:class:`BlockCheck`).  An object that
    does not match its block hashes is checked again by the MD5 recorded
    in the metadata, and passes if that matches: either record proves
    the object (a damaged sha256file, or a damaged MD5, must not refuse
    a good object; ``verify`` reports both).  A worker's job: the
    decoded data is hashed as it comes and dropped.
    """
    if block_hashes is not None:
        blocks = BlockCheck(block_hashes, driver.sha_block_size_bytes)
        try:
            total, crc = _decode_into(driver, container, obj,
                                      extra_metadata, blocks)
        except ValueError:
            total = None    # the MD5 check below names the problem
        if total == obj.length and blocks.matched():
            return crc
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        total, crc = _decode_into(driver, container, obj, extra_metadata,
                                  md5)
    except ValueError as e:
        raise _undecodable(backup, obj, e)
    _check_decoded(driver, backup, obj, total, md5)
    return crc


def _decode_into(driver, container, obj, extra_metadata, digest):
    """Decode ``obj`` into ``digest.update``, a piece at a time.

    Returns ``(bytes decoded, CRC-32 of the bytes stored)``; stops once
    past the recorded length.  Raises ValueError when the object cannot
    be decoded.
    """
    step = driver.piece_bytes()
    total = 0
    reader, source, decoded = _open_decoded(driver, container, obj,
                                            extra_metadata, crc=True)
    with reader:
        while total <= obj.length:
            data = read_exactly(decoded, step)
            if not data:
                break
            total += len(data)
            digest.update(data)
    return total, source.crc


class BlockCheck(object):
    """An object's content checked by its sha256file's block hashes.

    Fed the decoded data in order (``update``, as an MD5 is), it tests
    each hash block as it completes: a zero test for a block recorded
    as zeros, SHA-256 for the others (with the CPU's SHA extensions,
    more than twice as fast as MD5 here, and zeros cost no hash at all).
    ``matched()`` after the last piece: every block matched and none is
    missing or extra.  A mismatch is not an error by itself (the
    sha256file may be the damaged one): the caller checks the MD5 then.
    """

    def __init__(self, hashes, block):
        self._hashes = hashes
        self._block = block
        self._zero = pipeline.zero_sha256(block)
        self._first = 0
        self._carry = b''
        self._ok = True

    def update(self, data):
        if not self._ok:
            return
        if self._carry:
            data = self._carry + bytes(data)
            self._carry = b''
        whole = len(data) - len(data) % self._block
        if whole:
            count = whole // self._block
            hashes = self._hashes[self._first:self._first + count]
            if not _blocks_match(data, whole, hashes, self._block,
                                 self._zero):
                self._ok = False
                return
            self._first += count
        if whole < len(data):
            self._carry = bytes(data[whole:])

    def matched(self):
        if self._ok and self._carry:
            hashes = self._hashes[self._first:self._first + 1]
            self._ok = _blocks_match(self._carry, len(self._carry), hashes,
                                     self._block, self._zero)
            self._first += 1
            self._carry = b''
        return self._ok and self._first == len(self._hashes)


def _blocks_match(data, end, hashes, block, zero):
    """True when each ``block`` of ``data[:end]`` has its hash in ``hashes``.

    A block recorded as zeros gets the backup's own zero test
    (:func:`pipeline.zero_at`, no copy), any other SHA-256.
    """
    if len(hashes) != -(-end // block):
        return False
    view = memoryview(data)
    for index, sha in enumerate(hashes):
        start = index * block
        size = min(block, end - start)
        if sha == zero and size == block:
            if not pipeline.zero_at(data, start, size):
                return False
        elif hashlib.sha256(view[start:start + size]).hexdigest() != sha:
            return False
    return True


def read_exactly(reader, size):
    """Up to ``size`` bytes, fewer only at the end of the stream."""
    parts = []
    left = size
    while left > 0:
        data = reader.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b''.join(parts)


def object_block_hashes(obj, sha256s, block):
    """The hashes of ``obj``'s blocks in a sha256file's list, or None.

    Only for an object that starts on a block and ends on one (or at
    the end of the list): the hash of a block that the object shares
    with its neighbour says nothing about the object alone.
    """
    if obj.offset % block:
        return None
    first = obj.offset // block
    count = -(-obj.length // block)
    if first + count > len(sha256s):
        return None
    if obj.length % block and first + count != len(sha256s):
        return None
    return sha256s[first:first + count]


def decoded_pieces(driver, backup, container, obj, extra_metadata,
                   decode_lane=None, md5_lane=None, depth=budget.LANE_DEPTH,
                   stored_crc=None, block_hashes=None):
    """Yield the decompressed data of ``obj`` in pieces; check it.

    The length and (unless the driver's settings disable it) the content
    are checked after the last piece: the generator raises CorruptBackup
    or ChecksumMismatch naming the object instead of finishing.  The
    content is checked against ``block_hashes`` when given (the object's
    entries of its backup's sha256file, see :class:`BlockCheck`), else
    by its MD5.  With lanes, reading and decompressing run ahead on one
    and the hashing on another, at most ``depth`` pieces each.  With
    ``stored_crc`` (the object was checked before, see
    :mod:`~cinder_chunked_ext.engine.restore_check`) nothing is hashed:
    the CRC-32 of the stored bytes read must be that one.
    """
    crc = stored_crc is not None
    reader, source, decoded = concurrency.execute(
        _open_decoded, driver, container, obj, extra_metadata, crc)
    if crc:
        content = None
    elif block_hashes is not None and driver.settings.verify_checksums:
        content = BlockCheck(block_hashes, driver.sha_block_size_bytes)
    else:
        content = hashlib.md5(usedforsecurity=False)
    step = driver.piece_bytes()
    reads = collections.deque()
    digests = collections.deque()
    total = 0

    def next_piece():
        if decode_lane is None:
            return concurrency.execute(read_exactly, decoded, step)
        while len(reads) < depth:
            reads.append(decode_lane.submit(read_exactly, decoded, step))
        return reads.popleft().result()

    try:
        while True:
            try:
                data = next_piece()
            except ValueError as e:
                raise _undecodable(backup, obj, e)
            if not data:
                break
            total += len(data)
            if total > obj.length:
                break
            if content is None:
                pass
            elif md5_lane is None:
                content.update(data)
            else:
                while len(digests) >= depth:
                    digests.popleft().result()
                digests.append(md5_lane.submit(content.update, data))
            yield data
        while digests:
            digests.popleft().result()
    except BaseException as e:
        # GeneratorExit too: nothing may still read once we give up.
        concurrency.wait_quietly(list(reads) + list(digests))
        concurrency.cleanup_keeping_error(e, concurrency.execute,
                                          reader.__exit__, None, None, None)
        raise
    concurrency.execute(reader.__exit__, None, None, None)
    if isinstance(content, BlockCheck):
        _check_decoded(driver, backup, obj, total, None)
        if not content.matched():
            # A damaged sha256file must not refuse a good object: the
            # MD5 of the metadata decides (reading the object again).
            concurrency.execute(check_stored, driver, backup, container,
                                obj, extra_metadata)
    else:
        _check_decoded(driver, backup, obj, total, content)
    if crc and source.crc != stored_crc:
        raise exception.CorruptBackup(
            backup_id=backup['id'],
            reason='object %s changed since it was checked, before the '
                   'first write of this restore' % obj.name)


def _stored_if_small(driver, container, obj, extra_metadata, limit):
    """The stored bytes of ``obj`` when there are at most ``limit``."""
    with driver.get_data_object_reader(
            container, obj.name, obj.offset, obj.length,
            extra_metadata=extra_metadata) as reader:
        stored = read_exactly(reader, limit + 1)
    return stored if len(stored) <= limit else None


def _decodes_to_zeros(obj, stored, step):
    decoded = compression.open_decoding_reader(obj.compression,
                                               io.BytesIO(stored))
    total = 0
    while True:
        try:
            data = read_exactly(decoded, step)
        except ValueError:
            return False
        if not data:
            return total == obj.length
        total += len(data)
        if total > obj.length or not pipeline.is_zero(data):
            return False


def is_zero_object(driver, container, obj, extra_metadata):
    """True when ``obj`` is all zeros, known from its stored bytes.

    Only a compressed object whose recorded MD5 is that of zeros is
    considered; its stored form (a few KiB) is read and compared with
    the encodings of that many zeros seen before
    (:func:`compression.is_zero_form`).  An unknown form is decoded in
    memory (zeros expand fast, and only a test for zeros follows, no
    MD5) and remembered if it is zeros.  False sends the object down the
    ordinary path, which reports any damage.  A worker's job.
    """
    if (compression.family(obj.compression) is None or
            obj.length > compression.ZERO_OBJECT_LIMIT or
            obj.md5 != pipeline.zero_md5(obj.length)):
        return False
    stored = _stored_if_small(driver, container, obj, extra_metadata,
                              ZERO_FORM_MAX_BYTES)
    if stored is None:
        return False
    if compression.is_zero_form(obj.compression, obj.length, stored):
        return True
    if not _decodes_to_zeros(obj, stored, driver.piece_bytes()):
        return False
    compression.remember_zero_form(obj.compression, obj.length, stored)
    return True
