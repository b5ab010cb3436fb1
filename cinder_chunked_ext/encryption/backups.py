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

"""What a driver does to encrypt its backups: one data key per backup.

:class:`BackupEncryption` belongs to one driver instance (Cinder makes
one per operation):

* ``creating(backup)``: around a backup.  When encryption is on, a new
  data key is made and handed to the key source before anything is
  written; if the backup fails or is cancelled, the key is deleted again.
* ``bind(backup, prefix)``: the backup's object prefix is known; its
  objects are sealed with its key from now on (or pass in plaintext).
* ``seal_document`` / ``open_document``: the envelopes of the two JSON
  documents.  Opening a backup's ``_metadata`` holds its key for its
  data objects, so a chain of backups, encrypted or not, is read layer
  by layer with each layer's own key: chains that mix plain and
  encrypted backups restore, and change detection compares the
  decrypted block hashes.
* ``forget_backup(backup, raw_metadata)``: crypto-erase on delete.

Key manager calls run on the calling (green) thread, never on a worker.
Keys live in this object and its keyring, never in a log line.
"""

import contextlib
import json

from oslo_log import log as logging

from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

NONE = 'none'
AES_256_GCM = 'aes-256-gcm'
CHOICES = (NONE, AES_256_GCM)


def _inline(func, *args, **kwargs):
    return func(*args, **kwargs)


class KeySources(object):
    """The key sources a driver may use, by the name references carry."""

    def __init__(self, new_keys=None, others=()):
        #: Where new backups' keys go (None: encryption cannot be on).
        self.new_keys = new_keys
        self._by_name = {}
        for source in ([new_keys] if new_keys else []) + list(others):
            self._by_name.setdefault(source.name, source)

    def for_reference(self, ref, backup_id):
        name = ref.get('manager') if isinstance(ref, dict) else None
        source = self._by_name.get(name)
        if source is None:
            hint = ('give the standalone tool the password file it was '
                    'made with (--password-file)' if name == 'password'
                    else 'configure [key_manager]')
            raise exception.BackupKeyUnavailable(
                backup_id=backup_id,
                reason='it was encrypted with a key from %r, which this '
                       'service does not have: %s' % (name, hint))
        return source


class BackupEncryption(object):
    """The encryption of one driver's backups (see the module's doc)."""

    def __init__(self, cipher, sources, keyring):
        if cipher not in CHOICES:
            raise exception.EncryptionError(
                reason='unknown encryption %r (choose one of %s)'
                       % (cipher, ', '.join(CHOICES)))
        self.cipher = cipher
        self.sources = sources
        self.keyring = keyring
        self._known = {}        # canonical reference -> data key
        self._new = {}          # backup id -> (data key, reference)

    @property
    def enabled(self):
        return self.cipher != NONE

    # -- keys ---------------------------------------------------------------

    def _key_for(self, ref, backup_id):
        canonical = json.dumps(ref, sort_keys=True)
        key = self._known.get(canonical)
        if key is None:
            key = self.sources.for_reference(ref, backup_id).get_key(
                ref, backup_id)
            self._known[canonical] = key
        return key

    @contextlib.contextmanager
    def creating(self, backup):
        """Around one backup: make its key; delete it unless kept.

        Yields a callable: ``discard()`` when the backup was cancelled.
        """
        backup_id = backup['id']
        if not self.enabled:
            yield lambda: None
            return
        if self.sources.new_keys is None:
            raise exception.EncryptionError(
                reason='encryption is %s but no key source is configured'
                       % self.cipher)
        source = self.sources.new_keys
        if hasattr(source, 'new_unwrapped_key'):
            # Wrapped when the first document is sealed (see there).
            data_key, ref = source.new_unwrapped_key(), None
        else:
            data_key, ref = source.new_key(backup_id)
        self._new[backup_id] = (data_key, ref)
        discarded = []
        try:
            yield lambda: discarded.append(True)
        except BaseException:
            self._drop_new_key(backup, source, self._new[backup_id][1])
            raise
        finally:
            _key, ref = self._new.pop(backup_id)
        if discarded:
            self._drop_new_key(backup, source, ref)

    def _drop_new_key(self, backup, source, ref):
        prefix = backup['service_metadata']
        if prefix:
            self.keyring.release(prefix)
        if ref is None:
            return      # never wrapped, never stored anywhere
        try:
            source.delete_key(ref, backup['id'])
        except exception.BackupKeyUnavailable as e:
            LOG.warning('The key of unfinished backup %(id)s could not be '
                        'deleted (%(error)s); delete secret %(ref)s from '
                        'the key manager.', {'id': backup['id'], 'error': e,
                                             'ref': ref.get('id', '-')})

    def bind(self, backup, prefix):
        """Seal the objects named ``prefix``* with ``backup``'s key, if any."""
        created = self._new.get(backup['id'])
        self.keyring.hold(prefix, created[0] if created else None)

    # -- documents ------------------------------------------------------------

    def seal_document(self, backup, name, pieces, is_sha256file=False):
        """The pieces to store as ``name``: an envelope when encrypted.

        The key is wrapped (if it is not yet) now, on the calling green
        thread; the envelope's pieces are made as they are iterated,
        where the document is written (on a worker thread).
        """
        created = self._new.get(backup['id'])
        if created is None:
            return pieces
        data_key, ref = created
        if ref is None:
            # A key wrapped only now: an incremental has opened its
            # parent's by now, and a password source reuses that scrypt.
            ref = self.sources.new_keys.wrap(data_key)
            self._new[backup['id']] = (data_key, ref)
        return documents.sealing(
            data_key, name, backup['id'], ref, pieces,
            documents.SHA256FILE_FIELDS if is_sha256file else None)

    def open_document(self, backup, name, raw, holds_objects,
                      execute=_inline):
        """The plaintext of the document ``raw`` stored as ``name``.

        ``holds_objects``: the document is the backup's ``_metadata``;
        its data objects are then read with its key (or in plaintext).
        ``execute(func, *args, **kwargs)`` runs the parsing and the
        decryption (megabytes for a large volume's sha256file) on a
        worker thread; the key manager is asked on the calling thread.
        """
        prefix = backup['service_metadata']
        envelope = (execute(documents.parse_envelope, raw)
                    if documents.may_be_sealed(raw) else None)
        if envelope is None:
            if holds_objects and prefix:
                self.keyring.hold(prefix, None)
            return raw
        if 'key' not in envelope:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='the encrypted document %s names no key' % name)
        data_key = self._key_for(envelope['key'], backup['id'])
        plain = execute(documents.open_sealed, raw, name, backup['id'],
                        lambda _ref: data_key, envelope=envelope)
        if holds_objects and prefix:
            self.keyring.hold(prefix, data_key)
        return plain

    # -- delete ---------------------------------------------------------------

    def forget_backup(self, backup, raw_metadata):
        """Delete the key the backup's ``_metadata`` names (crypto-erase).

        Returns True when a key was deleted.  A plain backup, or one whose
        key is already gone, needs nothing.
        """
        ref = documents.key_reference(raw_metadata) if raw_metadata else None
        if ref is None:
            return False
        owner = documents.backup_id_of(raw_metadata)
        if owner != backup['id']:
            # Never erase another backup's key (a record whose prefix
            # names another backup's objects).
            raise exception.UnsafePrefix(
                backup_id=backup['id'], prefix=backup['service_metadata'],
                reason='its metadata belongs to backup %s' % owner)
        source = self.sources.for_reference(ref, backup['id'])
        deleted = source.delete_key(ref, backup['id'])
        if deleted:
            LOG.info('Deleted the encryption key of backup %(id)s '
                     '(%(ref)s).', {'id': backup['id'],
                                    'ref': ref.get('id', ref['manager'])})
        return deleted
