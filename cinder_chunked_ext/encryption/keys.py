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

"""Where the data keys of encrypted backups come from.

Every encrypted backup has a data key of its own: 32 random bytes made on
this host.  A key source keeps it outside the repository and gives the
reference the backup's envelopes record:

* :class:`KeyManagerKeys`: castellan, the key manager library Cinder
  configures (``[key_manager] backend``; Barbican in production).  The
  key is stored as a secret; the reference is its ID.  Deleting the
  backup deletes the secret (crypto-erase).
* :class:`PasswordKeys`: the standalone tool's ``--password-file``.  The
  key is wrapped (AES-256-GCM) under a key derived from the password
  with scrypt; the salt, the scrypt parameters and the wrapped key are
  the reference.  Deleting the backup's envelopes erases it.

Errors are :class:`exception.BackupKeyUnavailable`, naming the backup and
never the key.  Nothing here logs key material.
"""

import base64
import hashlib
import logging
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import redaction

KEY_BYTES = 32
KEY_MANAGER = 'castellan'
PASSWORD = 'password'

# scrypt: 32 MiB and about a tenth of a second per derivation; a
# password-protected backup records its own parameters.
SCRYPT_N = 2 ** 15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAX_N = 2 ** 20
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16
_WRAP_AAD = b'cinder-chunked-ext data key v1'


# keystoneauth logs every request body at DEBUG, and storing a secret in
# Barbican sends it base64-encoded in the body's "payload".
_PAYLOAD = re.compile(r'''(["']payload["']\s*:\s*["'])[^"']*''')
KEY_MANAGER_LOGGERS = ('keystoneauth', 'barbicanclient', 'castellan')
# Made before the first request, so that the filter is on them when
# keystoneauth logs it (a logger's filter does not see its children's).
_REQUEST_LOGGERS = ('keystoneauth.session', 'keystoneauth.session.request',
                    'keystoneauth.session.body',
                    'keystoneauth.session.response')


class PayloadRedactor(logging.Filter):
    """Masks the ``payload`` of secrets in key manager clients' logs."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa - a broken record is not ours to fix
            return True
        if 'payload' in message:
            clean = _PAYLOAD.sub(r'\1' + redaction.MASK, message)
            if clean != message:
                record.msg = clean
                record.args = None
        return True


_REDACTOR = PayloadRedactor()


def protect_key_manager_logs():
    """Attach the payload redactor to the key manager clients' loggers.

    Called before and after each key manager call: the libraries make
    some of their loggers on first use.
    """
    for name in _REQUEST_LOGGERS:
        logging.getLogger(name)
    redaction.protect_loggers(_REDACTOR, KEY_MANAGER_LOGGERS)


def _b64(data):
    return base64.b64encode(data).decode('ascii')


def _unavailable(backup_id, reason):
    return exception.BackupKeyUnavailable(backup_id=backup_id,
                                          reason=reason)


def _key_manager_errors():
    """The exceptions a castellan call may raise when it cannot serve us."""
    from castellan.common import exception as castellan_exception
    errors = [castellan_exception.CastellanException, OSError]
    try:
        from keystoneauth1 import exceptions as ksa_exceptions
        errors.append(ksa_exceptions.ClientException)
    except ImportError:  # pragma: no cover - keystoneauth1 is required
        pass
    try:
        import requests
        errors.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - requests is required
        pass
    return tuple(errors)


class KeyManagerKeys(object):
    """Data keys kept as secrets of castellan's key manager."""

    name = KEY_MANAGER

    def __init__(self, conf, context):
        self._conf = conf
        self._context = context
        self._manager = None

    def _api(self, backup_id):
        if self._manager is None:
            try:
                from castellan import key_manager
            except ImportError:
                raise exception.EncryptionError(
                    reason='encryption needs the castellan library '
                           '(pip install cinder_chunked_ext[encryption])')
            try:
                self._manager = key_manager.API(self._conf)
            except (RuntimeError, ImportError, ValueError) as e:
                raise _unavailable(backup_id, 'the key manager cannot be '
                                   'loaded: %s' % e)
        return self._manager

    def new_key(self, backup_id):
        from castellan.common.objects import symmetric_key
        manager = self._api(backup_id)
        data_key = os.urandom(KEY_BYTES)
        secret = symmetric_key.SymmetricKey(
            'AES', KEY_BYTES * 8, data_key,
            name='cinder-chunked-backup %s' % backup_id)
        protect_key_manager_logs()
        try:
            key_id = manager.store(self._context, secret)
        except _key_manager_errors() as e:
            raise _unavailable(backup_id, 'the key manager did not store '
                               'a new key: %s' % e)
        finally:
            protect_key_manager_logs()
        return data_key, {'manager': self.name, 'id': key_id}

    def get_key(self, ref, backup_id):
        manager = self._api(backup_id)
        protect_key_manager_logs()
        try:
            secret = manager.get(self._context, ref['id'])
            data_key = secret.get_encoded()
        except _key_manager_errors() as e:
            raise _unavailable(backup_id, 'the key manager did not return '
                               'key %s: %s' % (ref['id'], e))
        finally:
            protect_key_manager_logs()
        if not isinstance(data_key, bytes) or len(data_key) != KEY_BYTES:
            raise _unavailable(backup_id, 'key %s is not a 256-bit key'
                               % ref['id'])
        return data_key

    def delete_key(self, ref, backup_id):
        """Delete the secret; one that is already gone is not an error."""
        from castellan.common import exception as castellan_exception
        manager = self._api(backup_id)
        try:
            manager.delete(self._context, ref['id'])
        except castellan_exception.ManagedObjectNotFoundError:
            return False
        except _key_manager_errors() as e:
            raise _unavailable(backup_id, 'the key manager did not delete '
                               'key %s: %s' % (ref['id'], e))
        return True


def derive_password_key(password, salt, n=SCRYPT_N, r=SCRYPT_R,
                        p=SCRYPT_P):
    """The 256-bit key scrypt derives from ``password`` and ``salt``."""
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p,
                          maxmem=256 * 1024 * 1024, dklen=KEY_BYTES)


class PasswordKeys(object):
    """Data keys wrapped under a key derived from a password (scrypt)."""

    name = PASSWORD

    def __init__(self, password):
        if not password:
            raise exception.EncryptionError(reason='the password is empty')
        self._password = password
        self._lock = locks.native_lock()
        self._derived = {}      # (salt, n, r, p) -> key
        self._salt = None

    def _wrapping_key(self, salt, n, r, p):
        with self._lock:
            known = self._derived.get((salt, n, r, p))
        if known is None:
            known = derive_password_key(self._password, salt, n, r, p)
            with self._lock:
                self._derived[(salt, n, r, p)] = known
        return known

    def new_key(self, backup_id):
        data_key = self.new_unwrapped_key()
        return data_key, self.wrap(data_key)

    @staticmethod
    def new_unwrapped_key():
        """A new data key, to :meth:`wrap` later.

        A backup wraps its key when it seals its first document: by then
        an incremental has opened its parent's key, and the wrap reuses
        that derivation (scrypt costs a tenth of a second or more each
        time, on purpose).
        """
        return os.urandom(KEY_BYTES)

    def _salt_to_wrap_with(self):
        """A salt whose key is already derived here, or a new one.

        One password and one salt give one wrapping key, and each wrap
        has a random nonce: backups may share a salt as restic's keys
        share one per repository.
        """
        defaults = (SCRYPT_N, SCRYPT_R, SCRYPT_P)
        with self._lock:
            if self._salt is None:
                known = [salt for salt, *params in self._derived
                         if tuple(params) == defaults]
                self._salt = known[0] if known else os.urandom(16)
            return self._salt

    def wrap(self, data_key):
        """The reference of ``data_key`` wrapped under this password."""
        salt = self._salt_to_wrap_with()
        wrapping = self._wrapping_key(salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        nonce = os.urandom(12)
        wrapped = aead.AESGCM(wrapping).encrypt(nonce, data_key, _WRAP_AAD)
        return {'manager': self.name, 'kdf': 'scrypt',
                'n': SCRYPT_N, 'r': SCRYPT_R, 'p': SCRYPT_P,
                'salt': _b64(salt), 'nonce': _b64(nonce),
                'wrapped': _b64(wrapped)}

    def get_key(self, ref, backup_id):
        try:
            n, r, p = int(ref['n']), int(ref['r']), int(ref['p'])
            salt = base64.b64decode(ref['salt'], validate=True)
            nonce = base64.b64decode(ref['nonce'], validate=True)
            wrapped = base64.b64decode(ref['wrapped'], validate=True)
            if ref.get('kdf') != 'scrypt':
                raise ValueError('unknown key derivation %r'
                                 % ref.get('kdf'))
        except (KeyError, TypeError, ValueError) as e:
            raise _unavailable(backup_id, 'its password key reference is '
                               'damaged (%s)' % e)
        if not (1 < n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and
                0 < r <= _SCRYPT_MAX_R and 0 < p <= _SCRYPT_MAX_P):
            raise _unavailable(backup_id, 'its scrypt parameters are out of '
                               'range (n=%d, r=%d, p=%d)' % (n, r, p))
        try:
            return aead.AESGCM(self._wrapping_key(salt, n, r, p)).decrypt(
                nonce, wrapped, _WRAP_AAD)
        except InvalidTag:
            raise _unavailable(backup_id, 'the password is wrong')

    def delete_key(self, ref, backup_id):
        """Nothing to do: the key lives only in the backup's envelopes."""
        return False
