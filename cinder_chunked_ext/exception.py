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

"""Errors an operator can act on.

Every class derives from the Cinder exception the backup manager already
handles, so a failure surfaces in ``cinder backup-show`` with a readable
reason.  Store errors are classified the way restic classifies them:
not found, permanent (retrying will not help) and transient (retrying
may help).
"""

from cinder_chunked_ext import cinder_compat

# Re-exported so callers need only this module.
BackupDriverException = cinder_compat.BackupDriverException
BackupRestoreCancel = cinder_compat.BackupRestoreCancel
BackupOperationError = cinder_compat.BackupOperationError
BackupMetadataUnsupportedVersion = (
    cinder_compat.BackupMetadataUnsupportedVersion)
InvalidBackup = cinder_compat.InvalidBackup
InvalidVolume = cinder_compat.InvalidVolume
InvalidConfigurationValue = cinder_compat.InvalidConfigurationValue
ConfigNotFound = cinder_compat.ConfigNotFound
BackupNotFound = cinder_compat.BackupNotFound


class StoreError(cinder_compat.BackupDriverException):
    """An object store operation failed."""

    message = 'Backup store error: %(reason)s'


class ObjectNotFound(StoreError):
    """The container or object does not exist."""

    message = 'Backup object not found: %(reason)s'


class PermanentStoreError(StoreError):
    """The store refused the operation; retrying will not help.

    Examples: access denied, a rejected checksum, a full disk.
    """

    message = 'Backup store refused the operation: %(reason)s'


class TransientStoreError(StoreError):
    """The store failed in a way that may succeed when retried.

    Examples: throttling, a 5xx answer, a timeout, a reset connection.
    """

    message = 'Backup store temporarily failed: %(reason)s'


class StoreConfigurationError(cinder_compat.InvalidConfigurationValue):
    """The store cannot work with the configuration it was given."""

    message = 'Backup store configuration error: %(reason)s'


class UnsafePath(cinder_compat.InvalidBackup):
    """A container or object name would escape the repository."""

    message = 'Invalid backup: unsafe path %(path)r: %(reason)s'


class UnsafePrefix(cinder_compat.InvalidBackup):
    """An object prefix that would name another backup's objects.

    Deleting a backup removes every object its prefix lists: an empty
    prefix, or one that is not the backup's own, would take other
    backups' objects with it.
    """

    message = ('Invalid backup: backup %(backup_id)s: object prefix '
               '%(prefix)r refused: %(reason)s')


class CorruptBackup(cinder_compat.InvalidBackup):
    """The repository holds something the format does not allow."""

    message = 'Invalid backup: backup %(backup_id)s is damaged: %(reason)s'


class ChecksumMismatch(CorruptBackup):
    """An object's data does not match the checksum in its metadata."""

    message = ('Invalid backup: backup %(backup_id)s object %(object_name)s '
               'failed its checksum: expected md5 %(expected)s, '
               'got %(actual)s')


class UnsupportedBackupVersion(cinder_compat.InvalidBackup):
    """The metadata names a format version this driver cannot restore."""

    message = ('Invalid backup: no support to restore backup version '
               '%(version)s (backup %(backup_id)s)')


class UnsupportedCompression(cinder_compat.InvalidBackup):
    """The metadata or configuration names an unknown compression."""

    message = 'Invalid backup: unsupported compression algorithm %(name)r'


class EncryptionError(cinder_compat.BackupDriverException):
    """Encryption cannot be done as configured."""

    message = 'Backup encryption error: %(reason)s'


class ObjectAuthenticationFailed(CorruptBackup):
    """A sealed object failed authentication: tampered or wrong key."""

    message = ('Invalid backup: encrypted object %(object_name)s was '
               'refused: %(reason)s')

    def __init__(self, message=None, **kwargs):
        kwargs.setdefault('backup_id', '?')
        super().__init__(message, **kwargs)


class BackupKeyUnavailable(cinder_compat.InvalidBackup):
    """The data key of an encrypted backup cannot be had.

    The key manager is unreachable or refuses, the key was deleted, or
    the password is wrong.  Nothing was read or written.
    """

    message = ('Invalid backup: the encryption key of backup %(backup_id)s '
               'is unavailable: %(reason)s')
