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

"""The sealed object format: AES-256-GCM segments, refused when altered."""

import io
import os
from unittest import mock

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.ciphers import Cipher
import ddt
import testtools

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.store import sealed

SEG = sealed.SEGMENT_BYTES
TAG_BYTES = sealed.TAG_BYTES
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAME = 'volume_v_20260102030405_backup_b-00001'
PLACE = sealed.Placement(offset=3 * 2 ** 30, length=64 * 1024)
# An object sealed by the first format (version 1: the associated data
# binds the name only), written by that code with KEY and NAME.
FORMAT_1_PLAINTEXT = b'sealed format 1, name only in the associated data\n'
FORMAT_1_OBJECT = bytes.fromhex(
    '43435853011400004d65c82ed55d4b207365098f5525086c7cf8f82f6f976e10'
    '63bf38aac3d5dc503b116290056bbdf871f4d757e345574e52b5986e42275459'
    'cfb9228561a15b281173dd90478eb920b34ec58c8e296115c01e6713669c5a89'
    'abb292af72ea183bd554')


def seal(data, key=KEY, name=NAME, steps=(7, SEG, 3 * SEG + 5),
         placement=PLACE):
    """The stored form of ``data``, written in uneven pieces."""
    store = memory.MemoryStore()
    store.put_container('c')
    writer = sealed.SealingWriter(store.open_writer('c', name), key, name,
                                  placement)
    offset, i = 0, 0
    while offset < len(data):
        step = steps[i % len(steps)]
        writer.write(data[offset:offset + step])
        offset += step
        i += 1
    writer.commit()
    with store.open_reader('c', name) as reader:
        return reader.read()


def unseal(stored, key=KEY, name=NAME, step=-1, placement=PLACE):
    reader = sealed.OpeningReader(io.BytesIO(stored), key, name, placement)
    parts = []
    while True:
        data = reader.read(step)
        if not data:
            return b''.join(parts)
        parts.append(data)
        if step < 0:
            return b''.join(parts)


@ddt.ddt
class SealedObjectTestCase(testtools.TestCase):

    @ddt.data(0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17)
    def test_round_trip_sizes_identical(self, size):
        data = os.urandom(size)
        stored = seal(data)
        self.assertEqual(sealed.sealed_size(size), len(stored))
        self.assertEqual(data, unseal(stored))
        self.assertEqual(data, unseal(stored, step=4096))

    def test_stored_form_hides_plaintext_and_differs_each_time(self):
        data = b'known plaintext pattern ' * 100000
        first, second = seal(data), seal(data)
        self.assertNotIn(b'known plaintext', first)
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith(sealed.MAGIC))

    def assertRefused(self, stored, **kwargs):
        self.assertRaises(exception.ObjectAuthenticationFailed,
                          unseal, stored, **kwargs)

    @ddt.data(sealed.HEADER.size - 1, sealed.HEADER.size + 5,
              sealed.HEADER.size + SEG + 3, -1)
    def test_flipped_byte_refused(self, where):
        stored = bytearray(seal(os.urandom(2 * SEG + 10)))
        stored[where] ^= 0x01
        self.assertRefused(bytes(stored))

    @ddt.data(1, 16, SEG + 16, SEG + 17)
    def test_truncated_refused(self, cut):
        stored = seal(os.urandom(2 * SEG))
        self.assertRefused(stored[:-cut])

    def test_cut_at_segment_boundary_refused(self):
        stored = seal(os.urandom(2 * SEG + 100))
        boundary = sealed.HEADER.size + 2 * (SEG + 16)
        self.assertRefused(stored[:boundary])

    def test_extended_refused(self):
        stored = seal(os.urandom(SEG + 100))
        self.assertRefused(stored + os.urandom(40))

    def test_other_name_refused(self):
        stored = seal(os.urandom(100))
        self.assertRefused(stored, name=NAME[:-1] + '2')

    @ddt.data(PLACE._replace(offset=PLACE.offset + PLACE.length),
              PLACE._replace(offset=0),
              PLACE._replace(length=PLACE.length - 1),
              PLACE._replace(length=PLACE.length + 1))
    def test_other_offset_or_length_refused(self, placement):
        stored = seal(os.urandom(100))
        self.assertRefused(stored, placement=placement)

    def test_refusal_names_object_and_placement(self):
        stored = seal(os.urandom(100))
        error = self.assertRaises(
            exception.ObjectAuthenticationFailed, unseal, stored,
            placement=PLACE._replace(offset=0))
        self.assertIn(NAME, str(error))
        self.assertIn('%d bytes at volume offset 0' % PLACE.length,
                      str(error))

    def test_new_objects_are_format_2(self):
        stored = seal(b'x')
        self.assertEqual(2, sealed.HEADER.unpack(
            stored[:sealed.HEADER.size])[1])

    @ddt.data(None, PLACE, PLACE._replace(offset=0, length=1))
    def test_format_1_object_opens_whatever_placement(self, placement):
        self.assertEqual(FORMAT_1_PLAINTEXT,
                         unseal(FORMAT_1_OBJECT, placement=placement))

    def test_format_1_object_other_name_refused(self):
        self.assertRefused(FORMAT_1_OBJECT, name=NAME[:-1] + '2')

    def test_unknown_format_refused(self):
        stored = bytearray(seal(b'x'))
        stored[4] = 3
        error = self.assertRaises(exception.ObjectAuthenticationFailed,
                                  unseal, bytes(stored))
        self.assertIn('unknown sealed format 3', str(error))

    def test_wrong_key_refused(self):
        stored = seal(os.urandom(100))
        self.assertRefused(stored, key=OTHER_KEY)

    def test_segments_reordered_refused(self):
        stored = seal(os.urandom(3 * SEG + 10))
        head = sealed.HEADER.size
        seg = SEG + 16
        one, two = stored[head:head + seg], stored[head + seg:head + 2 * seg]
        swapped = (stored[:head] + two + one + stored[head + 2 * seg:])
        self.assertRefused(swapped)

    def test_plain_object_refused(self):
        self.assertRefused(b'{"version": "1.0.0"}' * 10)

    def test_reader_returns_nothing_before_segment_verified(self):
        stored = bytearray(seal(os.urandom(SEG - 1)))
        stored[-1] ^= 0x80     # the tag of the only (final) segment
        reader = sealed.OpeningReader(io.BytesIO(bytes(stored)), KEY, NAME,
                                      PLACE)
        self.assertRaises(exception.ObjectAuthenticationFailed,
                          reader.read, 1)


@ddt.ddt
class SegmentCipherTestCase(testtools.TestCase):
    """Small segments streamed (the GIL kept), large ones through AESGCM."""

    NONCE = bytes(11) + b'\x01'
    AAD = b'associated data'

    @ddt.data(0, 1, sealed.HELD_SLICE_BYTES, sealed.HELD_SLICE_BYTES + 1,
              32 * 1024, sealed.GIL_RELEASE_BYTES - 1,
              sealed.GIL_RELEASE_BYTES, SEG)
    def test_segment_cipher_same_bytes_as_aesgcm_both_ways(self, size):
        data = os.urandom(size)
        cipher = sealed._SegmentCipher(KEY)
        reference = aead.AESGCM(KEY).encrypt(self.NONCE, data, self.AAD)
        self.assertEqual(reference, cipher.seal(self.NONCE, data, self.AAD))
        self.assertEqual(data, cipher.open(self.NONCE, reference, self.AAD))
        tampered = bytearray(reference)
        tampered[-1] ^= 0x01
        self.assertRaises(InvalidTag, cipher.open, self.NONCE,
                          bytes(tampered), self.AAD)
        self.assertRaises(InvalidTag, cipher.open, self.NONCE,
                          reference[:TAG_BYTES - 1], self.AAD)

    def test_small_object_never_releases_the_gil(self):
        # cryptography releases the GIL in any call given 2048 bytes or
        # more (AESGCM's, and update()), and a worker then waits to take
        # it back: a 32 KiB object is sealed and opened in smaller
        # slices.
        data = os.urandom(32 * 1024)
        sizes = []

        class Recording(object):
            def __init__(self, context):
                self._context = context

            def update(self, piece):
                sizes.append(len(piece))
                return self._context.update(piece)

            def __getattr__(self, name):
                return getattr(self._context, name)

        class RecordingCipher(object):
            def __init__(self, *args):
                self._cipher = Cipher(*args)

            def encryptor(self):
                return Recording(self._cipher.encryptor())

            def decryptor(self):
                return Recording(self._cipher.decryptor())

        with mock.patch.object(aead.AESGCM, 'encrypt',
                               side_effect=AssertionError('encrypt')), \
                mock.patch.object(aead.AESGCM, 'decrypt',
                                  side_effect=AssertionError('decrypt')), \
                mock.patch.object(sealed, 'Cipher', RecordingCipher):
            self.assertEqual(data, unseal(seal(data)))
        self.assertEqual(2 * len(data), sum(sizes))
        self.assertLess(max(sizes), 2048)

    def test_large_segments_through_aesgcm(self):
        data = os.urandom(2 * SEG)
        real, calls = aead.AESGCM, []

        class CountingAESGCM(object):
            def __init__(self, key):
                self._real = real(key)

            def encrypt(self, *args):
                calls.append(len(args[1]))
                return self._real.encrypt(*args)
        with mock.patch.object(aead, 'AESGCM', CountingAESGCM):
            stored = seal(data, steps=(SEG,))
        # The two full segments; the empty final one is streamed.
        self.assertEqual([SEG, SEG], calls)
        self.assertEqual(data, unseal(stored))


class KeyringTestCase(testtools.TestCase):

    def test_lookup_data_objects_only(self):
        ring = sealed.Keyring()
        ring.hold('p', KEY)
        self.assertEqual((True, KEY), ring.lookup('p-00001'))
        self.assertEqual((False, None), ring.lookup('p_metadata'))
        self.assertEqual((False, None), ring.lookup('p_sha256file'))
        self.assertEqual((False, None), ring.lookup('q-00001'))

    def test_hold_other_key_same_prefix_refused(self):
        ring = sealed.Keyring()
        ring.hold('p', KEY)
        self.assertRaises(exception.EncryptionError, ring.hold, 'p',
                          OTHER_KEY)

    def test_release_forgets_after_last_hold(self):
        ring = sealed.Keyring()
        ring.hold('p', KEY)
        ring.hold('p', KEY)
        ring.release('p')
        self.assertEqual((True, KEY), ring.lookup('p-00002'))
        ring.release('p')
        self.assertEqual((False, None), ring.lookup('p-00002'))

    @staticmethod
    def sealed_memory_store(held=True):
        """``(memory store, sealed store over it)``; ``p``* sealed if held."""
        store = memory.MemoryStore()
        store.put_container('c')
        ring = sealed.Keyring()
        if held:
            ring.hold('p', KEY)
        return store, sealed.SealedStore(store, ring)

    def test_sealed_store_passes_unheld_names_unchanged(self):
        store, wrapped = self.sealed_memory_store(held=False)
        with wrapped.open_writer('c', 'p-00001') as writer:
            writer.write(b'plain')
        with store.open_reader('c', 'p-00001') as reader:
            self.assertEqual(b'plain', reader.read())

    def test_sealed_store_round_trip_with_placement(self):
        store, wrapped = self.sealed_memory_store()
        with wrapped.open_writer('c', 'p-00001', placement=PLACE) as writer:
            writer.write(b'secret')
        with wrapped.open_reader('c', 'p-00001', placement=PLACE) as reader:
            self.assertEqual(b'secret', reader.read())
        with store.open_reader('c', 'p-00001') as reader:
            self.assertNotIn(b'secret', reader.read())

    def test_sealed_store_encrypted_object_without_placement_refused(self):
        store, wrapped = self.sealed_memory_store()
        for method in (wrapped.open_writer, wrapped.open_reader):
            error = self.assertRaises(exception.EncryptionError, method,
                                      'c', 'p-00001')
            self.assertIn('p-00001', str(error))
        self.assertEqual([], store.list_objects('c', 'p'))

    def test_sealed_store_salts_unique_without_urandom_per_object(self):
        # A system call per object (os.urandom) is a round trip of the
        # GIL on a busy worker thread: salts come from a counter after
        # one random draw per store, and still never repeat.
        stores = [self.sealed_memory_store() for _ in range(2)]
        real_urandom = os.urandom
        with mock.patch.object(sealed.os, 'urandom',
                               side_effect=real_urandom) as urandom:
            for number in range(1, 51):
                for _store, wrapped in stores:
                    with wrapped.open_writer('c', 'p-%05d' % number,
                                             placement=PLACE) as writer:
                        writer.write(b'x')
        self.assertEqual(0, urandom.call_count)
        salts = set()
        for store, wrapped in stores:
            for number in range(1, 51):
                name = 'p-%05d' % number
                with store.open_reader('c', name) as reader:
                    salts.add(sealed.HEADER.unpack(
                        reader.read(sealed.HEADER.size))[4])
                with wrapped.open_reader('c', name,
                                         placement=PLACE) as reader:
                    self.assertEqual(b'x', reader.read())
        self.assertEqual(100, len(salts))

    def test_small_object_one_write(self):
        for size in (0, 5, SEG - 1):
            store = memory.MemoryStore()
            store.put_container('c')
            inner = store.open_writer('c', NAME)
            with mock.patch.object(inner, 'write',
                                   wraps=inner.write) as write:
                writer = sealed.SealingWriter(inner, KEY, NAME, PLACE)
                writer.write(b'\x01' * size)
                writer.commit()
            self.assertEqual(1, write.call_count)
            with store.open_reader('c', NAME) as reader:
                stored = reader.read()
            self.assertEqual(sealed.sealed_size(size), len(stored))
            self.assertEqual(b'\x01' * size, unseal(stored))
