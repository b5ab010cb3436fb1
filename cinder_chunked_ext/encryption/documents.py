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

"""The envelope of an encrypted backup's JSON documents.

An encrypted backup's ``<prefix>_metadata`` and ``<prefix>_sha256file``
are JSON objects that say how to find the key and hold the real document
encrypted::

    {"version": "cinder-chunked-ext/aes-256-gcm/1",
     "backup_id": "...", "cipher": "aes-256-gcm",
     "key": {"manager": "castellan", "id": "..."},
     "salt": "<base64>", "sealed": "<base64 of ciphertext and tag>"}

``version`` is one that upstream Cinder's ``DRIVER_VERSION_MAPPING``
does not know, so upstream's restore refuses the backup ("No support to
restore backup version") instead of writing ciphertext to a volume; its
incremental backups read an empty ``sha256s`` and a ``chunk_size`` of 0
in the sha256file's envelope and refuse ("Do a full backup").

The document is encrypted with AES-256-GCM under a key derived (HKDF)
from the backup's data key and the envelope's random salt; the
associated data is everything else in the envelope and the document's
object name, so an envelope moved to another backup, or a key reference
changed, fails authentication.  Block hashes and MD5s are therefore
never stored in plaintext: equal and zero blocks cannot be told apart
from the repository.
"""

import base64
import binascii
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf

from cinder_chunked_ext import exception

VERSION = 'cinder-chunked-ext/aes-256-gcm/1'
CIPHER = 'aes-256-gcm'
SALT_BYTES = 32
_NONCE = bytes(12)      # each document has a key of its own
_KEY_INFO = b'cinder-chunked-ext document key v1'
_B64_STEP = 3 * 1024 * 1024


def _document_key(data_key, salt):
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                     info=_KEY_INFO).derive(data_key)


def _aad(name, header):
    return json.dumps({'name': name, 'envelope': header},
                      sort_keys=True, separators=(',', ':')).encode('utf-8')


def key_reference(raw):
    """The ``key`` of an envelope, or None (plain JSON, or no key named)."""
    header = _header(raw)
    return None if header is None else header.get('key')


def may_be_sealed(raw):
    """False when ``raw`` is certainly not an envelope (one scan, no parse)."""
    return VERSION.encode('ascii') in raw


def parse_envelope(raw):
    """The envelope ``raw`` as a dict, or None when it is plain JSON.

    A large volume's sha256file envelope is megabytes of JSON: parse it
    once, on a worker thread, and give it to :func:`open_sealed`.
    """
    if not may_be_sealed(raw):
        return None
    try:
        envelope = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or envelope.get('version') != VERSION:
        return None
    return envelope


def _header(raw):
    envelope = parse_envelope(raw)
    if envelope is None:
        return None
    envelope.pop('sealed', None)
    return envelope


def is_sealed(raw):
    return parse_envelope(raw) is not None


# What a sha256file envelope also says, for upstream Cinder only: asked
# for an incremental backup on top of it, upstream reads ``sha256s`` and
# then refuses "Hash block size has changed since the last backup ...
# Do a full backup." instead of failing on a missing key.
SHA256FILE_FIELDS = {'chunk_size': 0, 'sha256s': []}


def seal(data_key, name, backup_id, key_ref, pieces, plain_fields=None):
    """The envelope of ``pieces`` (bytes) as a list of bytes pieces.

    ``plain_fields`` are stored (and authenticated) in clear beside the
    sealed document, for readers that do not know envelopes.
    """
    return list(sealing(data_key, name, backup_id, key_ref, pieces,
                        plain_fields))


def sealing(data_key, name, backup_id, key_ref, pieces, plain_fields=None):
    """As :func:`seal`, lazily: the work is done as the result is iterated.

    A writer on a worker thread iterates it, so that a large document is
    encoded and encrypted there, not on the green thread that asked.
    """
    salt = os.urandom(SALT_BYTES)
    header = {'version': VERSION, 'backup_id': backup_id, 'cipher': CIPHER,
              'key': key_ref,
              'salt': base64.b64encode(salt).decode('ascii')}
    header.update(plain_fields or {})
    return _sealed_pieces(_document_key(data_key, salt), name, header,
                          pieces)


def _sealed_pieces(document_key, name, header, pieces):
    encryptor = Cipher(algorithms.AES(document_key),
                       modes.GCM(_NONCE)).encryptor()
    encryptor.authenticate_additional_data(_aad(name, header))
    # "version" first (dicts keep their order), for people who look.
    yield (json.dumps(header)[:-1] + ', "sealed": "').encode('utf-8')
    if isinstance(pieces, (bytes, bytearray, str)):
        pieces = [pieces]
    carry = b''
    for piece in pieces:
        if isinstance(piece, str):
            piece = piece.encode('utf-8')
        carry += encryptor.update(piece)
        usable = len(carry) - len(carry) % 3
        if usable >= _B64_STEP:
            yield binascii.b2a_base64(carry[:usable], newline=False)
            carry = carry[usable:]
    carry += encryptor.finalize() + encryptor.tag
    yield binascii.b2a_base64(carry, newline=False) + b'"}'


def open_sealed(raw, name, backup_id, key_for, envelope=None):
    """The plaintext document inside the envelope ``raw``.

    ``key_for(key_ref)`` returns the data key (and raises
    BackupKeyUnavailable when it cannot).  ``envelope``: ``raw`` as
    :func:`parse_envelope` returned it, when the caller has it already.
    Raises CorruptBackup when the envelope is damaged, tampered with,
    moved or opened with a wrong key.
    """
    envelope = parse_envelope(raw) if envelope is None else dict(envelope)
    if envelope is None:
        raise exception.CorruptBackup(backup_id=backup_id,
                                      reason='%s is not an encrypted '
                                             'document' % name)
    sealed_b64 = envelope.pop('sealed', None)
    try:
        if envelope.get('cipher') != CIPHER:
            raise ValueError('unknown cipher %r' % envelope.get('cipher'))
        salt = base64.b64decode(envelope['salt'], validate=True)
        sealed = base64.b64decode(sealed_b64, validate=True)
        key_ref = envelope['key']
    except (KeyError, TypeError, ValueError) as e:
        raise exception.CorruptBackup(
            backup_id=backup_id,
            reason='the encrypted document %s is damaged (%s)' % (name, e))
    data_key = key_for(key_ref)
    try:
        return aead.AESGCM(_document_key(data_key, salt)).decrypt(
            _NONCE, sealed, _aad(name, envelope))
    except InvalidTag:
        raise exception.CorruptBackup(
            backup_id=backup_id,
            reason='the encrypted document %s failed authentication: it '
                   'was modified or moved, or the key is not the one it '
                   'was sealed with' % name)


def reseal(raw, name, data_key, new_key_ref):
    """The envelope ``raw`` again, its key reference now ``new_key_ref``.

    For a change of password: the document and the data key stay, the
    envelope is sealed again (the key reference is authenticated).
    """
    envelope = parse_envelope(raw)
    backup_id = envelope.get('backup_id', '?') if envelope else '?'
    plain = open_sealed(raw, name, backup_id, lambda _ref: data_key)
    plain_fields = {key: value for key, value in envelope.items()
                    if key not in _ENVELOPE_FIELDS}
    return seal(data_key, name, backup_id, new_key_ref, [plain],
                plain_fields)


def backup_id_of(raw):
    envelope = parse_envelope(raw)
    return envelope.get('backup_id', '?') if envelope else None


_ENVELOPE_FIELDS = ('version', 'backup_id', 'cipher', 'key', 'salt',
                    'sealed')
