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

"""A chunked driver whose objects live in an :class:`ObjectStore`.

Concrete drivers are the engine plus a store plus their options: this
class maps the engine's upstream-shaped storage methods onto the store.
"""

import contextlib

from oslo_log import log as logging

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.engine import prefixes
from cinder_chunked_ext.engine import settings
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import read_spool
from cinder_chunked_ext.store import sealed

LOG = logging.getLogger(__name__)


class StoreBackedDriver(chunked.ChunkedBackupDriver):
    """Implements the engine's storage methods with ``self.store``."""

    def __init__(self, context, store, chunk_size_bytes,
                 sha_block_size_bytes, backup_default_container,
                 enable_progress_timer):
        super().__init__(context, chunk_size_bytes, sha_block_size_bytes,
                         backup_default_container, enable_progress_timer)
        self.store = store

    @property
    def max_concurrent_writes(self):
        return self.store.max_concurrent_writes

    @property
    def max_concurrent_small_writes(self):
        return self.store.max_concurrent_small_writes

    @property
    def streams_writes(self):
        return self.store.streams_writes

    def put_container(self, container):
        self.store.put_container(container,
                                 create=self.backup_create_containers)

    def get_container_entries(self, container, prefix):
        return self.store.list_objects(container, prefix)

    @property
    def sealed_store(self):
        """The store, sealing the objects of encrypted backups.

        One per driver (so one per operation, made on first use): each
        draws its salts' random part once (a system call, and a round
        trip of the GIL on a worker thread), not once per object.  While
        a restore holds a read spool, it reads through it.
        """
        spool = self.__dict__.get('_read_spool')
        inner = self.store if spool is None else spool.wrap(self.store)
        current = self.__dict__.get('_sealed_store')
        if (current is None or current.inner is not inner or
                current.keyring is not self.keyring):
            current = sealed.SealedStore(inner, self.keyring)
            self.__dict__['_sealed_store'] = current
        return current

    @contextlib.contextmanager
    def restore_spool(self):
        """The read spool of one restore, when restore_spool_dir is set.

        See :mod:`cinder_chunked_ext.store.read_spool`.  A directory that
        cannot be used is a warning, and the restore goes on without.
        """
        parent = self.settings.restore_spool_dir
        if not parent:
            yield None
            return
        try:
            read_spool.check_directory(parent)
            spool = read_spool.ReadSpool(
                parent, self.settings.restore_spool_max_mib * read_spool.MiB)
        except (OSError, ValueError) as e:
            LOG.warning('restore_spool_dir cannot be used (%s): this '
                        'restore reads every object it checks twice.', e)
            yield None
            return
        if spool.stale_removed:
            LOG.info('Removed %(count)d restore spool(s) left in %(dir)s '
                     'by processes that no longer run: %(names)s.',
                     {'count': len(spool.stale_removed), 'dir': parent,
                      'names': ', '.join(spool.stale_removed)})
        self.__dict__['_read_spool'] = spool
        try:
            yield spool
        finally:
            self.__dict__.pop('_read_spool', None)
            spool.close()
            summary = spool.summary()
            if summary:
                LOG.info('Restore spool: %s.', summary)
            if spool.write_errors:
                LOG.warning('Restore spool: %(count)d object(s) could not '
                            'be kept in %(dir)s (first error: %(error)s); '
                            'they were fetched again.',
                            {'count': spool.write_errors,
                             'dir': spool.directory,
                             'error': spool.first_error})

    def check_restore_spool(self):
        """Refuse a restore_spool_dir that is set and cannot be used."""
        # From the configuration, not self.settings: Swift's setup check
        # also runs on a driver made without the engine's __init__.
        parent = settings.CONF[settings.PIPELINE_GROUP].restore_spool_dir
        if not parent:
            return
        try:
            read_spool.check_directory(parent)
        except ValueError as e:
            raise exception.InvalidConfigurationValue(
                option='restore_spool_dir', value='%s (%s)' % (parent, e))

    def get_object_writer(self, container, object_name, extra_metadata=None):
        return self.sealed_store.open_writer(container, object_name,
                                             extra_metadata=extra_metadata)

    def durability_barrier(self):
        return self.store.durability_barrier()

    def get_object_reader(self, container, object_name, extra_metadata=None):
        return self.sealed_store.open_reader(container, object_name,
                                             extra_metadata=extra_metadata)

    def get_data_object_writer(self, container, object_name, offset, length,
                               extra_metadata=None, barrier=None):
        return self.sealed_store.open_writer(
            container, object_name, extra_metadata=extra_metadata,
            placement=sealed.Placement(offset, length), barrier=barrier)

    def get_data_object_reader(self, container, object_name, offset, length,
                               extra_metadata=None):
        return self.sealed_store.open_reader(
            container, object_name, extra_metadata=extra_metadata,
            placement=sealed.Placement(offset, length))

    def delete_object(self, container, object_name):
        self.store.delete_object(container, object_name)

    def check_for_setup_error(self):
        self.check_restore_spool()
        self.store.check()

    def delete_backup(self, backup):
        """Delete the backup's encryption key (if any), then its objects.

        The key goes first: once it is gone the objects are unreadable
        (crypto-erase), even if deleting them fails half way.  A backup
        whose metadata is already gone has no key to find.
        """
        self._erase_key(backup)
        super().delete_backup(backup)

    def _erase_key(self, backup):
        container = backup['container']
        prefix = backup['service_metadata']
        if container is None or prefix is None:
            return
        # A prefix that is not the backup's own names another backup's
        # metadata, and so its key: refused, as the delete refuses it.
        self._refuse_foreign(backup, prefixes.check, backup['id'], prefix)
        try:
            raw = self._read_object_fully(container,
                                          self._metadata_filename(backup))
        except (exception.ObjectNotFound, exception.UnsafePath):
            # Nothing there, or nothing the store may touch: no key to
            # find (the delete below treats the objects the same way).
            return
        except exception.StoreError as e:
            if self.encryption.enabled:
                # Deleting the objects now could orphan the key.
                raise
            LOG.warning('Could not read the metadata of backup %(id)s to '
                        'find its encryption key (%(error)s); continuing '
                        'with the delete.', {'id': backup['id'], 'error': e})
            return
        self.encryption.forget_backup(backup, raw)
