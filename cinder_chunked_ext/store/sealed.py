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
  1 for the final segment and 0 for the others; the associated data of
  every segment is the header and the object's name.  A segment moved,
  an object renamed or swapped for another (of this backup or any
  other), a truncated or extended object: each fails authentication.
* A reader returns a segment's plaintext only once its tag is verified,
  so no unauthenticated byte ever reaches a volume, and an object cut at
  a segment boundary is refused at its end (its final segment missing).

The offset and length of a data object are not in the associated data:
the backup's metadata, itself authenticated (its own envelope), binds
every name to its offset, length and MD5, and restore checks the length
and the MD5 of what it decrypts before writing an object it holds.

Readers and writers run on worker threads: they must not log.
"""

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base

MAGIC = b'CCXS'
FORMAT = 1
SEGMENT_LOG2 = 20
SEGMENT_BYTES = 1 << SEGMENT_LOG2
TAG_BYTES = 16
SALT_BYTES = 32
HEADER = struct.Struct('>4sBBH%ds' % SALT_BYTES)
KEY_BYTES = 32
_OBJECT_KEY_INFO = b'cinder-chunked-ext object key v1'
_AAD_LABEL = b'cinder-chunked-ext object v1\0'
# Segment sizes a reader accepts (a later writer may choose another).
_SEGMENT_LOG2_RANGE = range(12, 25)


def object_key(data_key, salt):
    """The AES-256 key of one object: HKDF of the data key and its salt."""
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                     info=_OBJECT_KEY_INFO).derive(data_key)


def _nonce(index, final):
    return index.to_bytes(11, 'big') + (b'\x01' if final else b'\x00')


def _aad(header, name):
    return header + _AAD_LABEL + name.encode('utf-8')


def sealed_size(plain_bytes):
    """The stored size of an object of ``plain_bytes`` bytes."""
    segments = plain_bytes // SEGMENT_BYTES + 1
    return HEADER.size + plain_bytes + segments * TAG_BYTES


class SealingWriter(base.ObjectWriter):
    """Encrypts what it is given, a segment at a time, into ``inner``."""

    def __init__(self, inner, data_key, name):
        super().__init__()
        self._inner = inner
        salt = os.urandom(SALT_BYTES)
        self._header = HEADER.pack(MAGIC, FORMAT, SEGMENT_LOG2, 0, salt)
        self._aead = aead.AESGCM(object_key(data_key, salt))
        self._aad = _aad(self._header, name)
        self._pending = bytearray()
        self._index = 0
        self._started = False

    def _seal(self, data, final):
        sealed = self._aead.encrypt(_nonce(self._index, final), data,
                                    self._aad)
        self._index += 1
        return sealed

    def _start(self):
        if not self._started:
            self._started = True
            self._inner.write(self._header)

    def _write(self, data):
        self._start()
        view = memoryview(data).cast('B')
        if self._pending:
            room = SEGMENT_BYTES - len(self._pending)
            self._pending += view[:room]
            view = view[room:]
            if len(self._pending) < SEGMENT_BYTES:
                return
            self._inner.write(self._seal(bytes(self._pending), False))
            self._pending = bytearray()
        # Whole segments straight from the caller's buffer.
        while len(view) >= SEGMENT_BYTES:
            self._inner.write(self._seal(view[:SEGMENT_BYTES], False))
            view = view[SEGMENT_BYTES:]
        if len(view):
            self._pending += view

    def _commit(self):
        self._start()
        self._inner.write(self._seal(bytes(self._pending), True))
        self._pending = bytearray()
        self._inner.commit()

    def _abort(self):
        self._pending = bytearray()
        self._inner.abort()


class OpeningReader(base.ObjectReader):
    """Returns the plaintext of a sealed object, segment by verified segment.

    Raises :class:`exception.ObjectAuthenticationFailed` when a segment
    fails its tag (a wrong key, a tampered, swapped or truncated object).
    """

    def __init__(self, inner, data_key, name):
        self._inner = inner
        self._data_key = data_key
        self._name = name
        self._aead = None
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
        if version != FORMAT or log2 not in _SEGMENT_LOG2_RANGE:
            self._refuse('unknown sealed format %d (segments of 2^%d bytes)'
                         % (version, log2))
        self._segment_bytes = 1 << log2
        self._aead = aead.AESGCM(object_key(self._data_key, salt))
        self._aad = _aad(header, self._name)

    def _next_segment(self):
        if self._aead is None:
            self._open_header()
        sealed = self._read_exactly(self._segment_bytes + TAG_BYTES)
        final = len(sealed) < self._segment_bytes + TAG_BYTES
        if len(sealed) < TAG_BYTES:
            self._refuse('it is truncated (its final segment is missing)')
        try:
            plain = self._aead.decrypt(_nonce(self._index, final), sealed,
                                       self._aad)
        except InvalidTag:
            self._refuse('segment %d failed authentication: the object was '
                         'modified, truncated, swapped for another, or the '
                         'key is not the one it was sealed with'
                         % self._index)
        self._index += 1
        self._finished = final
        return plain

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
    store's, unchanged.  ``strict`` refuses to read or write an object
    whose prefix is not held at all (neither as encrypted nor as plain):
    an encrypting driver must never store plaintext by mistake.
    """

    def __init__(self, store, keyring, strict=False):
        self._store = store
        self.keyring = keyring
        self.strict = strict

    @property
    def inner(self):
        return self._store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _key(self, name):
        held, key = self.keyring.lookup(name)
        if not held and self.strict:
            raise exception.EncryptionError(
                reason='no key is known for object %s' % name)
        return key

    def open_writer(self, container, name, extra_metadata=None):
        key = self._key(name)
        inner = self._store.open_writer(container, name,
                                        extra_metadata=extra_metadata)
        if key is None:
            return inner
        return SealingWriter(inner, key, name)

    def open_reader(self, container, name, extra_metadata=None):
        key = self._key(name)
        inner = self._store.open_reader(container, name,
                                        extra_metadata=extra_metadata)
        if key is None:
            return inner
        return OpeningReader(inner, key, name)
