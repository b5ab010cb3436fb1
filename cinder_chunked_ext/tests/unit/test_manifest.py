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

"""Tests of the two JSON documents of a backup (format 1.0.0)."""

import copy
import hashlib
import json
from unittest import mock

import ddt
import testtools

from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests.unit import test_chunked_backup as tcb

MD5 = '0123456789abcdef0123456789abcdef'
SHA = 'ab' * 32


def _metadata_doc(**changes):
    doc = {
        'version': '1.0.0',
        'backup_id': 'b1',
        'volume_id': 'v1',
        'backup_name': 'name',
        'backup_description': None,
        'created_at': '2026-01-02 03:04:05+00:00',
        'objects': [
            {'P-00001': {'offset': 0, 'length': 65536,
                         'compression': 'zlib', 'md5': MD5}},
            {'P-00002': {'offset': 65536, 'length': 100,
                         'compression': 'none', 'md5': MD5}},
        ],
        'parent_id': None,
        'volume_meta': None,
    }
    doc.update(changes)
    return doc


def _sha_doc(**changes):
    doc = {
        'version': '1.0.0',
        'backup_id': 'b1',
        'volume_id': 'v1',
        'backup_name': 'name',
        'backup_description': 'desc',
        'created_at': '2026-01-02 03:04:05+00:00',
        'chunk_size': 4096,
        'sha256s': [SHA, SHA],
    }
    doc.update(changes)
    return doc


def _dump(doc):
    return json.dumps(doc, sort_keys=True, indent=2).encode('utf-8')


#: The SHA-256 of 32768 zero bytes, the default hash block.
ZERO = 'c35020473aed1b4642cd726cad727b63fff2824ad68cedd7ffb73c7cbd890479'


class NamesTestCase(testtools.TestCase):

    def test_object_name_number_zero_padded_to_five_digits(self):
        self.assertEqual('P-00001', manifest.object_name('P', 1))
        self.assertEqual('P-123456', manifest.object_name('P', 123456))

    def test_document_names_suffix_prefix(self):
        self.assertEqual('P_metadata', manifest.metadata_name('P'))
        self.assertEqual('P_sha256file', manifest.sha256file_name('P'))

    def test_object_number_own_names_parsed(self):
        self.assertEqual(7, manifest.object_number('P', 'P-00007'))
        self.assertEqual(123456, manifest.object_number('P', 'P-123456'))

    def test_object_number_foreign_names_none(self):
        for name in ('Q-00001', 'P_metadata', 'P-0001', 'P-0000x',
                     'P-00001/../x', 'PP-00001', 'P-\u0661\u0662\u0663'
                     '\u0664\u0665'):
            self.assertIsNone(manifest.object_number('P', name), name)


@ddt.ddt
class BackupMetadataTestCase(testtools.TestCase):

    def _record(self):
        return manifest.BackupMetadata(
            backup_id='b1', volume_id='v1', backup_name='name',
            backup_description=None,
            created_at='2026-01-02 03:04:05+00:00', parent_id=None,
            objects=[
                manifest.ObjectRecord('P-00001', 0, 65536, 'zlib', MD5),
                manifest.ObjectRecord('P-00002', 65536, 100, 'none', MD5)])

    def test_to_json_same_bytes_as_upstream_dump(self):
        self.assertEqual(_dump(_metadata_doc()), self._record().to_json())

    def test_to_json_extra_metadata_only_when_given(self):
        record = self._record()
        self.assertNotIn(b'extra_metadata', record.to_json())
        record.extra_metadata = {'k': 'v'}
        self.assertEqual(_dump(_metadata_doc(extra_metadata={'k': 'v'})),
                         record.to_json())

    def test_from_json_round_trip_equal(self):
        record = self._record()
        record.volume_meta = '{"a": 1}'
        record.parent_id = 'p1'
        self.assertEqual(record,
                         manifest.BackupMetadata.from_json(record.to_json()))

    def test_from_json_object_order_kept(self):
        parsed = manifest.BackupMetadata.from_json(_dump(_metadata_doc()))
        self.assertEqual(['P-00001', 'P-00002'],
                         [o.name for o in parsed.objects])
        self.assertEqual(65636, parsed.objects[1].end)

    def test_from_json_unknown_version_unsupported(self):
        raw = _dump(_metadata_doc(version='2.0.0'))
        exc = self.assertRaises(exception.UnsupportedBackupVersion,
                                manifest.BackupMetadata.from_json, raw,
                                backup_id='b9')
        self.assertIsInstance(exc, exception.InvalidBackup)
        self.assertIn('2.0.0', str(exc))
        self.assertIn('b9', str(exc))

    def _broken_object(self, **fields):
        doc = _metadata_doc()
        body = doc['objects'][0]['P-00001']
        for key, value in fields.items():
            if value is KeyError:
                del body[key]
            else:
                body[key] = value
        return doc

    @ddt.data(
        b'not json',
        b'\xff\xfe',
        b'[1, 2]',
        b'"text"',
    )
    def test_from_json_not_an_object_corrupt(self, raw):
        exc = self.assertRaises(exception.CorruptBackup,
                                manifest.BackupMetadata.from_json, raw,
                                backup_id='b9')
        self.assertIn('b9', str(exc))

    def test_from_json_deeply_nested_corrupt(self):
        raw = b'{"version": ' + b'[' * 100000 + b']' * 100000 + b'}'
        self.assertRaises(exception.CorruptBackup,
                          manifest.BackupMetadata.from_json, raw)

    @ddt.data('version', 'backup_id', 'backup_name')
    def test_from_json_lone_surrogate_corrupt_message_encodable(self, key):
        raw = _dump(_metadata_doc()).replace(
            b'"%s": ' % key.encode(), b'"%s": "\\ud800", "x": ' %
            key.encode(), 1)
        exc = self.assertRaises(exception.CorruptBackup,
                                manifest.BackupMetadata.from_json, raw)
        str(exc).encode('utf-8')

    def test_from_json_surrogate_pair_accepted(self):
        raw = _dump(_metadata_doc(backup_name='\U0001f600'))
        self.assertIn(b'\\ud83d', raw)
        parsed = manifest.BackupMetadata.from_json(raw)
        self.assertEqual('\U0001f600', parsed.backup_name)

    @ddt.data(
        {'version': KeyError},
        {'version': 1},
        {'objects': KeyError},
        {'objects': {}},
        {'objects': [1]},
        {'objects': [{'a': {}, 'b': {}}]},
        {'objects': [{'a': 5}]},
        {'backup_id': KeyError},
        {'volume_id': None},
        {'parent_id': 5},
        {'volume_meta': {}},
    )
    def test_from_json_bad_document_field_corrupt(self, changes):
        doc = _metadata_doc()
        for key, value in changes.items():
            if value is KeyError:
                del doc[key]
            else:
                doc[key] = value
        self.assertRaises(exception.CorruptBackup,
                          manifest.BackupMetadata.from_json, _dump(doc))

    @ddt.data(
        {'offset': KeyError},
        {'offset': -1},
        {'offset': '0'},
        {'offset': 1.5},
        {'offset': True},
        {'length': 0},
        {'length': -4096},
        {'length': None},
        {'compression': 'lzma'},
        {'compression': None},
        {'md5': 'xyz'},
        {'md5': MD5.upper()},
        {'md5': MD5 + '\n'},
        {'md5': KeyError},
    )
    def test_from_json_bad_object_field_corrupt_naming_object(self, fields):
        doc = self._broken_object(**fields)
        exc = self.assertRaises(exception.CorruptBackup,
                                manifest.BackupMetadata.from_json,
                                _dump(doc), backup_id='b9')
        self.assertIn('P-00001', str(exc))

    @ddt.data('none', 'off', 'no', 'zlib', 'gzip', 'bz2', 'bzip2', 'zstd',
              'ZLIB')
    def test_from_json_known_compression_accepted(self, name):
        doc = self._broken_object(compression=name)
        parsed = manifest.BackupMetadata.from_json(_dump(doc))
        self.assertEqual(name, parsed.objects[0].compression)

    def test_from_json_optional_fields_missing_defaults(self):
        doc = _metadata_doc()
        for key in ('backup_name', 'backup_description', 'created_at',
                    'parent_id', 'volume_meta'):
            del doc[key]
        parsed = manifest.BackupMetadata.from_json(_dump(doc))
        self.assertIsNone(parsed.parent_id)
        self.assertIsNone(parsed.volume_meta)
        self.assertEqual('', parsed.created_at)

    def test_from_json_upstream_compact_dump_parsed(self):
        # Nothing depends on the indentation when reading.
        doc = _metadata_doc(extra_metadata={'x': 1})
        parsed = manifest.BackupMetadata.from_json(
            json.dumps(doc).encode('utf-8'))
        self.assertEqual({'x': 1}, parsed.extra_metadata)


@ddt.ddt
class Sha256FileTestCase(testtools.TestCase):

    def test_to_json_same_bytes_as_upstream_dump(self):
        record = manifest.Sha256File(
            backup_id='b1', volume_id='v1', backup_name='name',
            backup_description='desc',
            created_at='2026-01-02 03:04:05+00:00', chunk_size=4096,
            sha256s=[SHA, SHA])
        self.assertEqual(_dump(_sha_doc()), record.to_json())

    @ddt.data(0, 1, 2, 3, 7, 8, 9, 20)
    def test_pieces_same_bytes_as_upstream_dump(self, count):
        # Pieces of three entries, so that lists cross piece boundaries;
        # names that look like the list or hold newlines change nothing.
        sha256s = [hashlib.sha256(b'%d' % (i % 4)).hexdigest()
                   for i in range(count)]
        record = manifest.Sha256File(
            backup_id='b1', volume_id='v1',
            backup_name='"sha256s": [\n    "\x00sha256s\x00"',
            backup_description='\x00sha256s\x00\n\u00e9',
            created_at='2026-01-02 03:04:05+00:00', chunk_size=4096,
            sha256s=sha256s)
        expected = _dump({
            'version': '1.0.0', 'backup_id': 'b1', 'volume_id': 'v1',
            'backup_name': record.backup_name,
            'backup_description': record.backup_description,
            'created_at': record.created_at, 'chunk_size': 4096,
            'sha256s': sha256s})
        with mock.patch.object(manifest, '_ENTRIES_PER_PIECE', 3):
            pieces = list(record.to_json_pieces())
        self.assertEqual(expected, b''.join(pieces))
        self.assertEqual(expected, record.to_json())
        if count > 3:
            self.assertGreater(len(pieces), 3)
        self.assertEqual(sha256s,
                         manifest.Sha256File.from_json(expected).sha256s)

    def test_from_json_round_trip_equal(self):
        parsed = manifest.Sha256File.from_json(_dump(_sha_doc()))
        self.assertEqual(4096, parsed.chunk_size)
        self.assertEqual([SHA, SHA], parsed.sha256s)
        self.assertEqual(_dump(_sha_doc()), parsed.to_json())

    def test_from_json_unknown_version_unsupported(self):
        self.assertRaises(exception.UnsupportedBackupVersion,
                          manifest.Sha256File.from_json,
                          _dump(_sha_doc(version='0.9')))

    @ddt.data(
        {'chunk_size': 0},
        {'chunk_size': '4096'},
        {'chunk_size': KeyError},
        {'sha256s': KeyError},
        {'sha256s': 'ab'},
        {'sha256s': ['ab']},
        {'sha256s': [SHA.upper()]},
        {'sha256s': [SHA + '\n']},
        {'sha256s': [None]},
    )
    def test_from_json_bad_field_corrupt(self, changes):
        doc = copy.deepcopy(_sha_doc())
        for key, value in changes.items():
            if value is KeyError:
                del doc[key]
            else:
                doc[key] = value
        exc = self.assertRaises(exception.CorruptBackup,
                                manifest.Sha256File.from_json, _dump(doc),
                                backup_id='b9')
        self.assertIn('sha256file', str(exc))


@ddt.ddt
class Sha256FileZeroHashesTestCase(testtools.TestCase):
    """The zero block's hash is parsed into one shared string."""

    def _doc(self, sha256s, chunk_size=32768, name=None, **fields):
        values = dict(backup_id='b', volume_id='v', backup_name=name,
                      backup_description=None,
                      created_at='2026-11-29 00:00:00')
        values.update(fields)
        return manifest.Sha256File(chunk_size=chunk_size, sha256s=sha256s,
                                   **values).to_json()

    @ddt.data(
        {'name': ZERO},
        {'backup_description': ZERO},
        {'name': ZERO, 'backup_description': ZERO, 'volume_id': ZERO,
         'backup_id': ZERO, 'created_at': ZERO},
        {'name': 'x"' + ZERO},
        {'backup_description': 'x"%s", "sha256s": ["%s"' % (ZERO, ZERO)},
        {'volume_id': ZERO + '"'})
    def test_from_json_field_equal_zero_hash_fields_kept(self, fields):
        other = 'ab' * 32
        raw = self._doc([ZERO, other, ZERO], **fields)
        parsed = manifest.Sha256File.from_json(raw, zero_block=32768)
        self.assertEqual(manifest.Sha256File.from_json(raw), parsed)
        self.assertEqual([ZERO, other, ZERO], parsed.sha256s)
        self.assertIs(parsed.sha256s[0], parsed.sha256s[2])
        self.assertEqual(fields.get('name'), parsed.backup_name)
        for key, value in fields.items():
            if key != 'name':
                self.assertEqual(value, getattr(parsed, key))

    def test_from_json_compact_document_name_zero_hash_fields_kept(self):
        # Written by another tool: no indentation, keys in another order.
        doc = {'sha256s': [ZERO, ZERO], 'backup_name': ZERO,
               'nested': {'sha256s': [ZERO]}, 'version': '1.0.0',
               'backup_id': 'b', 'volume_id': 'v', 'chunk_size': 32768}
        raw = json.dumps(doc, separators=(',', ':')).encode()
        parsed = manifest.Sha256File.from_json(raw, zero_block=32768)
        self.assertEqual(ZERO, parsed.backup_name)
        self.assertEqual([ZERO, ZERO], parsed.sha256s)
        self.assertIs(parsed.sha256s[0], parsed.sha256s[1])

    def test_zero_hashes_shared_same_list(self):
        zero = pipeline.zero_sha256(32768)
        other = 'ab' * 32
        raw = self._doc([zero, other, zero, zero])
        parsed = manifest.Sha256File.from_json(raw, zero_block=32768)
        self.assertEqual([zero, other, zero, zero], parsed.sha256s)
        self.assertIs(parsed.sha256s[0], parsed.sha256s[2])
        self.assertEqual(parsed, manifest.Sha256File.from_json(raw))

    def test_zero_hashes_other_block_size_kept_as_text(self):
        zero = pipeline.zero_sha256(32768)
        raw = self._doc([zero, 'cd' * 32], chunk_size=65536)
        parsed = manifest.Sha256File.from_json(raw, zero_block=32768)
        self.assertEqual([zero, 'cd' * 32], parsed.sha256s)
        self.assertEqual(65536, parsed.chunk_size)

    def test_zero_hashes_marker_text_elsewhere_same_result(self):
        zero = pipeline.zero_sha256(32768)
        raw = self._doc([zero, zero], name='Infinity')
        parsed = manifest.Sha256File.from_json(raw, zero_block=32768)
        self.assertEqual([zero, zero], parsed.sha256s)
        self.assertEqual('Infinity', parsed.backup_name)

    def test_zero_hashes_number_in_list_rejected(self):
        zero = pipeline.zero_sha256(32768)
        raw = self._doc([zero, 'ef' * 32]).replace(
            b'"' + b'ef' * 32 + b'"', b'Infinity')
        self.assertRaises(exception.CorruptBackup,
                          manifest.Sha256File.from_json, raw,
                          zero_block=32768)


class ZeroHashNameTestCase(tcb.DriverTestCase):
    """A backup named with the zero block's hash stays a parent."""

    def test_incremental_parent_named_zero_hash_restores_identical(self):
        zero = pipeline.zero_sha256(tcb.SHA)
        data = tcb.mixed_volume(chunks=3)
        full = self.make_backup(data, display_name=zero,
                                display_description=zero)
        changed = bytearray(data)
        changed[100:107] = b'changed'
        incr = self.make_backup(bytes(changed), parent=full,
                                display_name=zero)
        self.assertEqual(zero, self.driver._read_sha256file(full).backup_name)
        self.assertEqual(bytes(changed),
                         self.restore_bytes(incr, len(changed)))
