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

"""The check pass of a restore: every object proved before the first write.

A restore over an existing volume must leave it as it was when any
object of the chain is damaged: a restore that fails half way would
leave a volume that is neither the old one nor the backup.  So before
the first write, :func:`check_chain` reads every object of every layer
of the chain, on the worker pool, several at once within the
operation's share of the bytes in flight, and proves it:

* a plain object is decompressed and its length and content checked:
  block by block against its backup's sha256file where the object
  covers whole hash blocks (a zero test for zero blocks, SHA-256 for the
  others, several times cheaper than MD5), else, or when a block does
  not match, by the MD5 of the metadata (either record proves the
  object; a zero object recognised by its stored form is not even
  decompressed);
  the CRC-32 of
  its stored bytes is kept, so that the write pass only has to prove
  that it reads the same bytes (CRC-32 of compressed data, about six
  times cheaper than MD5 of the decompressed data) instead of hashing
  it all again;
* a sealed (encrypted) object is authenticated (AES-GCM, segment by
  segment), not decompressed: once the ciphertext is the one sealed
  under its name and key, its plaintext is the one the backup stored,
  and the write pass authenticates every segment again as it reads it.

Onto a new volume the check covers the sealed objects only (a tampered
encrypted object must never reach any volume).  A plain backup restored
onto a new volume keeps its single pass, each object verified before
its own write: a new volume holds nothing to protect, a failed restore
leaves it in ``error`` for Cinder to delete, and a check pass would cost
a full read, decompression and MD5 of the backup.

The objects are read in the order the write pass reads them (the full
backup first), so on a repository that fits in the page cache the write
pass reads them from memory.
"""

import dataclasses
import itertools
import typing

from oslo_log import log as logging

from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import objects
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

# The requested backup's status is read again after this many objects.
STATUS_EVERY = 64
#: At most this many small objects are checked in one worker task.
BATCH_OBJECTS = 32


@dataclasses.dataclass(frozen=True)
class Checked:
    """What the check pass proved about one object."""

    #: All zeros: written as zeros (or skipped) without reading it again.
    zero: bool = False
    #: The CRC-32 of the stored bytes that were checked; None for a
    #: sealed object, which its reader authenticates again.
    stored_crc: typing.Optional[int] = None


def is_sealed(driver, name):
    """True when the data object ``name`` is read through a data key."""
    keyring = getattr(driver, 'keyring', None)
    if keyring is None:
        return False
    _held, key = keyring.lookup(name)
    return key is not None


#: A sha256file of more hash blocks than this is not loaded to check
#: objects (16 GiB of volume with 32 KiB blocks: about 60 MB parsed, most
#: of it one string per hash): the MD5s check them instead.
MAX_BLOCK_HASHES = 1 << 19


#: Stored bytes of a sha256file per hash, at most: 71 in JSON as written
#: (indented, one per line), 96 once encrypted and encoded in base64.
MAX_BYTES_PER_HASH = 100


def _stored_size(driver, layer):
    """The stored size of ``layer``'s sha256file, or None if not known."""
    store = getattr(driver, 'store', None)
    if store is None:
        return None
    return store.object_size(layer['container'],
                             driver._sha256_filename(layer))


def load_sha256file(driver, layer):
    """The layer's sha256file, or None when it is too large to hold.

    None for a volume of more than ``MAX_BLOCK_HASHES`` hash blocks (the
    list would cost more memory than a restore may hold).  Raises
    CorruptBackup or ObjectNotFound when it cannot be read.
    """
    try:
        size = layer['size'] or 0
    except (KeyError, TypeError, AttributeError):
        size = 0
    if size * objects.GiB > MAX_BLOCK_HASHES * driver.sha_block_size_bytes:
        return None
    # A record's size may be missing or short (a backup found in a
    # repository, sized by its objects' ends): the stored size of the
    # document decides too, where the store can tell it.
    stored = _stored_size(driver, layer)
    if stored is not None and stored > MAX_BLOCK_HASHES * MAX_BYTES_PER_HASH:
        return None
    return driver._read_sha256file(layer)


def block_hashes(driver, layer):
    """The layer's sha256file hashes, or None when they cannot be used.

    Only a faster way to check objects (see :func:`objects.check_stored`
    and :class:`objects.BlockCheck`): without them, their MD5 is
    checked.  None for a sha256file too large to hold
    (:func:`load_sha256file`), or one that cannot be read.
    """
    try:
        sha = load_sha256file(driver, layer)
    except (exception.CorruptBackup, exception.ObjectNotFound) as e:
        LOG.warning('The sha256file of backup %(id)s cannot be used to '
                    'check its objects (%(error)s); checking their MD5.',
                    {'id': layer['id'], 'error': e})
        return None
    return sha.sha256s if sha is not None else None


def planned(driver, layers, volume_is_new, known_hashes=None):
    """``(backup, metadata, object, sealed, block hashes)`` to check.

    ``layers`` are ``(backup, metadata)`` from the full backup up.  A
    generator: a layer's sha256file is read when its first plain object
    comes up and dropped when the next layer starts, so one layer's
    hashes are held at a time (and slices of them by the batches still
    being checked).  ``known_hashes``: backup id -> its sha256file's
    hashes, already read (not read again).
    """
    known_hashes = known_hashes or {}
    verify = driver.settings.verify_checksums and not volume_is_new
    block = driver.sha_block_size_bytes
    for layer, meta in layers:
        sha256s = None
        for obj in meta.objects:
            sealed = is_sealed(driver, obj.name)
            if not (verify or sealed):
                continue
            hashes = None
            if not sealed:
                if sha256s is None:
                    sha256s = (known_hashes.get(layer['id']) or
                               block_hashes(driver, layer) or [])
                hashes = objects.object_block_hashes(obj, sha256s, block)
            yield layer, meta, obj, sealed, hashes


def check_object(driver, layer, meta, obj, sealed, block_hashes=None):
    """Prove one object; return its :class:`Checked` (a worker's job)."""
    container = layer['container']
    extra = meta.extra_metadata
    if sealed:
        with driver.get_data_object_reader(container, obj.name, obj.offset,
                                           obj.length,
                                           extra_metadata=extra) as reader:
            authenticate = getattr(reader, 'authenticate', None)
            if authenticate is not None:
                authenticate()
                return Checked()
        # A reader that cannot authenticate without decoding: the
        # plain object's check below reads all of it.
    if objects.is_zero_object(driver, container, obj, extra):
        return Checked(zero=True)
    return Checked(stored_crc=objects.check_stored(
        driver, layer, container, obj, extra, block_hashes=block_hashes))


def _batches(todo, piece):
    """``todo`` cut into runs that one worker task checks in order.

    A batch is one object larger than a piece, or up to ``BATCH_OBJECTS``
    smaller ones holding at most a piece of data between them: an
    incremental's changed runs are thousands of objects of a few hash
    blocks, and one task (a round trip to a worker thread) for each
    costs more than checking it.  A batch still holds one object at a
    time, so the bytes in flight are as they were.
    """
    batch, data = [], 0
    for entry in todo:
        length = entry[2].length
        if batch and (len(batch) >= BATCH_OBJECTS or data + length > piece):
            yield batch
            batch, data = [], 0
        batch.append(entry)
        data += length
    if batch:
        yield batch


def check_batch(driver, batch):
    """:func:`check_object` for each entry in turn (a worker's job).

    Returns ``[(object name, Checked)]``; the first damaged object is the
    error raised.
    """
    return [(obj.name, check_object(driver, layer, meta, obj, sealed,
                                    hashes))
            for layer, meta, obj, sealed, hashes in batch]


def check_chain(driver, layers, volume_is_new, on_progress=None,
                known_hashes=None):
    """Check the objects of ``layers`` (full backup first); see module doc.

    Returns ``{object name: Checked}``, empty when there is nothing to
    check.  ``on_progress()`` is called before the first batch and then
    at least every ``STATUS_EVERY`` objects (the restore re-reads the
    requested backup's status there, and may raise to cancel).  The
    first damaged object, in restore order, is the error raised; the
    checks already running are waited for.  ``known_hashes``: see
    :func:`planned`.
    """
    todo = planned(driver, layers, volume_is_new, known_hashes)
    first = next(todo, None)
    if first is None:
        return {}
    LOG.debug('Checking the objects of %d backup(s) before the first '
              'write.', len(layers))
    checked = {}
    piece = driver.piece_bytes()
    with budget.for_settings(driver.settings).operation() as op:
        # A check holds a piece or two at a time (stored and decoded):
        # as many at once as the share allows, a few per worker.
        window = concurrency.OrderedWindow(
            op.cpu, lambda: min(2 * op.workers, op.share() // (2 * piece)))
        since_progress = STATUS_EVERY       # read before the first batch
        try:
            for batch in _batches(itertools.chain([first], todo), piece):
                while window.full:
                    checked.update(window.pop()[1])
                if on_progress is not None and (
                        since_progress >= STATUS_EVERY):
                    on_progress()
                    since_progress = 0
                since_progress += len(batch)
                window.submit(None, check_batch, driver, batch)
            while len(window):
                checked.update(window.pop()[1])
        except BaseException:
            window.drain()
            raise
    return checked
