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

"""The two JSON documents of a backup, format 1.0.0.

``<prefix>_metadata`` lists the data objects; ``<prefix>_sha256file``
holds the SHA-256 of every hash block of the volume.  Both are written as
upstream writes them (``json.dumps(doc, sort_keys=True, indent=2)`` in
UTF-8) and parsed strictly: anything that does not have the shape of the
format raises :class:`~cinder_chunked_ext.exception.CorruptBackup`
naming the backup and the document, and never another exception.
"""

import dataclasses
import json
import re
import typing

from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception

FORMAT_VERSION = '1.0.0'
SUPPORTED_VERSIONS = (FORMAT_VERSION,)

# \Z, not $: a digest followed by a newline is not a digest.
_MD5_RE = re.compile(r'^[0-9a-f]{32}\Z')
_SHA256_RE = re.compile(r'^[0-9a-f]{64}\Z')


def metadata_name(prefix):
    return '%s_metadata' % prefix


def sha256file_name(prefix):
    return '%s_sha256file' % prefix


def object_name(prefix, number):
    return '%s-%05d' % (prefix, number)


def object_number(prefix, name):
    """The number of data object ``name`` of ``prefix``, or None."""
    head = prefix + '-'
    if not name.startswith(head):
        return None
    tail = name[len(head):]
    if len(tail) < 5 or not tail.isdigit() or not tail.isascii():
        return None
    return int(tail)


def _dump(doc):
    return json.dumps(doc, sort_keys=True, indent=2).encode('utf-8')


def _load(raw, backup_id, what):
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode('utf-8')
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise exception.CorruptBackup(
            backup_id=backup_id,
            reason='%s is not valid JSON (%s)' % (what, e))
    if '\\ud' in text or '\\uD' in text:
        # A "\ud800" escape decodes to a lone surrogate, which no error
        # message or log line quoting it could encode.
        try:
            json.dumps(doc, ensure_ascii=False).encode('utf-8')
        except UnicodeEncodeError:
            raise exception.CorruptBackup(
                backup_id=backup_id,
                reason='%s holds text that is not valid Unicode' % what)
    if not isinstance(doc, dict):
        raise exception.CorruptBackup(
            backup_id=backup_id, reason='%s is not a JSON object' % what)
    return doc


class _Checker(object):
    """Field checks that name the document and the field on failure."""

    def __init__(self, doc, backup_id, what):
        self.doc = doc
        self.backup_id = backup_id
        self.what = what

    def fail(self, reason):
        raise exception.CorruptBackup(
            backup_id=self.backup_id, reason='%s: %s' % (self.what, reason))

    def field(self, key, types, optional=False, default=None):
        if key not in self.doc:
            if optional:
                return default
            self.fail('missing field %r' % key)
        value = self.doc[key]
        if not _is(value, types):
            self.fail('field %r has the wrong type' % key)
        return value


def _is(value, types):
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


@dataclasses.dataclass(frozen=True)
class ObjectRecord:
    """One data object: where its data goes and how it is stored."""

    name: str
    offset: int
    length: int
    compression: str
    md5: str

    @property
    def end(self):
        return self.offset + self.length

    def to_json_entry(self):
        return {self.name: {'offset': self.offset, 'length': self.length,
                            'compression': self.compression,
                            'md5': self.md5}}


@dataclasses.dataclass
class BackupMetadata:
    """The ``_metadata`` document."""

    backup_id: str
    volume_id: str
    backup_name: typing.Optional[str]
    backup_description: typing.Optional[str]
    created_at: str
    parent_id: typing.Optional[str]
    objects: typing.List[ObjectRecord] = dataclasses.field(
        default_factory=list)
    volume_meta: typing.Optional[str] = None
    extra_metadata: typing.Any = None
    version: str = FORMAT_VERSION

    def to_json(self):
        doc = {
            'version': self.version,
            'backup_id': self.backup_id,
            'volume_id': self.volume_id,
            'backup_name': self.backup_name,
            'backup_description': self.backup_description,
            'created_at': self.created_at,
            'objects': [o.to_json_entry() for o in self.objects],
            'parent_id': self.parent_id,
            'volume_meta': self.volume_meta,
        }
        if self.extra_metadata:
            doc['extra_metadata'] = self.extra_metadata
        return _dump(doc)

    @classmethod
    def from_json(cls, raw, backup_id='?'):
        """Parse a ``_metadata`` document; ``backup_id`` names errors."""
        chk, common = _load_common(raw, backup_id, 'metadata')
        raw_objects = chk.field('objects', (list,))
        objects = [_parse_object(chk, entry) for entry in raw_objects]
        str_or_none = (str, type(None))
        return cls(
            parent_id=chk.field('parent_id', str_or_none, True),
            volume_meta=chk.field('volume_meta', str_or_none, True),
            extra_metadata=chk.doc.get('extra_metadata'),
            objects=objects,
            **common)


def _load_common(raw, backup_id, what):
    """Parse ``raw`` and the fields both documents share.

    Returns the field checker and a dict of the common fields; an
    unknown version is refused before anything else is looked at.
    """
    doc = _load(raw, backup_id, what)
    chk = _Checker(doc, backup_id, what)
    version = chk.field('version', (str,))
    if version not in SUPPORTED_VERSIONS:
        raise exception.UnsupportedBackupVersion(
            version=version, backup_id=backup_id)
    str_or_none = (str, type(None))
    return chk, {
        'version': version,
        'backup_id': chk.field('backup_id', (str,)),
        'volume_id': chk.field('volume_id', (str,)),
        'backup_name': chk.field('backup_name', str_or_none, True),
        'backup_description': chk.field('backup_description',
                                        str_or_none, True),
        'created_at': chk.field('created_at', (str,), True, ''),
    }


def _parse_object(chk, entry):
    if not isinstance(entry, dict) or len(entry) != 1:
        chk.fail('an object entry is not a one-key object')
    name, body = next(iter(entry.items()))
    if not isinstance(body, dict):
        chk.fail('object %r has no fields' % name)
    ochk = _Checker(body, chk.backup_id, 'metadata of object %r' % name)
    offset = ochk.field('offset', (int,))
    length = ochk.field('length', (int,))
    algo = ochk.field('compression', (str,))
    md5 = ochk.field('md5', (str,))
    if offset < 0:
        ochk.fail('negative offset %d' % offset)
    if length <= 0:
        ochk.fail('length %d is not positive' % length)
    try:
        compression.family(algo)
    except exception.UnsupportedCompression:
        ochk.fail('unsupported compression %r' % algo)
    if not _MD5_RE.match(md5):
        ochk.fail('md5 %r is not an MD5 hex digest' % md5)
    return ObjectRecord(name=name, offset=offset, length=length,
                        compression=algo, md5=md5)


@dataclasses.dataclass
class Sha256File:
    """The ``_sha256file`` document."""

    backup_id: str
    volume_id: str
    backup_name: typing.Optional[str]
    backup_description: typing.Optional[str]
    created_at: str
    chunk_size: int
    sha256s: typing.List[str] = dataclasses.field(default_factory=list)
    version: str = FORMAT_VERSION

    def _doc(self, sha256s):
        return {
            'version': self.version,
            'backup_id': self.backup_id,
            'volume_id': self.volume_id,
            'backup_name': self.backup_name,
            'backup_description': self.backup_description,
            'created_at': self.created_at,
            'chunk_size': self.chunk_size,
            'sha256s': sha256s,
        }

    def to_json(self):
        return b''.join(self.to_json_pieces())

    def to_json_pieces(self):
        """The document's bytes, as ``to_json``, in pieces of bounded size.

        The bytes are those of ``json.dumps(doc, sort_keys=True,
        indent=2)``, but the list, which has an entry per hash block
        (half a million for 16 GiB), is encoded a slice at a time: the
        json module would hold a string per entry, the whole text and its
        UTF-8 copy at once, about 100 MB at that size.
        """
        if not self.sha256s:
            yield _dump(self._doc([]))
            return
        # The list goes where json.dumps put a one-entry stand-in.  The
        # key, a raw newline and the stand-in occur nowhere else: a JSON
        # string holds no raw newline.
        text = _dump(self._doc([_LIST_MARK]))
        mark = json.dumps(_LIST_MARK).encode('ascii')
        opening = b'"sha256s": [\n    '
        at = text.index(opening + mark) + len(opening)
        yield text[:at]
        tail = text[at + len(mark):]
        encoded = {}
        separator = b',\n' + b' ' * 4
        for first in range(0, len(self.sha256s), _ENTRIES_PER_PIECE):
            piece = []
            for sha in self.sha256s[first:first + _ENTRIES_PER_PIECE]:
                quoted = encoded.get(sha)
                if quoted is None:
                    quoted = json.dumps(sha).encode('utf-8')
                    if len(encoded) < _ENCODED_CACHE_SIZE:
                        encoded[sha] = quoted
                piece.append(quoted)
            yield (separator if first else b'') + separator.join(piece)
        yield tail

    @classmethod
    def from_json(cls, raw, backup_id='?', zero_block=None):
        """Parse a ``_sha256file`` document; ``backup_id`` names errors.

        ``zero_block`` is the hash block size the caller expects: the
        hash of such a block of zeros, which makes up most of a sparse
        volume's list, is then parsed into one shared string rather than
        one string per entry (60 MB for 16 GiB, plus the parser's own
        copies).
        """
        raw, zero = _mark_zero_hashes(raw, zero_block)
        chk, common = _load_common(raw, backup_id, 'sha256file')
        chunk_size = chk.field('chunk_size', (int,))
        if chunk_size <= 0:
            chk.fail('chunk_size %d is not positive' % chunk_size)
        sha256s = chk.field('sha256s', (list,))
        for index, sha in enumerate(sha256s):
            if sha is _ZERO_MARK_VALUE and zero is not None:
                sha256s[index] = zero
            elif not isinstance(sha, str) or not _SHA256_RE.match(sha):
                chk.fail('an entry of sha256s is not a SHA-256 hex digest')
        return cls(chunk_size=chunk_size, sha256s=sha256s, **common)


# Stands for the list of hashes while the rest of a sha256file is dumped.
_LIST_MARK = '\x00sha256s\x00'
# Hashes encoded per piece of a sha256file (about 5 MiB of JSON).
_ENTRIES_PER_PIECE = 65536
# Distinct hashes whose encoding is kept (a zero block's recurs).
_ENCODED_CACHE_SIZE = 4096

# What json parses the marker to: always this one object.
_ZERO_MARK = b'Infinity'
_ZERO_MARK_VALUE = json.loads(_ZERO_MARK)


# One JSON token: a string, a structural character or a bare literal.
_TOKEN_RE = re.compile(
    rb'\s*("[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]|[^\s{}\[\],:"]+)', re.S)
_SHA256S_KEY = b'"sha256s"'


def _sha256s_span(raw):
    """``(start, end)``: bytes of the top-level ``sha256s`` list, or None.

    The document is read token by token up to the list's ``[`` (a few
    tokens in a document as written: its keys are sorted), so that a
    ``"sha256s"`` inside a string or a nested object is not taken for
    it.  ``end`` is the first ``]`` after it: the list holds only
    strings, and if one of them holds a ``]`` the span is shorter than
    the list, never longer.  None when the document is not shaped so.
    """
    depth = 0
    pos = 0
    previous = key = None
    while True:
        match = _TOKEN_RE.match(raw, pos)
        if match is None:
            return None
        token = match.group(1)
        pos = match.end()
        if token in (b'{', b'['):
            if (token == b'[' and depth == 1 and key == _SHA256S_KEY and
                    previous == b':'):
                end = raw.find(b']', pos)
                return None if end < 0 else (pos, end)
            depth += 1
        elif token in (b'}', b']'):
            depth -= 1
            if depth <= 0:
                return None
        elif depth == 1 and previous in (b'{', b','):
            key = token     # an object key of the top level
        previous = token


def _mark_zero_hashes(raw, zero_block):
    """``(raw, zero)``: the zero block's hash replaced by a marker.

    Only inside the top-level ``sha256s`` list: a name, a description
    or any other field equal to that hash keeps its text.  And only when
    no marker follows the list's start already (json reads ``Infinity``
    as a number, which is no hash: such a document stays as it is and
    fails its checks as before).  ``zero`` is the hash to put back, or
    None when nothing was replaced.
    """
    if not zero_block or not isinstance(raw, bytes):
        return raw, None
    span = _sha256s_span(raw)
    if span is None:
        return raw, None
    start, end = span
    zero = pipeline.zero_sha256(zero_block)
    quoted = b'"' + zero.encode('ascii') + b'"'
    if raw.find(quoted, start, end) < 0 or raw.find(_ZERO_MARK, start) >= 0:
        return raw, None
    marked = raw.replace(quoted, _ZERO_MARK)
    head, tail = raw[:start], raw[end:]
    if quoted not in head and quoted not in tail:
        return marked, zero         # the usual case: no copy more
    # Put back the text before and after the list (both short).
    inner = memoryview(marked)[
        len(head.replace(quoted, _ZERO_MARK)):
        len(marked) - len(tail.replace(quoted, _ZERO_MARK))]
    return b''.join((head, inner, tail)), zero
