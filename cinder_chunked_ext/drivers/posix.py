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

"""Backups as files in a directory: a drop-in for Cinder's POSIX driver.

``cinder.conf``::

    [DEFAULT]
    backup_driver = cinder_chunked_ext.drivers.posix.PosixBackupDriver
    backup_posix_path = /var/lib/cinder/backup
"""

import os

from oslo_config import cfg
from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import base
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import posix as posix_store

LOG = logging.getLogger(__name__)

SHA_SIZE = 32768
# A multiple of SHA_SIZE, close to a common file system's largest file.
BACKUP_FILE_SIZE = 61035 * 32768

posixbackup_service_opts = [
    cfg.IntOpt('backup_file_size',
               default=BACKUP_FILE_SIZE,
               help='The largest size, in bytes, of the files that hold a '
                    'backup; a larger volume is split over several files. '
                    'Must be a multiple of backup_sha_block_size_bytes.'),
    cfg.IntOpt('backup_sha_block_size_bytes',
               default=SHA_SIZE,
               help='The size, in bytes, of the blocks whose changes '
                    'incremental backups track.'),
    cfg.BoolOpt('backup_enable_progress_timer',
                default=True,
                help='Send periodic progress notifications while a volume '
                     'is backed up.'),
    cfg.StrOpt('backup_posix_path',
               default='$state_path/backup',
               help='Path of the directory where backups are stored.'),
    cfg.StrOpt('backup_container',
               help='Directory, relative to backup_posix_path, to use for '
                    'backups instead of one per backup.'),
]

#: Our additions, in [chunked_backup].
posix_chunked_opts = [
    cfg.StrOpt('posix_sync',
               default=posix_store.SYNC_FILE_SYSTEM,
               choices=posix_store.SYNC_MODES,
               help='How a backup makes its objects durable before it '
                    'writes its metadata. syncfs: one syncfs(2) of the '
                    'repository\'s file system for each group of objects '
                    '(which also writes back whatever else is waiting on '
                    'that file system), used only on Linux 5.8 and later, '
                    'where syncfs reports write-back errors; elsewhere '
                    'each file is fsynced. fsync: an fsync of each object '
                    'file, as upstream Cinder does. Either way an object '
                    'is renamed to its name only once durable, and the '
                    'directories are fsynced after. The NFS driver always '
                    'fsyncs each file.'),
]

CONF = cfg.CONF
CONF.register_opts(cinder_compat.same_as_upstream(
    posixbackup_service_opts, 'cinder.backup.drivers.posix',
    'posixbackup_service_opts'))
CONF.register_opts(posix_chunked_opts, group=chunked.PIPELINE_GROUP)

_fallback_logged = []


def _sync_mode():
    """The [chunked_backup] posix_sync mode this process can honour."""
    mode = CONF[chunked.PIPELINE_GROUP].posix_sync
    if (mode == posix_store.SYNC_FILE_SYSTEM and
            not posix_store.file_durability.syncfs_supported()):
        if not _fallback_logged:
            _fallback_logged.append(True)
            LOG.info('posix_sync = syncfs needs syncfs(2) reporting '
                     'write-back errors (Linux %d.%d and later; this is '
                     '%s): each object file is fsynced instead.',
                     *posix_store.file_durability.SYNCFS_ERRORS_SINCE,
                     os.uname().release)
        return posix_store.SYNC_EACH_FILE
    return mode


class PosixBackupDriver(base.StoreBackedDriver):
    """Backup, restore and delete using a POSIX file system."""

    def __init__(self, context, backup_path=None):
        backup_path = backup_path or CONF.backup_posix_path
        if not backup_path:
            raise exception.ConfigNotFound(path='backup_path')
        self.backup_path = backup_path
        super().__init__(
            context,
            posix_store.PosixStore(backup_path, sync=self._store_sync()),
            CONF.backup_file_size,
            CONF.backup_sha_block_size_bytes,
            CONF.backup_container,
            CONF.backup_enable_progress_timer,
        )
        LOG.debug('Using backup repository: %s', self.backup_path)

    @staticmethod
    def get_driver_options():
        return posixbackup_service_opts

    @staticmethod
    def get_extra_options():
        """This package's own options, in [chunked_backup]."""
        return posix_chunked_opts

    @staticmethod
    def _store_sync():
        """How the store makes a backup's files durable."""
        return _sync_mode()

    def update_container_name(self, backup, container):
        if container is not None:
            return container
        backup_id = backup['id']
        return os.path.join(backup_id[0:2], backup_id[2:4], backup_id)

    def validate_container(self, container):
        if container is not None:
            self.store.container_path(container)

    def _generate_object_name_prefix(self, backup):
        prefix = 'volume_%s_%s_backup_%s' % (
            backup.volume_id, chunked.utcnow_stamp(), backup.id)
        LOG.debug('_generate_object_name_prefix: %s', prefix)
        return prefix

    def get_extra_metadata(self, backup, volume):
        return None
