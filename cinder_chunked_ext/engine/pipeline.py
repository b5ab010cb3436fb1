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

"""The pure, per-piece stages of the data path.

A volume is read in *pieces* (a few MiB, a whole number of hash blocks,
never crossing a chunk boundary).  Each piece is analysed on a worker:
zero test, SHA-256 of every hash block, comparison with the parent
backup's hashes, and compression of the changed segments.  These
functions touch nothing but their arguments, so any number of them can
run at once on native threads; ordering happens in the engine.
"""

import contextlib
import dataclasses
import functools
import hashlib
import typing

from cinder_chunked_ext import locks


@functools.lru_cache(maxsize=8)
def zeros(length):
    """A shared all-zero bytes object of ``length``."""
    return bytes(length)


@functools.lru_cache(maxsize=64)
def zero_sha256(length):
    return hashlib.sha256(zeros(length)).hexdigest()


# MD5 states after 0, 1, 2, ... steps of ``ZERO_MD5_STEP`` zero bytes.
ZERO_MD5_STEP = 4 * 1024 ** 2
_zero_md5_states = [hashlib.md5(usedforsecurity=False)]
_zero_md5_lock = locks.native_lock()


def _zero_md5_state(steps):
    """A copy of the MD5 state after ``steps`` steps of zeros."""
    with _zero_md5_lock:
        while len(_zero_md5_states) <= steps:
            state = _zero_md5_states[-1].copy()
            state.update(zeros(ZERO_MD5_STEP))
            _zero_md5_states.append(state)
        return _zero_md5_states[steps].copy()


@functools.lru_cache(maxsize=256)
def zero_md5(length):
    """MD5 of ``length`` zero bytes.

    Started from the remembered state of the largest multiple of
    ``ZERO_MD5_STEP`` below it: a new length hashes at most that many
    zeros, however long it is (objects cut where holes begin have
    lengths of their own, and restores ask for each).
    """
    steps, rest = divmod(length, ZERO_MD5_STEP)
    md5 = _zero_md5_state(steps)
    if rest:
        md5.update(zeros(rest))
    return md5.hexdigest()


# A memoryview compared with bytes goes element by element (about a
# sixth of memcmp's speed): views are compared in copies of this size.
_ZERO_TEST_STEP = 256 * 1024


def is_zero(data):
    """True when ``data`` is all zero bytes (memcmp speed)."""
    if not isinstance(data, memoryview):
        return data == zeros(len(data))
    for start in range(0, len(data), _ZERO_TEST_STEP):
        part = data[start:start + _ZERO_TEST_STEP].tobytes()
        if part != zeros(len(part)):
            return False
    return True


def zero_at(data, offset, length):
    """True when ``data[offset:offset + length]`` is all zeros.

    The zero test of one block or piece inside a larger buffer, for
    every stage that has one.  No copy for bytes and bytearray (one
    ``memcmp``, which stops at the first byte that is not zero); a view
    is tested by its first byte, then in copies.
    """
    if isinstance(data, (bytes, bytearray)):
        return data.startswith(zeros(length), offset)
    view = memoryview(data)
    return not view[offset] and is_zero(view[offset:offset + length])


def block_hashes(data, block_size, zero=False):
    """Hex SHA-256 of each ``block_size`` block of ``data``.

    A block of zeros gets the remembered hash of zeros after a zero test
    (about a tenth of the cost of hashing it): volumes are full of them,
    in the middle of pieces that hold data too.
    """
    length = len(data)
    if zero:
        full, rest = divmod(length, block_size)
        hashes = [zero_sha256(block_size)] * full
        if rest:
            hashes.append(zero_sha256(rest))
        return hashes
    view = memoryview(data)
    hashes = []
    for off in range(0, length, block_size):
        size = min(block_size, length - off)
        if zero_at(data, off, size):
            hashes.append(zero_sha256(size))
        else:
            hashes.append(hashlib.sha256(view[off:off + size]).hexdigest())
    return hashes


@dataclasses.dataclass
class PieceResult:
    """What a worker learned about one piece of an object."""

    data: bytes
    zero: bool
    hashes: typing.Optional[typing.List[str]]   # None when not asked for
    encoded: typing.Optional[bytes]   # None: raw, or encoded in order
    #: True when compressing the piece saves nothing (random data).
    incompressible: bool = False


def analyse_piece(data, block_size, piece_encoder, want_hashes, zero=None,
                  probe=None):
    """Zero-test, hash and compress one piece (a worker's job).

    ``zero`` is True when the piece is known to be zeros (a hole).
    ``probe`` tells whether the data compresses, for codecs that are not
    split into pieces (see :func:`compression.looks_incompressible`).
    """
    if zero is None:
        zero = is_zero(data)
    hashes = block_hashes(data, block_size, zero) if want_hashes else None
    encoded = piece_encoder(data, zero) if piece_encoder else None
    if zero:
        incompressible = False
    elif encoded is not None:
        incompressible = len(encoded) >= len(data)
    else:
        incompressible = bool(probe and probe(data))
    return PieceResult(data, zero, hashes, encoded, incompressible)


def changed_extents(hashes, parent_hashes, first_block, base_offset,
                    block_size, limit):
    """``[(offset, length), ...]`` of the runs of changed blocks.

    ``hashes`` are the blocks of one chunk starting at block index
    ``first_block`` (absolute offset ``base_offset``); a block the parent
    does not have counts as changed.  ``limit`` is the chunk's length.
    """
    extents = []
    start = None
    for idx, sha in enumerate(hashes):
        pidx = first_block + idx
        same = pidx < len(parent_hashes) and parent_hashes[pidx] == sha
        if not same and start is None:
            start = idx
        elif same and start is not None:
            extents.append((start, idx))
            start = None
    if start is not None:
        extents.append((start, len(hashes)))
    return [(base_offset + a * block_size,
             min(b * block_size, limit) - a * block_size)
            for a, b in extents]


def changed_blocks(data, offset, hashes, parent_hashes, block_size):
    """``[(offset, bytes), ...]``: copies of the changed runs of a piece.

    ``data`` (at volume ``offset``) was hashed into ``hashes``; what an
    incremental backup stores of it is its runs of blocks whose hash
    differs from the parent's, taken from the very bytes hashed.  The
    piece's buffer can then be read into again at once.
    """
    with memoryview(data) as view:
        return [(start, bytes(view[start - offset:start - offset + length]))
                for start, length in changed_extents(
                    hashes, parent_hashes, offset // block_size, offset,
                    block_size, len(data))]


class ReadBuffers(object):
    """Buffers of ``size`` bytes that workers read pieces into, reused.

    A buffer given back is kept for the next ``take`` while fewer than
    ``keep()`` are idle (the operation's window as it is now: it shrinks
    when other operations start, and so does what is kept), else left to
    be freed.  ``take`` and ``give`` are a list's ``pop`` and ``append``,
    atomic under the GIL: no lock, green or native.
    """

    def __init__(self, size, keep=lambda: 1):
        self.size = size
        self._keep = keep
        self._idle = []

    def take(self):
        try:
            return self._idle.pop()
        except IndexError:
            return bytearray(self.size)

    def give(self, buffer):
        if len(self._idle) < self._keep():
            self._idle.append(buffer)

    @contextlib.contextmanager
    def lent(self, size):
        """A buffer for ``size`` bytes while in the block, given back after.

        None for any size but this pool's (the data then gets a buffer
        of its own, as the volume's last, shorter piece does).
        """
        buffer = self.take() if size == self.size else None
        try:
            yield buffer
        finally:
            if buffer is not None:
                self.give(buffer)


class ChangedRuns(object):
    """The runs of changed blocks of one chunk, found piece by piece.

    ``feed`` takes the hashes of the chunk's pieces in order and returns
    the runs (``(offset, length)``) known to be complete: a run that
    reaches the end of a piece is held back, as the next piece may carry
    it on; ``finish`` returns it at the chunk's end.  A run longer than
    ``max_length`` (a whole number of blocks) is returned in parts of
    ``max_length`` as soon as each is complete.  Fed a whole chunk with
    no ``max_length``, the runs are those of :func:`changed_extents`.
    """

    def __init__(self, parent_hashes, block_size, max_length=None):
        self._parent = parent_hashes
        self._block = block_size
        self._max = max_length
        self._open = None       # (offset, length) reaching the last end

    @property
    def open_start(self):
        """Where the run still held back starts (None if there is none)."""
        return self._open[0] if self._open is not None else None

    def _cut(self, run, done):
        """Move whole ``max_length`` parts of ``run`` to ``done``."""
        while self._max and run[1] > self._max:
            done.append((run[0], self._max))
            run = (run[0] + self._max, run[1] - self._max)
        return run

    def feed(self, piece_offset, hashes, piece_length):
        return self.feed_extents(piece_offset, changed_extents(
            hashes, self._parent, piece_offset // self._block,
            piece_offset, self._block, piece_length), piece_length)

    def feed_extents(self, piece_offset, extents, piece_length):
        """As :meth:`feed`, given the piece's :func:`changed_extents`."""
        done = []
        run = self._open
        for start, length in extents:
            if run is not None and run[0] + run[1] == start:
                run = self._cut((run[0], run[1] + length), done)
                continue
            if run is not None:
                done.append(run)
            run = self._cut((start, length), done)
        if run is not None and run[0] + run[1] < piece_offset + piece_length:
            done.append(run)
            run = None
        self._open = run
        return done

    def finish(self):
        run, self._open = self._open, None
        return [run] if run is not None else []


class HeldPieces(object):
    """Changed runs read and hashed, kept until they are stored.

    An incremental backup stores its changed runs from copies of the
    very bytes it hashed (:func:`changed_blocks`): the volume is read
    once, and what the sha256file records is what the objects hold, even
    if the volume changes meanwhile.  A run that goes on into the next
    piece is put together from both.
    """

    def __init__(self):
        self._pieces = []       # (offset, data), in order

    def add(self, offset, data):
        self._pieces.append((offset, data))

    def drop_before(self, offset):
        """Forget the pieces that end at or before ``offset``."""
        self._pieces = [(start, data) for start, data in self._pieces
                        if start + len(data) > offset]

    def take(self, offset, length):
        """The bytes of ``[offset, offset + length)``, from held pieces.

        A view into one piece when the range lies in one, else a copy.
        """
        end = offset + length
        parts = []
        for start, data in self._pieces:
            stop = start + len(data)
            if stop <= offset or start >= end:
                continue
            view = memoryview(data)[max(offset, start) - start:
                                    min(end, stop) - start]
            parts.append(view)
        got = sum(len(part) for part in parts)
        if got != length:
            raise ValueError('pieces held cover %d of the %d bytes at %d'
                             % (got, length, offset))
        return parts[0] if len(parts) == 1 else b''.join(parts)


# The step in which an object's leading zeros are finally hashed.
ZERO_HASH_STEP = 4 * 1024 ** 2


class ZeroAwareMd5(object):
    """An MD5 that does not hash an object's leading zero pieces yet.

    An object that turns out to be all zeros takes its digest from a
    per-length cache; otherwise the zeros are hashed when the first data
    arrives.  Runs on one lane, so it needs no lock.
    """

    def __init__(self):
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._zeros = 0
        self._data = False

    def update(self, data, zero):
        if zero and not self._data:
            self._zeros += len(data)
            return
        while self._zeros:
            step = min(self._zeros, ZERO_HASH_STEP)
            self._md5.update(zeros(step))
            self._zeros -= step
        self._data = True
        self._md5.update(data)

    def hexdigest(self):
        if not self._data:
            return zero_md5(self._zeros)
        return self._md5.hexdigest()
