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

"""Sealed objects: AES-256-GCM around what another store keeps.

:class:`SealedStore` wraps an :class:`ObjectStore`.  Objects whose name
starts with a prefix that its :class:`Keyring` holds a key for are
encrypted as they are written and authenticated as they are read; the
others pass through unchanged, byte for byte.

The stored form of a sealed object (the STREAM construction of Hoang,
Reyhanitabar, Rogaway and Vizar, as age and Tink use it)::

    header   b'CCXS' | version (1) | log2 segment size (1) | 0 0 | salt (32)
    segment  AES-256-GCM(plaintext[i * S:(i + 1) * S]) | tag (16)
    ...
    final    the last segment: less than S bytes of plaintext, maybe none

* Each object has its own key, HKDF-SHA256 of the backup's data key with
  the object's random salt: nonces never repeat under a key, however
  many objects a data key protects.
* The nonce of segment ``i`` is ``i`` (11 bytes, big endian) followed by
  1 for the final segment and 0 for the others.
* The associated data of every segment (version 2) is the header, the
  object's volume offset and plaintext length (8 bytes each, big endian)
  and its name: a :class:`Placement`, what the backup's metadata
  records for the object and so what a reader knows before it opens
  it.  A segment moved, an object renamed, swapped for another (of
  this backup or any other), truncated or extended, or a metadata entry
  whose offset or length was changed: each fails authentication (all
  but truncation and extension on the object's first segment, before
  any of its bytes are handed on).
* A reader returns a segment's plaintext only once its tag is verified,
  so no unauthenticated byte ever reaches a volume, and an object cut at
  a segment boundary is refused at its end (its final segment missing).

Version 1 (the first, unreleased, format) bound the name only; it is
still read.  It cannot be used to get round version 2: an object's key
is derived from its backup's data key, and no backup has objects of
both versions.

Readers and writers run on worker threads: they must not log.
"""

import itertools
import os
import struct
import typing

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base

MAGIC = b'CCXS'
FORMAT = 2
#: The first format: the associated data binds the name only.
FORMAT_NAME_ONLY = 1
SEGMENT_LOG2 = 20
SEGMENT_BYTES = 1 << SEGMENT_LOG2
TAG_BYTES = 16
SALT_BYTES = 32
HEADER = struct.Struct('>4sBBH%ds' % SALT_BYTES)
KEY_BYTES = 32
_OBJECT_KEY_INFO = b'cinder-chunked-ext object key v1'
_AAD_LABELS = {FORMAT_NAME_ONLY: b'cinder-chunked-ext object v1\0',
               FORMAT: b'cinder-chunked-ext object v2\0'}
_PLACEMENT = struct.Struct('>QQ')
# Segment sizes a reader accepts (a later writer may choose another).
_SEGMENT_LOG2_RANGE = range(12, 25)


def object_key(data_key, salt):
    """The AES-256 key of one object: HKDF of the data key and its salt."""
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                     info=_OBJECT_KEY_INFO).derive(data_key)


def _nonce(index, final):
    return index.to_bytes(11, 'big') + (b'\x01' if final else b'\x00')


#: Segments from this size are sealed and opened with ``AESGCM``, which
#: releases the GIL for the call (other threads work meanwhile); smaller
#: ones with the streaming ``Cipher`` API, fed in slices that keep it.
#: Both give the same bytes: the ciphertext, then the 16-byte tag.
GIL_RELEASE_BYTES = 256 * 1024

#: ``cryptography`` (50) releases the GIL for every call that handles
#: 2048 bytes or more, ``AESGCM.encrypt`` and ``update`` alike.  Taking
#: it back costs up to a switch interval (5 ms) when another thread runs
#: Python, as the service's hub and our workers do: with one such thread
#: busy, sealing a 32 KiB segment took 570 to 820 us in one call and
#: 11 to 40 us in slices of 2000 bytes or less, 4 to 14 us with no
#: other thread (``tools/benchmark_stages.py`` has no stage for this;
#: measured with a loop beside a busy thread).  A backup seals one
#: segment per object, and an incremental's objects are small.
HELD_SLICE_BYTES = 1984


def _streamed(context, aad, view):
    """Run ``context`` over ``aad`` and ``view``, never releasing the GIL.

    Returns its output up to and including ``finalize()``'s.
    """
    context.authenticate_additional_data(aad)
    parts = [context.update(view[start:start + HELD_SLICE_BYTES])
             for start in range(0, len(view), HELD_SLICE_BYTES)]
    parts.append(context.finalize())
    return parts


class _SegmentCipher(object):
    """AES-256-GCM of one object's segments under its own key."""

    def __init__(self, key):
        self._key = key
        self._aead = None

    def _whole(self):
        if self._aead is None:
            self._aead = aead.AESGCM(self._key)
        return self._aead

    def seal(self, nonce, data, aad):
        if len(data) >= GIL_RELEASE_BYTES:
            return self._whole().encrypt(nonce, data, aad)
        encryptor = Cipher(algorithms.AES(self._key),
                           modes.GCM(nonce)).encryptor()
        with memoryview(data) as whole, whole.cast('B') as view:
            parts = _streamed(encryptor, aad, view)
        parts.append(encryptor.tag)
        return b''.join(parts)

    def open(self, nonce, sealed, aad):
        """The plaintext of ``sealed``; raises InvalidTag."""
        if len(sealed) >= GIL_RELEASE_BYTES:
            return self._whole().decrypt(nonce, sealed, aad)
        if len(sealed) < TAG_BYTES:
            raise InvalidTag()
        with memoryview(sealed) as whole, whole.cast('B') as view:
            decryptor = Cipher(
                algorithms.AES(self._key),
                modes.GCM(nonce, bytes(view[-TAG_BYTES:]))).decryptor()
            return b''.join(_streamed(decryptor, aad, view[:-TAG_BYTES]))


class Placement(typing.NamedTuple):
    """Where a data object's plaintext belongs, as its metadata says."""

    #: The byte of the volume the object's data starts at.
    offset: int
    #: The bytes of volume data in the object (before compression).
    length: int


def _aad(header, version, name, placement):
    aad = header + _AAD_LABELS[version]
    if version != FORMAT_NAME_ONLY:
        aad += _PLACEMENT.pack(placement.offset, placement.length)
    return aad + name.encode('utf-8')


def sealed_size(plain_bytes):
    """The stored size of an object of ``plain_bytes`` bytes."""
    segments = plain_bytes // SEGMENT_BYTES + 1
    return HEADER.size + plain_bytes + segments * TAG_BYTES


class Salts(object):
    """Object salts, never the same twice, without a system call each.

    A random part drawn once (24 bytes) and a counter (8 bytes): the
    salts of one instance differ by their counter, those of two by their
    random part.  ``os.urandom`` per object would cost a system call,
    and with it a round trip of the GIL, per object on the worker
    threads.  ``next()`` of an ``itertools.count`` is atomic under the
    GIL.  Make one per driver (after any fork), not at import.
    """

    def __init__(self):
        self._random = os.urandom(SALT_BYTES - 8)
        self._counter = itertools.count()

    def next(self):
        return self._random + next(self._counter).to_bytes(8, 'big')


class SealingWriter(base.ObjectWriter):
    """Encrypts what it is given, a segment at a time, into ``inner``.

    ``placement``: the offset and length the backup's metadata will
    record for the object named ``name``; ``salt``: the object's own
    (from :class:`Salts`; a random one when not given).
    """

    def __init__(self, inner, data_key, name, placement, salt=None):
        super().__init__()
        self._inner = inner
        if salt is None:
            salt = os.urandom(SALT_BYTES)
        self._header = HEADER.pack(MAGIC, FORMAT, SEGMENT_LOG2, 0, salt)
        self._cipher = _SegmentCipher(object_key(data_key, salt))
        self._aad = _aad(self._header, FORMAT, name, placement)
        self._pending = bytearray()
        self._index = 0
        self._started = False

    def _seal(self, data, final):
        sealed = self._cipher.seal(_nonce(self._index, final), data,
                                   self._aad)
        self._index += 1
        return sealed

    def _emit(self, sealed):
        if not self._started:
            # The header and the first segment in one write: a small
            # object is then one write (one system call) in all.
            self._started = True
            sealed = self._header + sealed
        self._inner.write(sealed)

    def _write(self, data):
        view = memoryview(data).cast('B')
        if self._pending:
            room = SEGMENT_BYTES - len(self._pending)
            self._pending += view[:room]
            view = view[room:]
            if len(self._pending) < SEGMENT_BYTES:
                return
            self._emit(self._seal(self._pending, False))
            self._pending = bytearray()
        # Whole segments straight from the caller's buffer.
        while len(view) >= SEGMENT_BYTES:
            self._emit(self._seal(view[:SEGMENT_BYTES], False))
            view = view[SEGMENT_BYTES:]
        if len(view):
            self._pending += view

    def _commit(self):
        # Sealed from the buffer itself: AES-GCM takes any bytes-like.
        self._emit(self._seal(self._pending, True))
        self._pending = bytearray()
        self._inner.commit()

    def _abort(self):
        self._pending = bytearray()
        self._inner.abort()


class OpeningReader(base.ObjectReader):
    """Returns the plaintext of a sealed object, segment by verified segment.

    ``placement``: the offset and length the backup's metadata records
    for the object named ``name``.  Raises
    :class:`exception.ObjectAuthenticationFailed` when a segment fails
    its tag (a wrong key, a tampered, swapped or truncated object, or a
    metadata entry that does not match the object).
    """

    def __init__(self, inner, data_key, name, placement):
        self._inner = inner
        self._data_key = data_key
        self._name = name
        self._placement = placement
        self._version = None
        self._cipher = None
        self._aad = None
        self._segment_bytes = None
        self._index = 0
        self._finished = False
        self._buffer = b''
        self._offset = 0

    def _refuse(self, reason):
        raise exception.ObjectAuthenticationFailed(object_name=self._name,
                                                   reason=reason)

    def _read_exactly(self, size):
        parts = []
        left = size
        while left > 0:
            data = self._inner.read(left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
        return b''.join(parts)

    def _open_header(self):
        header = self._read_exactly(HEADER.size)
        if len(header) < HEADER.size:
            self._refuse('it is shorter than the header of a sealed object')
        magic, version, log2, _reserved, salt = HEADER.unpack(header)
        if magic != MAGIC:
            self._refuse('it is not a sealed object (plaintext stored under '
                         'an encrypted backup?)')
        if version not in _AAD_LABELS or log2 not in _SEGMENT_LOG2_RANGE:
            self._refuse('unknown sealed format %d (segments of 2^%d bytes)'
                         % (version, log2))
        self._version = version
        self._segment_bytes = 1 << log2
        self._cipher = _SegmentCipher(object_key(self._data_key, salt))
        self._aad = _aad(header, version, self._name, self._placement)

    def _next_segment(self):
        if self._cipher is None:
            self._open_header()
        sealed = self._read_exactly(self._segment_bytes + TAG_BYTES)
        final = len(sealed) < self._segment_bytes + TAG_BYTES
        if len(sealed) < TAG_BYTES:
            self._refuse('it is truncated (its final segment is missing)')
        try:
            plain = self._cipher.open(_nonce(self._index, final), sealed,
                                      self._aad)
        except InvalidTag:
            self._refuse(self._failure())
        self._index += 1
        self._finished = final
        return plain

    def _failure(self):
        what = ('the object was modified, truncated or swapped for '
                'another, ')
        if self._version != FORMAT_NAME_ONLY:
            what += ('or it does not hold the %d bytes at volume offset %d '
                     'that the metadata says, '
                     % (self._placement.length, self._placement.offset))
        return ('segment %d failed authentication: %sor the key is not the '
                'one it was sealed with' % (self._index, what))

    def read(self, size=-1):
        parts = []
        wanted = size if size is not None and size >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            if self._offset >= len(self._buffer):
                if self._finished:
                    break
                self._buffer = self._next_segment()
                self._offset = 0
                continue
            end = (len(self._buffer) if wanted is None
                   else min(len(self._buffer), self._offset + wanted - got))
            parts.append(self._buffer[self._offset:end])
            got += end - self._offset
            self._offset = end
        if len(parts) == 1:
            return parts[0]
        return b''.join(parts)

    def authenticate(self):
        """Authenticate every segment not read yet; return no plaintext.

        Returns the bytes of plaintext they hold.  Raises as :meth:`read`
        does.  For a restore's check before its first write: the stored
        object is proved to be the one sealed under its name and key
        without decompressing it.
        """
        total = len(self._buffer) - self._offset
        self._buffer, self._offset = b'', 0
        while not self._finished:
            total += len(self._next_segment())
        return total

    def close(self):
        self._buffer = b''
        return self._inner.close()


def is_data_object(prefix, name):
    """True when ``name`` is ``<prefix>-<digits>``: a data object."""
    tail = name[len(prefix) + 1:]
    return (name.startswith(prefix) and name[len(prefix):][:1] == '-' and
            len(tail) >= 5 and tail.isascii() and tail.isdigit())


class Keyring(object):
    """The data keys of the backups operations in progress work on.

    Keys are held by object name prefix (a backup's ``service_metadata``)
    for as long as some operation holds them; a prefix is held as plain
    (``None``) when its backup is not encrypted.
    """

    def __init__(self):
        self._lock = locks.native_lock()
        self._held = {}     # prefix -> [key or None, count]

    def hold(self, prefix, key):
        with self._lock:
            entry = self._held.get(prefix)
            if entry is None:
                self._held[prefix] = [key, 1]
            else:
                if entry[0] != key:
                    raise exception.EncryptionError(
                        reason='two different keys for the objects named '
                               '%s*' % prefix)
                entry[1] += 1

    def release(self, prefix):
        with self._lock:
            entry = self._held.get(prefix)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._held[prefix]

    def lookup(self, name):
        """``(held, key)`` for the data object ``name``.

        Data objects are named ``<prefix>-<number>``; anything else (the
        backup's two documents, sealed in envelopes of their own) is not
        held here and passes through.
        """
        with self._lock:
            best = None
            for prefix, entry in self._held.items():
                if is_data_object(prefix, name) and (
                        best is None or len(prefix) > len(best[0])):
                    best = (prefix, entry[0])
        if best is None:
            return False, None
        return True, best[1]


class SealedStore(object):
    """An :class:`ObjectStore` that seals the objects of encrypted backups.

    Everything but ``open_writer`` and ``open_reader`` is the wrapped
    store's, unchanged.  A sealed data object needs its
    :class:`Placement` (``placement=``), the offset and length its
    metadata entry records.  ``strict`` refuses to read or write an
    object whose prefix is not held at all (neither as encrypted nor as
    plain): an encrypting driver must never store plaintext by mistake.
    """

    def __init__(self, store, keyring, strict=False):
        self._store = store
        self.keyring = keyring
        self.strict = strict
        self._salts = Salts()

    @property
    def inner(self):
        return self._store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _key(self, name, placement):
        held, key = self.keyring.lookup(name)
        if not held and self.strict:
            raise exception.EncryptionError(
                reason='no key is known for object %s' % name)
        if key is not None and placement is None:
            # A caller that is not a data path: it cannot know what the
            # object's associated data binds.
            raise exception.EncryptionError(
                reason='object %s is encrypted and its offset and length '
                       'were not given' % name)
        return key

    def open_writer(self, container, name, extra_metadata=None,
                    placement=None, barrier=None):
        key = self._key(name, placement)
        inner = self._store.open_writer(container, name,
                                        extra_metadata=extra_metadata,
                                        **base.barrier_argument(barrier))
        if key is None:
            return inner
        return SealingWriter(inner, key, name, placement,
                             salt=self._salts.next())

    def open_reader(self, container, name, extra_metadata=None,
                    placement=None):
        key = self._key(name, placement)
        inner = self._store.open_reader(container, name,
                                        extra_metadata=extra_metadata)
        if key is None:
            return inner
        return OpeningReader(inner, key, name, placement)
