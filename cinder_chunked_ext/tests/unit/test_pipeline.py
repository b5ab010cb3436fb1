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

"""Tests of the per-piece stages: zero test, block hashes, diffing."""

import hashlib
import os
import threading
from unittest import mock
import zlib

import ddt
import testtools

from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import pipeline

BLOCK = 4096


def _sha(data):
    return hashlib.sha256(data).hexdigest()


@ddt.ddt
class ZeroTestCase(testtools.TestCase):

    @ddt.data(b'', bytes(1), bytes(BLOCK), bytes(3 * BLOCK + 5))
    def test_is_zero_zeros_true(self, data):
        self.assertTrue(pipeline.is_zero(data))

    @ddt.data(b'\x01', bytes(BLOCK - 1) + b'\x01', b'\x01' + bytes(BLOCK))
    def test_is_zero_any_nonzero_byte_false(self, data):
        self.assertFalse(pipeline.is_zero(data))

    def test_is_zero_memoryview_and_bytearray_accepted(self):
        self.assertTrue(pipeline.is_zero(bytearray(10)))
        self.assertFalse(pipeline.is_zero(memoryview(b'\x00\x02')))

    def test_zeros_shared_object_all_zero(self):
        self.assertIs(pipeline.zeros(100), pipeline.zeros(100))
        self.assertEqual(b'\x00' * 100, pipeline.zeros(100))


@ddt.ddt
class BlockHashesTestCase(testtools.TestCase):

    @ddt.data(BLOCK, 3 * BLOCK, 3 * BLOCK + 100, 17)
    def test_block_hashes_match_hashlib_per_block(self, size):
        data = os.urandom(size)
        expected = [_sha(data[off:off + BLOCK])
                    for off in range(0, size, BLOCK)]
        self.assertEqual(expected, pipeline.block_hashes(data, BLOCK))

    @ddt.data(0, 1, 256 * 1024, 256 * 1024 + 1, 600 * 1024)
    def test_is_zero_memoryview_same_answer_as_bytes(self, size):
        zero = bytes(size)
        self.assertTrue(pipeline.is_zero(memoryview(zero)))
        self.assertTrue(pipeline.is_zero(memoryview(zero + b'x')[:size]))
        for spot in {0, size // 2, size - 1} if size else ():
            data = bytearray(size)
            data[spot] = 1
            self.assertFalse(pipeline.is_zero(bytes(data)))
            self.assertFalse(pipeline.is_zero(memoryview(bytes(data))))

    @ddt.data(BLOCK, 4 * BLOCK, 2 * BLOCK + 10)
    def test_block_hashes_zero_shortcut_same_as_hashing(self, size):
        data = bytes(size)
        self.assertEqual(pipeline.block_hashes(data, BLOCK),
                         pipeline.block_hashes(data, BLOCK, zero=True))

    @ddt.data(bytes, bytearray, memoryview)
    def test_block_hashes_zero_blocks_among_data_not_hashed(self, kind):
        # Zeros in the middle of a piece that holds data (the mixed
        # volume's pieces): a zero test, the remembered hash, no SHA-256.
        blocks = [os.urandom(BLOCK), bytes(BLOCK),
                  b'\x00' * 99 + b'\x01' + bytes(BLOCK - 100),
                  os.urandom(50) + bytes(BLOCK - 50), bytes(30)]
        data = b''.join(blocks)
        expected = [_sha(data[off:off + BLOCK])
                    for off in range(0, len(data), BLOCK)]
        # The hashes of zeros are remembered from the first time.
        pipeline.zero_sha256(BLOCK)
        pipeline.zero_sha256(30)
        real_sha256 = hashlib.sha256
        hashed = []
        mine = threading.get_ident()

        def counting_sha256(view):
            # hashlib is the process's: count this thread's calls only.
            if threading.get_ident() == mine:
                hashed.append(bytes(view))
            return real_sha256(view)

        with mock.patch.object(pipeline.hashlib, 'sha256', counting_sha256):
            got = pipeline.block_hashes(kind(data), BLOCK)
        self.assertEqual(expected, got)
        # Blocks 0, 2 and 3 hold data; the zero ones, the last partial
        # one included, are not hashed.
        self.assertEqual([data[:BLOCK], data[2 * BLOCK:4 * BLOCK][:BLOCK],
                          data[3 * BLOCK:4 * BLOCK]], hashed)

    def test_block_hashes_empty_no_hashes(self):
        self.assertEqual([], pipeline.block_hashes(b'', BLOCK))
        self.assertEqual([], pipeline.block_hashes(b'', BLOCK, zero=True))


class AnalysePieceTestCase(testtools.TestCase):

    def test_analyse_piece_data_hashes_and_encoding(self):
        data = os.urandom(BLOCK) + b'x' * BLOCK
        result = pipeline.analyse_piece(data, BLOCK,
                                        compression.zlib_piece, True)
        self.assertFalse(result.zero)
        self.assertEqual([_sha(data[:BLOCK]), _sha(data[BLOCK:])],
                         result.hashes)
        # A raw deflate piece ending in a sync flush.
        inflate = zlib.decompressobj(-15)
        self.assertEqual(data, inflate.decompress(result.encoded))
        self.assertIs(data, result.data)

    def test_analyse_piece_zero_flag_and_no_hashes_when_not_asked(self):
        result = pipeline.analyse_piece(bytes(2 * BLOCK), BLOCK, None, False)
        self.assertTrue(result.zero)
        self.assertIsNone(result.hashes)
        self.assertIsNone(result.encoded)


@ddt.ddt
class ChangedExtentsTestCase(testtools.TestCase):

    def _hashes(self, n, changed=(), tag='a'):
        return ['%s%d' % ('x' if i in changed else tag, i) for i in range(n)]

    def test_changed_extents_identical_empty(self):
        hashes = self._hashes(16)
        self.assertEqual([], pipeline.changed_extents(
            hashes, list(hashes), 0, 0, BLOCK, 16 * BLOCK))

    @ddt.data(
        # changed block indexes -> extents as (first block, block count)
        ((0,), [(0, 1)]),
        ((15,), [(15, 1)]),
        ((3, 4, 5), [(3, 3)]),
        ((1, 3), [(1, 1), (3, 1)]),
        ((0, 1, 14, 15), [(0, 2), (14, 2)]),
        (tuple(range(16)), [(0, 16)]),
    )
    @ddt.unpack
    def test_changed_extents_runs_one_extent_each(self, changed, runs):
        parent = self._hashes(16)
        hashes = self._hashes(16, changed)
        extents = pipeline.changed_extents(hashes, parent, 0, 0, BLOCK,
                                           16 * BLOCK)
        self.assertEqual([(a * BLOCK, n * BLOCK) for a, n in runs], extents)

    def test_changed_extents_later_chunk_absolute_offsets(self):
        # Chunk 2 of 16 blocks each: blocks 32..47 of the volume.
        parent = self._hashes(48)
        hashes = self._hashes(48, changed=(33, 34))[32:]
        extents = pipeline.changed_extents(hashes, parent, 32, 32 * BLOCK,
                                           BLOCK, 16 * BLOCK)
        self.assertEqual([(33 * BLOCK, 2 * BLOCK)], extents)

    def test_changed_extents_beyond_parent_changed(self):
        parent = self._hashes(10)
        hashes = self._hashes(16)
        extents = pipeline.changed_extents(hashes, parent, 0, 0, BLOCK,
                                           16 * BLOCK)
        self.assertEqual([(10 * BLOCK, 6 * BLOCK)], extents)

    def test_changed_extents_partial_last_block_clipped_to_limit(self):
        parent = self._hashes(3)
        hashes = self._hashes(3, changed=(2,))
        limit = 2 * BLOCK + 100
        extents = pipeline.changed_extents(hashes, parent, 0, 0, BLOCK,
                                           limit)
        self.assertEqual([(2 * BLOCK, 100)], extents)

    def test_changed_extents_real_hashes_locate_edit(self):
        old = bytearray(os.urandom(16 * BLOCK))
        new = bytearray(old)
        new[5 * BLOCK + 7] ^= 0xff
        extents = pipeline.changed_extents(
            pipeline.block_hashes(bytes(new), BLOCK),
            pipeline.block_hashes(bytes(old), BLOCK), 0, 0, BLOCK,
            len(new))
        self.assertEqual([(5 * BLOCK, BLOCK)], extents)


class ChangedBlocksTestCase(testtools.TestCase):

    def test_changed_blocks_copies_of_changed_runs_at_their_offsets(self):
        old = os.urandom(16 * BLOCK)
        new = bytearray(old)
        for block in (2, 3, 9):
            new[block * BLOCK + 1] ^= 0xff
        offset = 32 * BLOCK
        parent = ['?'] * 32 + pipeline.block_hashes(old, BLOCK)
        hashes = pipeline.block_hashes(new, BLOCK)
        kept = pipeline.changed_blocks(new, offset, hashes, parent, BLOCK)
        self.assertEqual(
            [(offset + 2 * BLOCK, bytes(new[2 * BLOCK:4 * BLOCK])),
             (offset + 9 * BLOCK, bytes(new[9 * BLOCK:10 * BLOCK]))], kept)
        # Copies: the buffer may be read into again at once.
        new[2 * BLOCK:4 * BLOCK] = bytes(2 * BLOCK)
        self.assertNotEqual(bytes(2 * BLOCK), kept[0][1])

    def test_changed_blocks_unchanged_piece_keeps_nothing(self):
        data = os.urandom(8 * BLOCK)
        hashes = pipeline.block_hashes(data, BLOCK)
        self.assertEqual([], pipeline.changed_blocks(data, 0, hashes,
                                                     list(hashes), BLOCK))


class ReadBuffersTestCase(testtools.TestCase):

    def test_read_buffers_given_back_are_taken_again(self):
        buffers = pipeline.ReadBuffers(100, keep=lambda: 2)
        first, second = buffers.take(), buffers.take()
        self.assertIsNot(first, second)
        self.assertEqual(bytearray(100), first)
        buffers.give(first)
        self.assertIs(first, buffers.take())

    def test_read_buffers_kept_no_more_than_window_now(self):
        # The window shrinks as other operations start: buffers beyond
        # it are let go, not kept for a concurrency that is gone.
        window = [3]
        buffers = pipeline.ReadBuffers(100, keep=lambda: window[0])
        taken = [buffers.take() for _ in range(3)]
        window[0] = 1
        for buffer in taken:
            buffers.give(buffer)
        self.assertIs(taken[0], buffers.take())
        self.assertIsNot(taken[1], buffers.take())
