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

"""Compression codecs by name, with upstream's aliases.

The names are the ones ``backup_compression_algorithm`` accepts and the
``compression`` field of the metadata records: ``none``/``off``/``no``
store raw data, ``zlib``/``gzip`` a zlib stream, ``bz2``/``bzip2`` bzip2
data and ``zstd`` one Zstandard frame.

An object is encoded piece by piece so that it never has to be held in
memory whole, and so that zlib and bzip2 pieces can be compressed on
several cores at once while still producing what upstream's one-shot
``zlib.decompress`` / ``bz2.decompress`` / ``zstd.decompress`` read:

* zlib: each piece is raw deflate ending in a sync flush, joined after
  one zlib header and closed by an empty final block and the Adler-32 of
  the whole object, as pigz does; within a piece, stretches that do not
  compress are stored rather than deflated for nothing;
* bzip2: each piece is a complete bzip2 stream; concatenated streams are
  one valid bzip2 file;
* zstd: one frame with its content size (upstream's ``zstd`` module needs
  it), written by zstandard's own multi-threaded compressor.

Decoding is streaming too, with the output of each step bounded, so a
small object that inflates to gigabytes of zeros never sits in memory.

zlib streams are made and read by zlib-ng's zlib-compatible module
(the ``zlib-ng`` package) when it is installed, as the package's
requirements install it on x86_64 and aarch64 (the platforms it has
wheels for): the same format (any zlib reads what it writes, and it
reads what any zlib wrote), inflated about three times as fast as by
the system's zlib 1.2, with Adler-32 and CRC-32 on the CPU's vector
units.  Without it, Python's own ``zlib`` does the same work, slower.
"""

import bz2
import collections
import contextlib
import functools
import struct
import zlib as python_zlib

try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - where it has no wheel
    zlib = python_zlib

from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception
from cinder_chunked_ext import locks

NONE_NAMES = ('none', 'off', 'no')
ALGORITHMS = {
    'none': None, 'off': None, 'no': None,
    'zlib': 'zlib', 'gzip': 'zlib',
    'bz2': 'bz2', 'bzip2': 'bz2',
    'zstd': 'zstd',
}
# The choices of backup_compression_algorithm, with their help, in
# upstream's order.
CHOICES = [('none', 'Do not use compression'),
           ('off', "Same as 'none'"),
           ('no', "Same as 'none'"),
           ('zlib', 'Use the Deflate compression algorithm'),
           ('gzip', "Same as 'zlib'"),
           ('bz2', 'Use Burrows-Wheeler transform compression'),
           ('bzip2', "Same as 'bz2'"),
           ('zstd', 'Use the Zstandard compression algorithm')]

#: The library that makes and reads zlib streams (the benchmark says it).
ZLIB_LIBRARY = ('zlib-ng %s' % zlib.ZLIBNG_VERSION
                if hasattr(zlib, 'ZLIBNG_VERSION')
                else 'zlib %s' % zlib.ZLIB_RUNTIME_VERSION)

_ZLIB_HEADER = b'\x78\x9c'  # deflate, 32 KiB window, default level


def family(name):
    """Map a compression name to its codec family (None for raw).

    :raises UnsupportedCompression: for names upstream does not know.
    """
    if not isinstance(name, str) or name.lower() not in ALGORITHMS:
        raise exception.UnsupportedCompression(name=name)
    return ALGORITHMS[name.lower()]


def _zstandard():
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a dependency of the package
        raise exception.UnsupportedCompression(name='zstd')
    return zstandard


@functools.lru_cache(maxsize=32)
def _zlib_piece_zero(length):
    return _zlib_piece(bytes(length))


# A piece is deflated in segments, each its own sync-flushed run of
# blocks, so that zero, incompressible and compressible stretches of one
# piece are each handled as they deserve.
_SEGMENT = 256 * 1024
_SAMPLE = 4 * 1024


def looks_incompressible(data):
    """True when samples at both ends of ``data`` do not deflate at all.

    Deflating random data (encrypted or already compressed blocks) at the
    default level costs as much as text and saves nothing; stored blocks
    cost a copy.  Any compressible sample means ``data`` is compressed.
    """
    length = len(data)
    if length < 2 * _SAMPLE:
        return False
    for start in (0, length - _SAMPLE):
        sample = data[start:start + _SAMPLE]
        if len(zlib.compress(sample, 1)) < _SAMPLE * 0.97:
            return False
    return True


@functools.lru_cache(maxsize=8)
def _deflate_zero_segment(length):
    return _deflate_segment(bytes(length), zlib.Z_DEFAULT_COMPRESSION)


def _deflate_segment(data, level):
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)


def _zlib_piece(data):
    """Raw deflate of ``data`` ending in a sync flush (byte aligned)."""
    out = []
    for start in range(0, len(data), _SEGMENT):
        segment = data[start:start + _SEGMENT]
        if pipeline.is_zero(segment):
            out.append(_deflate_zero_segment(len(segment)))
        elif looks_incompressible(segment):
            out.append(_deflate_segment(segment, 0))
        else:
            out.append(_deflate_segment(segment, zlib.Z_DEFAULT_COMPRESSION))
    return b''.join(out)


def zlib_piece(data, zero=False):
    if zero:
        return _zlib_piece_zero(len(data))
    return _zlib_piece(data)


@functools.lru_cache(maxsize=32)
def _bz2_piece_zero(length):
    return bz2.compress(bytes(length))


def bz2_piece(data, zero=False):
    if zero:
        return _bz2_piece_zero(len(data))
    return bz2.compress(data)


_ADLER_BASE = 65521


def adler32_zeros(length, value=1):
    """``zlib.adler32(bytes(length), value)`` without reading any zeros.

    Zeros leave the low sum alone and add ``length`` times it to the
    high sum.
    """
    low, high = value & 0xffff, (value >> 16) & 0xffff
    high = (high + length % _ADLER_BASE * low) % _ADLER_BASE
    return (high << 16) | low


# An empty final deflate block: ends a stream of sync-flushed pieces.
_DEFLATE_END = b'\x03\x00'


def parallel_piece_encoder(name):
    """A pure ``f(data, zero) -> bytes`` for codecs that split, or None.

    zlib and bzip2 pieces can be compressed independently (on several
    workers) and joined by an :class:`ObjectEncoder`; zstd and raw cannot
    or need not.
    """
    fam = family(name)
    if fam == 'zlib':
        return zlib_piece
    if fam == 'bz2':
        return bz2_piece
    return None


class ObjectEncoder(object):
    """Joins one object's pieces into the stored form, in order.

    ``start`` gives the bytes before the first piece, ``feed`` the bytes
    for one piece (given the piece and, for splitting codecs, what
    :func:`parallel_piece_encoder` made of it) and ``finish`` the bytes
    after the last.
    """

    def start(self):
        return b''

    def feed(self, data, encoded, zero=False):
        return encoded

    def finish(self):
        return b''


class ZlibObjectEncoder(ObjectEncoder):
    def __init__(self):
        self._adler = 1

    def start(self):
        return _ZLIB_HEADER

    def feed(self, data, encoded, zero=False):
        if zero:
            self._adler = adler32_zeros(len(data), self._adler)
        else:
            self._adler = zlib.adler32(data, self._adler)
        return encoded

    def finish(self):
        return _DEFLATE_END + struct.pack('>I', self._adler & 0xffffffff)


def _zstd_compressor(threads=0):
    # Upstream's ``zstd.decompress`` needs the content size in the frame
    # header, so the object's length must be known up front.
    return _zstandard().ZstdCompressor(
        level=3, threads=threads if threads > 1 else 0,
        write_content_size=True)


class ZstdObjectEncoder(ObjectEncoder):
    """One frame through zstandard's own worker threads, fed in order.

    ``compressor``: the (single-threaded) context to use, when the
    caller has one to spare.
    """

    def __init__(self, size, threads, compressor=None):
        if compressor is None:
            compressor = _zstd_compressor(threads)
        self._stream = compressor.compressobj(size=size)

    def feed(self, data, encoded, zero=False):
        return self._stream.compress(data)

    def finish(self):
        return self._stream.flush()


def new_object_encoder(name, size, threads=1):
    """An encoder for one object of ``size`` bytes, or None for raw."""
    fam = family(name)
    if fam is None:
        return None
    if fam == 'zlib':
        return ZlibObjectEncoder()
    if fam == 'bz2':
        return ObjectEncoder()
    return ZstdObjectEncoder(size, threads)


class StreamedCodec(object):
    """How a streamed object is stored: decided at its first piece.

    A backup streams an object larger than it holds whole without
    knowing its stored size in advance.  Compressing random data
    (an encrypted or already compressed volume) saves nothing, so the
    first piece's analysis decides: compressed, or raw (``'none'``, as
    upstream records an object that did not get smaller).
    """

    def __init__(self, algorithm, length):
        self._algorithm = algorithm
        self._length = length
        self.decided = family(algorithm) is None
        self.stored_as = 'none'
        self.encoder = None
        self.piece_encoder = (None if self.decided else
                              parallel_piece_encoder(algorithm))
        # Codecs that are not split in pieces learn from a sample.
        self.probe = (looks_incompressible
                      if not self.decided and self.piece_encoder is None
                      else None)

    def decide(self, first):
        """Given the first piece's result, the bytes that open the object.

        Returns None after the first call, and for a raw object.
        """
        if self.decided:
            return None
        self.decided = True
        self.probe = None
        if first.incompressible:
            self.piece_encoder = None
            return None
        self.stored_as = self._algorithm
        self.encoder = new_object_encoder(self._algorithm, self._length)
        return self.encoder.start() or None


# zstd contexts of objects encoded in one go, kept for the next one:
# making a context costs more than compressing a 32 KiB changed run
# with it (an incremental's objects).  Taken and given back whole; a
# context is never used by two objects at once.
_idle_zstd = []
IDLE_ZSTD_CONTEXTS = 16


@contextlib.contextmanager
def one_go_encoder(name, size):
    """:func:`new_object_encoder` for an object encoded in one call.

    The object is started, fed and finished inside the ``with`` block,
    on one thread; a zstd context is then reused by a later object.
    """
    if family(name) != 'zstd':
        yield new_object_encoder(name, size)
        return
    try:
        compressor = _idle_zstd.pop()
    except IndexError:
        compressor = _zstd_compressor()
    yield ZstdObjectEncoder(size, 1, compressor)
    # Not reached after an error: a context left mid-frame is dropped.
    if len(_idle_zstd) < IDLE_ZSTD_CONTEXTS:
        _idle_zstd.append(compressor)


def compress(name, data):
    """Compress ``data`` in one go (small documents and tests)."""
    encoder = new_object_encoder(name, len(data))
    if encoder is None:
        return bytes(data)
    piece = parallel_piece_encoder(name)
    encoded = piece(data) if piece else None
    return b''.join([encoder.start(), encoder.feed(data, encoded),
                     encoder.finish()])


class _ZlibReader(object):
    """``read(n)`` over a zlib stream, at most ``n`` bytes at a time.

    With zlib-ng's ``_ZlibDecompressor`` (or Python 3.12's): it keeps the
    input it has not consumed itself, and allocates each output of
    ``n`` bytes once.  ``decompressobj`` copies that input into a new
    ``unconsumed_tail`` on every call, and zlib-ng's one grows its output
    by doubling reallocations, which leave freed memory in the
    allocator's per-thread arenas (a restore's RSS grew by 130 MB).
    """

    def __init__(self, source, source_block):
        self._source = source
        self._block = source_block
        self._dec = _zlib_decompressor()
        self._source_done = False

    def read(self, n):
        dec = self._dec
        while not dec.eof:
            data = b''
            if dec.needs_input:
                if self._source_done:
                    break
                data = self._source.read(self._block)
                if not data:
                    self._source_done = True
                    break
            try:
                out = dec.decompress(data, n)
            except (zlib.error, python_zlib.error) as e:
                raise ValueError('zlib: %s' % e)
            if out:
                return out
            if not data and not dec.needs_input:
                break   # input held that makes nothing: cannot go on
        # End of stream, or a truncated one: the caller checks the length.
        return b''


class _StdlibZlibDecompressor(object):
    """``_ZlibDecompressor``'s interface over Python's ``decompressobj``.

    Python's own: its output grows by blocks joined once, where
    zlib-ng's (a release without ``_ZlibDecompressor``) reallocates.
    """

    def __init__(self):
        self._dec = python_zlib.decompressobj()

    @property
    def eof(self):
        return self._dec.eof

    @property
    def needs_input(self):
        return not self._dec.unconsumed_tail

    def decompress(self, data, max_length):
        return self._dec.decompress(data or self._dec.unconsumed_tail,
                                    max_length)


def _zlib_decompressor():
    if hasattr(zlib, '_ZlibDecompressor'):
        return zlib._ZlibDecompressor()
    return _StdlibZlibDecompressor()


class _Bz2Reader(object):
    """``read(n)`` over one or more concatenated bzip2 streams."""

    def __init__(self, source, source_block):
        self._source = source
        self._block = source_block
        self._dec = bz2.BZ2Decompressor()
        self._input = b''
        self._source_done = False

    def _more(self):
        if self._source_done:
            return b''
        data = self._source.read(self._block)
        if not data:
            self._source_done = True
        return data

    def read(self, n):
        while True:
            if self._dec.eof:
                rest = self._dec.unused_data + self._input or self._more()
                if not rest:
                    return b''
                self._dec = bz2.BZ2Decompressor()
                self._input = rest
            if self._dec.needs_input and not self._input:
                self._input = self._more()
                if not self._input:
                    return b''
            try:
                out = self._dec.decompress(self._input, n)
            except (OSError, EOFError) as e:
                raise ValueError('bz2: %s' % e)
            self._input = b''
            if out:
                return out


class _ZstdReader(object):
    def __init__(self, source, source_block):
        zstandard = _zstandard()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            source, read_size=source_block, read_across_frames=True)
        self._error = zstandard.ZstdError

    def read(self, n):
        try:
            return self._reader.read(n)
        except self._error as e:
            raise ValueError('zstd: %s' % e)


def open_decoding_reader(name, source, source_block=1024 * 1024):
    """Wrap ``source`` (an object with ``read(n)``) so reads decompress.

    Decoding errors raise ValueError; the caller names the object.  A
    truncated stream reads short without error; callers check the length.
    """
    fam = family(name)
    if fam is None:
        return source
    if fam == 'zlib':
        return _ZlibReader(source, source_block)
    if fam == 'bz2':
        return _Bz2Reader(source, source_block)
    return _ZstdReader(source, source_block)


# -- zero objects, recognised by their stored bytes --------------------------

# Zero objects no larger than this have their encodings remembered.
ZERO_OBJECT_LIMIT = 64 * 1024 * 1024
# Stored forms remembered, all codecs and lengths together.
_ZERO_FORMS_KEPT = 256
_zero_forms = collections.OrderedDict()    # (family, length, bytes) -> None
_zero_forms_lock = locks.native_lock()


def is_zero_form(name, length, stored):
    """True when ``stored`` is a known encoding of ``length`` zero bytes.

    Each codec encodes N zero bytes the same way every time: a form is
    remembered once an object in that form has decoded to zeros
    (:func:`remember_zero_form`), and objects stored the same way are
    then restored without being decoded.  Raw data is simply tested.
    """
    fam = family(name)
    if fam is None:
        return len(stored) == length and pipeline.is_zero(stored)
    if length > ZERO_OBJECT_LIMIT:
        return False
    key = (fam, length, bytes(stored))
    with _zero_forms_lock:
        if key not in _zero_forms:
            return False
        _zero_forms.move_to_end(key)
        return True


def remember_zero_form(name, length, stored):
    """Remember that ``stored`` decodes to ``length`` zero bytes."""
    fam = family(name)
    if fam is None or length > ZERO_OBJECT_LIMIT:
        return
    with _zero_forms_lock:
        _zero_forms[(fam, length, bytes(stored))] = None
        while len(_zero_forms) > _ZERO_FORMS_KEPT:
            _zero_forms.popitem(last=False)
