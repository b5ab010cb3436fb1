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

"""Property-based tests of the engine and of the manifest parsers.

* Any volume, changed in any way between the backups of a chain (full,
  then incrementals each on the previous one), with any compression per
  backup, restores byte for byte from every backup of the chain, onto a
  new (zero-filled) volume and onto an existing one full of garbage, with
  the memory store and the POSIX store.  What each backup stored is
  checked too: its objects, their ranges, checksums and block hashes.
* Any byte string given to the manifest parsers either parses into a
  manifest that keeps the format's invariants or raises the package's own
  error (``CorruptBackup`` / ``UnsupportedBackupVersion``), never anything
  else.

Examples are derandomised and no example database is kept, so every run
tries the same cases.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import random
import re
import tempfile
from unittest import mock

from hypothesis import example
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import base as drivers_base
from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.tests import fakes

CONF = cfg.CONF
KiB = 1024
MiB = 1024 * KiB

_MD5_HEX = re.compile(r'[0-9a-f]{32}')
_SHA256_HEX = re.compile(r'[0-9a-f]{64}')


def _settings(max_examples):
    return settings(max_examples=max_examples, deadline=None,
                    derandomize=True, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


class MemoryBackupDriver(drivers_base.StoreBackedDriver):
    """The engine on a :class:`MemoryStore`; one container for all."""

    def __init__(self, context, store):
        super().__init__(context, store, CONF.backup_file_size,
                         CONF.backup_sha_block_size_bytes,
                         'memory-backups', False)

    def update_container_name(self, backup, container):
        return container

    def _generate_object_name_prefix(self, backup):
        return 'volume_%s_%s_backup_%s' % (
            backup.volume_id, chunked.utcnow_stamp(), backup.id)

    def get_extra_metadata(self, backup, volume):
        # Passed to every reader and writer, and kept in the metadata.
        return {'volume': volume['id']}


# -- volumes and their changes --------------------------------------------

KINDS = ('random', 'zero', 'text', 'byte')


def make_bytes(kind, length, seed):
    rnd = random.Random(seed)
    if kind == 'random':
        return rnd.randbytes(length)
    if kind == 'zero':
        return bytes(length)
    if kind == 'byte':
        return bytes([rnd.randrange(1, 256)]) * length
    words = (b'cinder ', b'backup ', b'chunk ', b'\n', b'\0' * 40)
    out = bytearray()
    while len(out) < length:
        out += rnd.choice(words)
    return bytes(out[:length])


@dataclasses.dataclass(frozen=True)
class Geometry:
    block: int
    chunk: int
    piece: int
    size: int


@st.composite
def geometries(draw):
    block = draw(st.sampled_from([512, 4096]))
    chunk = block * draw(st.integers(1, 4))
    piece = block * draw(st.integers(1, 3))
    max_blocks = (64 * KiB) // block if block == 512 else 48
    blocks = draw(st.integers(0, max_blocks))
    tail = draw(st.sampled_from([0, 0, 1, block // 2, block - 1]))
    size = max(1, blocks * block + tail)
    return Geometry(block, chunk, piece, size)


@st.composite
def ranges(draw, size):
    start = draw(st.integers(0, size - 1))
    length = draw(st.integers(1, size - start))
    return start, length


@st.composite
def initial_volumes(draw, size):
    """A volume made of regions of random, zero, text and byte data."""
    data = bytearray(size)
    for (start, length) in draw(st.lists(ranges(size), min_size=1,
                                         max_size=4)):
        kind = draw(st.sampled_from(KINDS))
        seed = draw(st.integers(0, 2 ** 16))
        data[start:start + length] = make_bytes(kind, length, seed)
    return bytes(data)


@st.composite
def mutations(draw, size):
    """Ranges to overwrite, zero, fill, or single bytes to flip."""
    ops = []
    for _i in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(KINDS + ('flip',)))
        start, length = draw(ranges(size))
        ops.append((op, start, length, draw(st.integers(0, 2 ** 16))))
    return ops


def apply_mutations(data, ops):
    data = bytearray(data)
    for op, start, length, seed in ops:
        if op == 'flip':
            data[start] ^= 1 + seed % 255
        else:
            data[start:start + length] = make_bytes(op, length, seed)
    return bytes(data)


ALGORITHMS = ('none', 'zlib', 'bz2', 'zstd')
ALIASES = ('gzip', 'bzip2', 'off')


@st.composite
def chains(draw):
    geometry = draw(geometries())
    first = draw(initial_volumes(geometry.size))
    steps = draw(st.lists(mutations(geometry.size), max_size=3))
    algorithms = draw(st.lists(
        st.sampled_from(ALGORITHMS) | st.sampled_from(ALIASES),
        min_size=len(steps) + 1, max_size=len(steps) + 1))
    return geometry, first, steps, algorithms


def block_hashes(data, block):
    return [hashlib.sha256(data[off:off + block]).hexdigest()
            for off in range(0, len(data), block)]


def md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def changed_runs(old, new, geometry):
    """What an incremental backup must store, as ``(offset, length)``.

    Runs of changed blocks, cut at chunk boundaries, in objects of at
    most a piece.
    """
    return [(start + cut, min(geometry.piece, length - cut))
            for start, length in _whole_runs(old, new, geometry)
            for cut in range(0, length, geometry.piece)]


def _whole_runs(old, new, geometry):
    """Runs of changed blocks, cut at chunk boundaries."""
    runs = []
    old_h = block_hashes(old, geometry.block)
    new_h = block_hashes(new, geometry.block)
    for chunk_start in range(0, len(new), geometry.chunk):
        chunk_end = min(chunk_start + geometry.chunk, len(new))
        run = None
        for off in range(chunk_start, chunk_end, geometry.block):
            idx = off // geometry.block
            if new_h[idx] != old_h[idx]:
                if run is None:
                    run = off
            elif run is not None:
                runs.append((run, off - run))
                run = None
        if run is not None:
            runs.append((run, chunk_end - run))
    return runs


class ChainRestoreTestCase(testtools.TestCase):
    """Backup chains of changing volumes restore byte for byte."""

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.conf.config(backup_create_containers=True,
                         backup_container=None,
                         backup_enable_progress_timer=False,
                         backup_object_number_per_notification=10)
        self.conf.config(verify_checksums_on_restore=True,
                         max_bytes_in_flight=8 * MiB,
                         group=chunked.PIPELINE_GROUP)

    # -- drivers -----------------------------------------------------------

    def _driver_factory(self, kind, geometry, workers, tight_memory):
        """A function making drivers that all share one repository."""
        store = memory.MemoryStore()
        repo = self.stack.enter_context(tempfile.TemporaryDirectory())

        def make(algorithm):
            self.conf.config(backup_file_size=geometry.chunk,
                             backup_sha_block_size_bytes=geometry.block,
                             backup_compression_algorithm=algorithm)
            self.conf.config(workers=workers, group=chunked.PIPELINE_GROUP)
            if kind == 'memory':
                driver = MemoryBackupDriver(self.context, store)
            else:
                driver = posix.PosixBackupDriver(self.context,
                                                 backup_path=repo)
            if tight_memory:
                # Below the option's minimum: pieces wait on each other
                # and objects are restored in two streaming passes.
                driver.settings = dataclasses.replace(
                    driver.settings, max_bytes_in_flight=2 * geometry.piece)
            return driver
        return make

    # -- checks of what one backup stored ----------------------------------

    def _stored(self, driver, backup):
        store = driver.store
        prefix = backup.service_metadata

        def read(name):
            with store.open_reader(backup.container, name) as reader:
                return reader.read()
        meta = json.loads(read(manifest.metadata_name(prefix)))
        shafile = json.loads(read(manifest.sha256file_name(prefix)))
        objects = [(name, fields) for entry in meta['objects']
                   for name, fields in entry.items()]
        names = store.list_objects(backup.container, prefix)
        return meta, shafile, objects, names, read

    def _check_backup(self, driver, backup, data, parent_data, geometry,
                      algorithm):
        meta, shafile, objects, names, read = self._stored(driver, backup)
        prefix = backup.service_metadata
        self.assertEqual(
            sorted([name for name, _f in objects]
                   + [manifest.metadata_name(prefix),
                      manifest.sha256file_name(prefix)]),
            sorted(names))
        self.assertEqual(len(objects), backup.object_count)
        self.assertEqual([manifest.object_name(prefix, n)
                          for n in range(1, len(objects) + 1)],
                         [name for name, _f in objects])
        self.assertEqual(backup.parent_id, meta['parent_id'])
        self.assertEqual(geometry.block, shafile['chunk_size'])
        self.assertEqual(block_hashes(data, geometry.block),
                         shafile['sha256s'])
        ranges_ = [(f['offset'], f['length']) for _n, f in objects]
        if parent_data is None:
            self.assertEqual(
                [(off, min(geometry.chunk, len(data) - off))
                 for off in range(0, len(data), geometry.chunk)], ranges_)
        else:
            self.assertEqual(changed_runs(parent_data, data, geometry),
                             ranges_)
        for name, fields in objects:
            part = data[fields['offset']:fields['offset'] + fields['length']]
            self.assertEqual(md5_hex(part), fields['md5'], name)
            self.assertIn(fields['compression'], (algorithm, 'none'))
            if compression.family(algorithm) is None:
                self.assertEqual('none', fields['compression'])
            if fields['compression'] == 'none':
                self.assertEqual(part, read(name))

    # -- the property ------------------------------------------------------

    def _restore(self, driver, backup, fill, size, volume_is_new):
        target = io.BytesIO(fill(size))
        backup.status = 'restoring'
        try:
            driver.restore(backup, backup.volume_id, target, volume_is_new)
        finally:
            backup.status = 'available'
        return target.getvalue()

    @_settings(max_examples=80)
    @given(chain=chains(), kind=st.sampled_from(['memory', 'posix']),
           workers=st.integers(1, 3), tight_memory=st.booleans())
    @example(chain=(Geometry(512, 1024, 512, 4 * KiB + 100),
                    bytes(4 * KiB + 100),
                    [[('random', 600, 1000, 7)], [], [('zero', 0, 4196, 0)]],
                    ['zstd', 'none', 'bz2', 'zlib']),
             kind='posix', workers=2, tight_memory=True)
    def test_chain_restore_every_backup_identical(self, chain, kind,
                                                  workers, tight_memory):
        geometry, first, steps, algorithms = chain
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        with contextlib.ExitStack() as self.stack:
            self.stack.enter_context(
                mock.patch.object(chunked, 'PIECE_BYTES', geometry.piece))
            make_driver = self._driver_factory(kind, geometry, workers,
                                               tight_memory)
            versions = [first]
            for ops in steps:
                versions.append(apply_mutations(versions[-1], ops))
            volume_id = 'vol-%s' % kind
            backups = []
            for i, (data, algorithm) in enumerate(zip(versions,
                                                      algorithms)):
                driver = make_driver(algorithm)
                parent = backups[-1] if backups else None
                backup = self.env.new_backup(
                    1, volume_id=volume_id,
                    parent_id=parent.id if parent else None)
                driver.backup(backup, io.BytesIO(data))
                backup.status = 'available'
                self._check_backup(driver, backup, data,
                                   versions[i - 1] if i else None,
                                   geometry, algorithm)
                backups.append(backup)

            # Restores do not depend on the configured compression.
            restorer = make_driver('none')
            garbage = random.Random(geometry.size).randbytes
            for i, (backup, data) in enumerate(zip(backups, versions)):
                self.assertEqual(
                    data, self._restore(restorer, backup, bytes,
                                        geometry.size, True),
                    'backup %d of %d onto a new volume' % (i, len(backups)))
                self.assertEqual(
                    data, self._restore(restorer, backup, garbage,
                                        geometry.size, False),
                    'backup %d of %d onto an existing volume'
                    % (i, len(backups)))


# -- the manifest parsers ---------------------------------------------------

BACKUP_ID = 'backup-under-test'
MD5 = '0123456789abcdef0123456789abcdef'
SHA = 'ab' * 32

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children,
                                        max_size=4)),
    max_leaves=12)

# Raw JSON text no Python value dumps to: huge numbers, special floats,
# deep nesting, escaped lone surrogates.
LONE_SURROGATE = '"\\ud800"'
DEEP_LIST = '[' * 50000 + ']' * 50000
RAW_TOKENS = (
    '9' * 5000, '-1' + '0' * 400, '1e400', '-1e400', 'NaN', 'Infinity',
    '-Infinity', LONE_SURROGATE, '"\\udfff-00001"', '"\\u0000"',
    DEEP_LIST, '{"a":' * 50000 + '1' + '}' * 50000,
)
_RAW_MARK = '@@raw-%d@@'


def raw_token(token):
    """A placeholder that :func:`encode` replaces with ``token``."""
    return _RAW_MARK % RAW_TOKENS.index(token)


METADATA_KEYS = ('version', 'backup_id', 'volume_id', 'backup_name',
                 'backup_description', 'created_at', 'objects', 'parent_id',
                 'volume_meta', 'extra_metadata')
SHA256FILE_KEYS = ('version', 'backup_id', 'volume_id', 'backup_name',
                   'backup_description', 'created_at', 'chunk_size',
                   'sha256s')
OBJECT_KEYS = ('offset', 'length', 'compression', 'md5')
VALID_OBJECT = {'offset': 0, 'length': 4096, 'compression': 'zlib',
                'md5': MD5}
VALID_METADATA = {
    'version': '1.0.0', 'backup_id': 'b', 'volume_id': 'v',
    'backup_name': None, 'backup_description': None, 'created_at': '',
    'objects': [{'P-00001': VALID_OBJECT}], 'parent_id': None,
    'volume_meta': None}
VALID_SHA256FILE = {
    'version': '1.0.0', 'backup_id': 'b', 'volume_id': 'v',
    'backup_name': None, 'backup_description': None, 'created_at': '',
    'chunk_size': 4096, 'sha256s': [SHA]}

special_values = st.sampled_from([
    None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 63), 1.0, 0.5, '', '1',
    '1.0.0', '2.0.0', '1.0.0 ', [], {}, ['1.0.0'], {'offset': 1},
    MD5, MD5.upper(), MD5 + '\n', MD5[:-1], MD5 + '0', ' ' + MD5,
    SHA, SHA.upper(), SHA + '\n', SHA[:-1],
    'zlib', 'ZLIB', 'gzip', 'bz2', 'bzip2', 'zstd', 'none', 'off', 'no',
    'lzma', 'zlib\n', 'z\u0130b', 'P-00001', 'P-1', '../../etc/passwd',
]) | st.integers(0, len(RAW_TOKENS) - 1).map(lambda i: _RAW_MARK % i)
any_value = special_values | json_values


def object_entries(name=st.text(max_size=10) | st.just('P-00001')):
    return st.builds(
        lambda n, off, length, algo, md5: {n: {
            'offset': off, 'length': length, 'compression': algo,
            'md5': md5}},
        name, st.integers(0, 2 ** 40), st.integers(1, 2 ** 30),
        st.sampled_from(sorted(compression.ALGORITHMS)),
        st.text('0123456789abcdef', min_size=32, max_size=32))


@st.composite
def metadata_docs(draw):
    optional = st.none() | st.text(max_size=10)
    doc = {
        'version': '1.0.0',
        'backup_id': draw(st.text(max_size=10)),
        'volume_id': draw(st.text(max_size=10)),
        'backup_name': draw(optional),
        'backup_description': draw(optional),
        'created_at': draw(st.text(max_size=10)),
        'objects': draw(st.lists(object_entries(), max_size=4)),
        'parent_id': draw(optional),
        'volume_meta': draw(optional),
    }
    if draw(st.booleans()):
        doc['extra_metadata'] = draw(json_values)
    return doc


@st.composite
def sha256file_docs(draw):
    optional = st.none() | st.text(max_size=10)
    return {
        'version': '1.0.0',
        'backup_id': draw(st.text(max_size=10)),
        'volume_id': draw(st.text(max_size=10)),
        'backup_name': draw(optional),
        'backup_description': draw(optional),
        'created_at': draw(st.text(max_size=10)),
        'chunk_size': draw(st.integers(1, 2 ** 31)),
        'sha256s': draw(st.lists(
            st.text('0123456789abcdef', min_size=64, max_size=64),
            max_size=4)),
    }


@st.composite
def mutated(draw, docs, keys):
    """A valid document, then a few changes that may break it."""
    doc = draw(docs)
    for _i in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(['top', 'object', 'list']))
        targets = doc.get('objects') or doc.get('sha256s')
        if where == 'object' and isinstance(doc.get('objects'), list) \
                and doc['objects'] and isinstance(doc['objects'][0], dict):
            idx = draw(st.integers(0, len(doc['objects']) - 1))
            entry = doc['objects'][idx]
            if not isinstance(entry, dict) or not entry:
                continue
            body = next(iter(entry.values()))
            if not isinstance(body, dict):
                continue
            key = draw(st.sampled_from(OBJECT_KEYS))
            if draw(st.booleans()):
                body.pop(key, None)
            else:
                body[key] = draw(any_value)
        elif where == 'list' and isinstance(targets, list) and targets:
            idx = draw(st.integers(0, len(targets) - 1))
            targets[idx] = draw(any_value)
        else:
            key = draw(st.sampled_from(keys) | st.text(max_size=5))
            if draw(st.booleans()):
                doc.pop(key, None)
            else:
                doc[key] = draw(any_value)
    return doc


def encode(doc):
    text = json.dumps(doc, sort_keys=True, indent=2)
    for i, token in enumerate(RAW_TOKENS):
        text = text.replace('"%s"' % (_RAW_MARK % i), token)
    return text.encode('utf-8')


@dataclasses.dataclass(frozen=True)
class Damaged:
    """A document, encoded, then maybe damaged at byte level.

    Kept as the document (with its raw-token placeholders) rather than
    as bytes so that a failing example prints short.
    """

    doc: dict
    how: str = 'intact'
    position: int = 0
    junk: bytes = b''

    def raw(self):
        raw = encode(self.doc)
        pos = self.position % (len(raw) + 1)
        if self.how == 'truncate':
            return raw[:pos]
        if self.how == 'insert':
            return raw[:pos] + self.junk + raw[pos:]
        if self.how == 'replace':
            return raw[:pos] + self.junk + raw[pos + len(self.junk):]
        return raw


def damaged(docs):
    return st.builds(
        Damaged, docs,
        st.sampled_from(['intact', 'intact', 'truncate', 'insert',
                         'replace']),
        st.integers(0, 2 ** 16),
        st.sampled_from([b'\xff', b'\xc3(', b'\xed\xa0\x80', b'\x80',
                         b'\0', b'"', b'}', b',']))


def parse_outcome(parser, raw):
    """``(manifest, None)`` or ``(None, our_error)``; fails on others."""
    try:
        return parser(raw, backup_id=BACKUP_ID), None
    except (exception.CorruptBackup,
            exception.UnsupportedBackupVersion) as e:
        return None, e


class ManifestParserTestCase(testtools.TestCase):
    """Any input parses into a valid manifest or raises our error."""

    def _check_error(self, error):
        self.assertIsInstance(error, exception.InvalidBackup)
        message = str(error)
        self.assertIn(BACKUP_ID, message)
        # The manager stores the message as the backup's fail_reason and
        # logs it: it must encode.
        message.encode('utf-8')

    def _check_common(self, doc):
        self.assertIn(doc.version, manifest.SUPPORTED_VERSIONS)
        self.assertIsInstance(doc.backup_id, str)
        self.assertIsInstance(doc.volume_id, str)
        self.assertIsInstance(doc.created_at, str)
        for value in (doc.backup_name, doc.backup_description):
            self.assertIsInstance(value, (str, type(None)))

    def check_metadata(self, raw):
        doc, error = parse_outcome(manifest.BackupMetadata.from_json, raw)
        if error is not None:
            self._check_error(error)
            return None
        self._check_common(doc)
        for value in (doc.parent_id, doc.volume_meta):
            self.assertIsInstance(value, (str, type(None)))
        for obj in doc.objects:
            self.assertIsInstance(obj.name, str)
            self.assertIs(int, type(obj.offset))
            self.assertIs(int, type(obj.length))
            self.assertGreaterEqual(obj.offset, 0)
            self.assertGreater(obj.length, 0)
            compression.family(obj.compression)
            self.assertIsNotNone(_MD5_HEX.fullmatch(obj.md5),
                                 ascii(obj.md5))
        # What we write back parses to the same document.
        again = manifest.BackupMetadata.from_json(doc.to_json())
        self.assertEqual(doc.to_json(), again.to_json())
        return doc

    def check_sha256file(self, raw):
        doc, error = parse_outcome(manifest.Sha256File.from_json, raw)
        if error is not None:
            self._check_error(error)
            return None
        self._check_common(doc)
        self.assertIs(int, type(doc.chunk_size))
        self.assertGreater(doc.chunk_size, 0)
        for sha in doc.sha256s:
            self.assertIsNotNone(_SHA256_HEX.fullmatch(sha), ascii(sha))
        again = manifest.Sha256File.from_json(doc.to_json())
        self.assertEqual(doc, again)
        return doc

    @_settings(max_examples=150)
    @given(st.binary(max_size=200))
    def test_from_json_any_bytes_manifest_or_our_error(self, raw):
        self.check_metadata(raw)
        self.check_sha256file(raw)

    @_settings(max_examples=120)
    @given(json_values.map(encode))
    def test_from_json_any_json_value_manifest_or_our_error(self, raw):
        self.check_metadata(raw)
        self.check_sha256file(raw)

    @_settings(max_examples=150)
    @given(st.dictionaries(st.sampled_from(METADATA_KEYS + SHA256FILE_KEYS),
                           any_value).map(encode))
    def test_from_json_known_keys_any_values_manifest_or_our_error(self,
                                                                   raw):
        self.check_metadata(raw)
        self.check_sha256file(raw)

    @_settings(max_examples=60)
    @given(metadata_docs())
    def test_metadata_from_json_valid_document_parses(self, doc):
        parsed = self.check_metadata(encode(doc))
        self.assertIsNotNone(parsed)
        self.assertEqual(len(doc['objects']), len(parsed.objects))

    @_settings(max_examples=60)
    @given(sha256file_docs())
    def test_sha256file_from_json_valid_document_parses(self, doc):
        parsed = self.check_sha256file(encode(doc))
        self.assertIsNotNone(parsed)
        self.assertEqual(doc['sha256s'], parsed.sha256s)

    @_settings(max_examples=250)
    @given(damaged(mutated(metadata_docs(), METADATA_KEYS)))
    @example(Damaged(dict(VALID_METADATA, objects=[
        {'P-00001': dict(VALID_OBJECT, md5=MD5 + '\n')}])))
    @example(Damaged(dict(VALID_METADATA,
                          version=raw_token(LONE_SURROGATE))))
    @example(Damaged(dict(VALID_METADATA, objects=raw_token(DEEP_LIST))))
    def test_metadata_from_json_damaged_manifest_or_our_error(self, case):
        self.check_metadata(case.raw())

    @_settings(max_examples=200)
    @given(damaged(mutated(sha256file_docs(), SHA256FILE_KEYS)))
    @example(Damaged(dict(VALID_SHA256FILE, sha256s=[SHA + '\n'])))
    @example(Damaged(dict(VALID_SHA256FILE,
                          version=raw_token(LONE_SURROGATE))))
    @example(Damaged(dict(VALID_SHA256FILE, sha256s=raw_token(DEEP_LIST))))
    def test_sha256file_from_json_damaged_manifest_or_our_error(self, case):
        self.check_sha256file(case.raw())


class ChangedRunsTestCase(testtools.TestCase):
    """Runs found piece by piece are the runs of the whole chunk."""

    @_settings(300)
    @given(blocks=st.integers(1, 40), parent_blocks=st.integers(0, 40),
           changed=st.sets(st.integers(0, 39)),
           cuts=st.sets(st.integers(1, 39)),
           tail=st.integers(0, 3), first_block=st.integers(0, 5))
    def test_runs_by_piece_same_as_whole_chunk(self, blocks, parent_blocks,
                                               changed, cuts, tail,
                                               first_block):
        block = 4
        parent = ['p%d' % i for i in range(first_block + parent_blocks)]
        hashes = [('x%d' if i in changed else 'p%d') % (first_block + i)
                  for i in range(blocks)]
        base = first_block * block
        # The chunk's last block may be short.
        length = blocks * block - (tail if blocks else 0)
        whole = pipeline.changed_extents(hashes, parent, first_block, base,
                                         block, length)
        runs = pipeline.ChangedRuns(parent, block)
        found = []
        bounds = [0] + sorted(c for c in cuts if c < blocks) + [blocks]
        for a, b in zip(bounds, bounds[1:]):
            piece_offset = base + a * block
            piece_length = min(b * block, length) - a * block
            found.extend(runs.feed(piece_offset, hashes[a:b], piece_length))
        found.extend(runs.finish())
        self.assertEqual(whole, found)

    @_settings(300)
    @given(blocks=st.integers(1, 40), changed=st.sets(st.integers(0, 39)),
           cuts=st.sets(st.integers(1, 39)), cap=st.integers(1, 6),
           tail=st.integers(0, 3))
    def test_runs_capped_whole_runs_cut_at_cap(self, blocks, changed, cuts,
                                               cap, tail):
        block = 4
        parent = ['p%d' % i for i in range(40)]
        hashes = [('x%d' if i in changed else 'p%d') % i
                  for i in range(blocks)]
        length = blocks * block - (tail if blocks else 0)
        limit = cap * block
        whole = pipeline.changed_extents(hashes, parent, 0, 0, block, length)
        expected = [(start + cut, min(limit, size - cut))
                    for start, size in whole
                    for cut in range(0, size, limit)]
        runs = pipeline.ChangedRuns(parent, block, max_length=limit)
        found = []
        bounds = [0] + sorted(c for c in cuts if c < blocks) + [blocks]
        for a, b in zip(bounds, bounds[1:]):
            piece_length = min(b * block, length) - a * block
            found.extend(runs.feed(a * block, hashes[a:b], piece_length))
        found.extend(runs.finish())
        self.assertEqual(expected, found)
