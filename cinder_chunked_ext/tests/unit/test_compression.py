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

"""Tests of the codecs: upstream's names, formats and streaming decode."""

import bz2
import io
import os
import platform
import random
import zlib

import ddt
import fixtures
import testtools
import zstandard

from cinder_chunked_ext.engine import compression
from cinder_chunked_ext import exception

try:
    import zstd as upstream_zstd   # what Cinder itself uses, when present
except ImportError:
    upstream_zstd = None

ALL_NAMES = ('none', 'off', 'no', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd')


def _sample(size=200000, seed=1):
    """Compressible, non-trivial data: text-like with zero runs."""
    rnd = random.Random(seed)
    words = [b'alpha', b'beta', b'gamma', b'\x00' * 300, b'delta\n']
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words)
    return bytes(out[:size])


def _encode_in_pieces(name, data, piece_size):
    """What the engine does: pieces encoded apart, joined in order."""
    encoder = compression.new_object_encoder(name, len(data))
    if encoder is None:
        return data
    piece_encoder = compression.parallel_piece_encoder(name)
    parts = [encoder.start()]
    for start in range(0, len(data), piece_size):
        piece = data[start:start + piece_size]
        zero = piece == bytes(len(piece))
        encoded = piece_encoder(piece, zero) if piece_encoder else None
        parts.append(encoder.feed(piece, encoded))
    parts.append(encoder.finish())
    return b''.join(parts)


def _decode_all(name, stored, n=65536, source_block=4096):
    reader = compression.open_decoding_reader(name, io.BytesIO(stored),
                                              source_block=source_block)
    parts = []
    while True:
        data = reader.read(n)
        if not data:
            return b''.join(parts)
        parts.append(data)


@ddt.ddt
class FamilyTestCase(testtools.TestCase):

    @ddt.data(('none', None), ('off', None), ('no', None),
              ('zlib', 'zlib'), ('gzip', 'zlib'), ('bz2', 'bz2'),
              ('bzip2', 'bz2'), ('zstd', 'zstd'), ('ZLIB', 'zlib'),
              ('Bzip2', 'bz2'))
    @ddt.unpack
    def test_family_upstream_names_mapped(self, name, expected):
        self.assertEqual(expected, compression.family(name))

    @ddt.data('lzma', '', None, 'gz', 3)
    def test_family_unknown_name_unsupported(self, name):
        exc = self.assertRaises(exception.UnsupportedCompression,
                                compression.family, name)
        self.assertIsInstance(exc, exception.InvalidBackup)

    def test_choices_upstream_names_in_order(self):
        self.assertEqual(list(ALL_NAMES),
                         [name for name, _help in compression.CHOICES])


@ddt.ddt
class UpstreamFormatTestCase(testtools.TestCase):
    """The stored bytes are what upstream's one-shot calls read."""

    @ddt.data('zlib', 'gzip')
    def test_compress_zlib_read_by_zlib_decompress(self, name):
        data = _sample()
        self.assertEqual(data, zlib.decompress(compression.compress(name,
                                                                    data)))

    @ddt.data('bz2', 'bzip2')
    def test_compress_bz2_read_by_bz2_decompress(self, name):
        data = _sample()
        self.assertEqual(data, bz2.decompress(compression.compress(name,
                                                                   data)))

    def test_compress_zstd_one_frame_with_content_size(self):
        data = _sample()
        stored = compression.compress('zstd', data)
        params = zstandard.get_frame_parameters(stored)
        self.assertEqual(len(data), params.content_size)
        # One-shot decompression needs the content size in the header.
        self.assertEqual(data, zstandard.ZstdDecompressor().decompress(
            stored))

    @testtools.skipIf(upstream_zstd is None, 'the zstd module is absent')
    def test_compress_zstd_read_by_upstream_zstd_module(self):
        data = _sample()
        self.assertEqual(data, upstream_zstd.decompress(
            compression.compress('zstd', data)))

    @testtools.skipIf(upstream_zstd is None, 'the zstd module is absent')
    def test_decoding_reader_upstream_zstd_frame_read(self):
        data = _sample()
        self.assertEqual(data, _decode_all('zstd',
                                           upstream_zstd.compress(data)))

    @ddt.data('none', 'off', 'no')
    def test_compress_raw_names_unchanged(self, name):
        data = _sample(1000)
        self.assertEqual(data, compression.compress(name, data))
        self.assertIsNone(compression.new_object_encoder(name, 10))

    @ddt.data(('zlib', zlib.decompress), ('bz2', bz2.decompress))
    @ddt.unpack
    def test_pieces_joined_read_by_one_shot_decompress(self, name, func):
        # Mixed pieces: data, an all-zero piece, a short tail.
        data = _sample(3 * 16384) + bytes(16384) + b'tail'
        stored = _encode_in_pieces(name, data, 16384)
        self.assertEqual(data, func(stored))

    def test_pieces_zlib_empty_object_valid_stream(self):
        stored = _encode_in_pieces('zlib', b'', 16)
        self.assertEqual(b'', zlib.decompress(stored))

    def test_upstream_one_shot_streams_read_by_decoding_reader(self):
        data = _sample()
        self.assertEqual(data, _decode_all('zlib', zlib.compress(data)))
        self.assertEqual(data, _decode_all('bz2', bz2.compress(data)))
        self.assertEqual(data, _decode_all(
            'zstd', zstandard.ZstdCompressor().compress(data)))


@ddt.ddt
class DecodingReaderTestCase(testtools.TestCase):

    @ddt.data(*ALL_NAMES)
    def test_decoding_reader_round_trip_equal(self, name):
        data = _sample() + os.urandom(5000)
        stored = _encode_in_pieces(name, data, 32768)
        self.assertEqual(data, _decode_all(name, stored, n=10000))

    @ddt.data('zlib', 'bz2', 'zstd')
    def test_decoding_reader_bomb_output_bounded_per_read(self, name):
        # 64 MiB of zeros stores in a few KiB; no read may return more
        # than asked for.
        size = 64 * 1024 * 1024
        stored = compression.compress(name, bytes(size))
        self.assertLess(len(stored), size // 100)
        reader = compression.open_decoding_reader(name, io.BytesIO(stored))
        total = 0
        for _i in range(50):
            data = reader.read(4096)
            self.assertLessEqual(len(data), 4096)
            total += len(data)
        self.assertEqual(50 * 4096, total)

    @ddt.data('zlib', 'bz2', 'zstd')
    def test_decoding_reader_truncated_stream_short_or_error(self, name):
        data = os.urandom(20000) + _sample(50000)
        stored = compression.compress(name, data)
        truncated = stored[:len(stored) // 2]
        try:
            decoded = _decode_all(name, truncated)
        except ValueError:
            return
        self.assertLess(len(decoded), len(data))

    @ddt.data('zlib', 'bz2', 'zstd')
    def test_decoding_reader_garbage_value_error(self, name):
        self.assertRaises(ValueError, _decode_all, name,
                          b'\x00garbage' * 100)

    def test_decoding_reader_zlib_flipped_checksum_value_error(self):
        stored = bytearray(compression.compress('zlib', _sample()))
        stored[-1] ^= 0x01   # the Adler-32 trailer
        exc = self.assertRaises(ValueError, _decode_all, 'zlib',
                                bytes(stored))
        self.assertIn('zlib', str(exc))

    @ddt.data((1, 1), (7, 3), (4096, 1), (1, 65536), (300, 100000),
              (65536, 4096))
    @ddt.unpack
    def test_decoding_reader_zlib_every_read_and_block_size(self, n,
                                                            source_block):
        # Reads cut anywhere (in the header, mid-match, with input held
        # by the decompressor), by both decompressors: zlib-ng's and the
        # one over Python's own zlib.
        data = _sample(30000) + bytes(70000) + os.urandom(3000)
        stored = zlib.compress(data)
        for backend in ('default', 'stdlib'):
            if backend == 'stdlib':
                self.useFixture(fixtures.MonkeyPatch(
                    'cinder_chunked_ext.engine.compression.zlib', zlib))
            self.assertEqual(data, _decode_all('zlib', stored, n=n,
                                               source_block=source_block),
                             backend)

    def test_decoding_reader_zlib_stdlib_truncated_and_garbage(self):
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_chunked_ext.engine.compression.zlib', zlib))
        data = _sample(50000)
        stored = zlib.compress(data)
        self.assertEqual(data[:1000], _decode_all('zlib', stored, n=1000,
                                                  source_block=100)[:1000])
        self.assertLess(len(_decode_all('zlib', stored[:len(stored) // 2])),
                        len(data))
        self.assertRaises(ValueError, _decode_all, 'zlib',
                          b'\x78\x9cgarbage' * 10)

    def test_zlib_reader_without_decompressor_type_uses_python_zlib(self):
        # A zlib module without _ZlibDecompressor (Python's own before
        # 3.12, an old zlib-ng): Python's decompressobj reads, whose
        # output grows by blocks rather than by reallocations.
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_chunked_ext.engine.compression.zlib', zlib))
        dec = compression._zlib_decompressor()
        self.assertIsInstance(dec, compression._StdlibZlibDecompressor)
        self.assertIs(type(zlib.decompressobj()), type(dec._dec))

    @testtools.skipUnless(platform.machine() in ('x86_64', 'aarch64'),
                          'zlib-ng is required on x86_64 and aarch64 only')
    def test_zlib_ng_makes_and_reads_zlib_streams(self):
        # A dependency of the package: restores inflate three times as
        # fast with it.  What it writes, Python's own zlib (upstream's)
        # reads.
        self.assertTrue(compression.ZLIB_LIBRARY.startswith('zlib-ng '),
                        compression.ZLIB_LIBRARY)
        data = _sample() + os.urandom(5000)
        self.assertEqual(data, zlib.decompress(
            _encode_in_pieces('zlib', data, 32768)))

    def test_decoding_reader_bz2_concatenated_streams_read(self):
        data = b''.join(bz2.compress(_sample(10000, seed=s))
                        for s in range(3))
        expected = b''.join(_sample(10000, seed=s) for s in range(3))
        self.assertEqual(expected, _decode_all('bz2', data, n=777,
                                               source_block=100))

    def test_decoding_reader_raw_is_the_source(self):
        source = io.BytesIO(b'abc')
        self.assertIs(source,
                      compression.open_decoding_reader('none', source))


@ddt.ddt
class PieceEncoderTestCase(testtools.TestCase):

    @ddt.data('none', 'zstd')
    def test_parallel_piece_encoder_unsplittable_none(self, name):
        self.assertIsNone(compression.parallel_piece_encoder(name))

    @ddt.data('zlib', 'bz2')
    def test_piece_encoder_zero_flag_same_bytes(self, name):
        piece = compression.parallel_piece_encoder(name)
        self.assertEqual(piece(bytes(8192)), piece(bytes(8192), True))


class OneGoEncoderTestCase(testtools.TestCase):
    """Objects encoded in one call share zstd contexts, one at a time."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(compression, '_idle_zstd',
                                                 []))
        real = compression._zstd_compressor
        self.made = []

        def counting(*args, **kwargs):
            self.made.append(real(*args, **kwargs))
            return self.made[-1]

        self.useFixture(fixtures.MockPatchObject(
            compression, '_zstd_compressor', counting))

    def _encode(self, data):
        with compression.one_go_encoder('zstd', len(data)) as encoder:
            return encoder.feed(data, None) + encoder.finish()

    def test_one_go_encoder_context_reused_same_frames(self):
        datas = [_sample(40000, seed=s) for s in range(3)] + [b'']
        stored = [self._encode(data) for data in datas]
        self.assertEqual(1, len(self.made))
        for data, frame in zip(datas, stored):
            fresh = zstandard.ZstdCompressor(
                level=3, write_content_size=True).compressobj(
                    size=len(data))
            self.assertEqual(fresh.compress(data) + fresh.flush(), frame)
            self.assertEqual(data, zstandard.ZstdDecompressor().decompress(
                frame))

    def test_one_go_encoder_error_drops_context(self):
        def fail():
            with compression.one_go_encoder('zstd', 100) as encoder:
                encoder.feed(b'x' * 10, None)
                raise ValueError('mid-frame')

        self.assertRaises(ValueError, fail)
        self.assertEqual([], compression._idle_zstd)
        self._encode(b'y' * 100)
        self.assertEqual(2, len(self.made))

    def test_one_go_encoder_other_codecs_as_new_object_encoder(self):
        data = _sample(30000)
        with compression.one_go_encoder('zlib', len(data)) as encoder:
            piece = compression.parallel_piece_encoder('zlib')
            stored = (encoder.start() + encoder.feed(data, piece(data)) +
                      encoder.finish())
        self.assertEqual(data, zlib.decompress(stored))
        with compression.one_go_encoder('none', 10) as encoder:
            self.assertIsNone(encoder)
        self.assertEqual([], self.made)
