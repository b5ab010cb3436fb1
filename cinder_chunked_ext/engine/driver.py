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

"""ChunkedBackupDriver: the class that concrete chunked drivers extend.

It keeps upstream's subclass interface (``put_container``,
``get_container_entries``, ``get_object_writer``, ``get_object_reader``,
``delete_object``, ``_generate_object_name_prefix``,
``update_container_name``, ``get_extra_metadata``; data objects go
through ``get_data_object_writer`` and ``get_data_object_reader``, which
also say where the object's data belongs in the volume and fall back on
the first two), reads the engine's options once into
:class:`EngineSettings`, reads and writes the two JSON documents of a
backup, and deletes backups.  The data paths live in
:mod:`cinder_chunked_ext.engine.backup` and
:mod:`cinder_chunked_ext.engine.restore`, each readable top to bottom;
both write and read repository format 1.0.0, upstream's.
"""

import abc
import contextlib
import datetime

from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.encryption import backups as encryption
from cinder_chunked_ext.encryption import keys as encryption_keys
from cinder_chunked_ext.engine import backup as backup_path
from cinder_chunked_ext.engine import budget
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import environment
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext.engine import prefixes
from cinder_chunked_ext.engine import restore as restore_path
from cinder_chunked_ext.engine import settings
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import sealed

LOG = logging.getLogger(__name__)

MiB = 1024 ** 2
# The unit of work of the pipelines: read, analysed and written at once.
PIECE_BYTES = 4 * MiB

# The options and the settings object live in their own module; their
# names stay importable from here, where drivers and tests find them.
backup_opts = settings.backup_opts
driver_opts = settings.driver_opts
common_opts = settings.common_opts
pipeline_opts = settings.pipeline_opts
PIPELINE_GROUP = settings.PIPELINE_GROUP
EngineSettings = settings.EngineSettings
CONF = settings.CONF


class ChunkedBackupDriver(cinder_compat.BackupDriver, metaclass=abc.ABCMeta):
    """Abstract chunked backup driver (repository format 1.0.0)."""

    DRIVER_VERSION = manifest.FORMAT_VERSION
    DRIVER_VERSION_MAPPING = {'1.0.0': '_restore_v1'}

    def __init__(self, context, chunk_size_bytes, sha_block_size_bytes,
                 backup_default_container, enable_progress_timer):
        if getattr(context, 'chunked_environment', None) is not None:
            # Standalone use: the environment replaces Cinder's database,
            # which Cinder's own constructor would connect to.
            self.context = context
        else:
            super().__init__(context)
        self.chunk_size_bytes = chunk_size_bytes
        self.sha_block_size_bytes = sha_block_size_bytes
        self.backup_default_container = backup_default_container
        self.enable_progress_timer = enable_progress_timer
        self.settings = EngineSettings.from_conf()
        self.backup_compression_algorithm = self.settings.compression
        self.backup_create_containers = self.settings.create_containers
        self.backup_timer_interval = self.settings.timer_interval
        self.data_block_num = self.settings.objects_per_notification
        self.az = self.settings.availability_zone
        # Fails early, as upstream does, on an unknown algorithm.
        compression.family(self.settings.compression)
        self.support_force_delete = True
        self._env_cache = None
        # The data keys of the backups this instance works on, by prefix.
        self.keyring = sealed.Keyring()
        self._encryption = None

    # -- the interface concrete drivers implement (as upstream) ----------

    @abc.abstractmethod
    def put_container(self, container):
        """Create the container if needed; no failure if it exists.

        Fails when ``backup_create_containers`` is False and the container
        is missing.
        """

    @abc.abstractmethod
    def get_container_entries(self, container, prefix):
        """Names of the objects in ``container`` starting with ``prefix``."""

    @abc.abstractmethod
    def get_object_writer(self, container, object_name, extra_metadata=None):
        """A context manager with ``write``; stores the object on exit."""

    def durability_barrier(self):
        """A barrier the objects of one backup are made durable by.

        None (the default): every object is durable once its writer has
        committed, as upstream's drivers assume.  See
        :class:`cinder_chunked_ext.store.base.DurabilityBarrier`.
        """
        return None

    @abc.abstractmethod
    def get_object_reader(self, container, object_name, extra_metadata=None):
        """A context manager with ``read``."""

    @abc.abstractmethod
    def delete_object(self, container, object_name):
        """Delete an object from a container."""

    @abc.abstractmethod
    def _generate_object_name_prefix(self, backup):
        """The prefix of every object name of ``backup``."""

    @abc.abstractmethod
    def update_container_name(self, backup, container):
        """A container name to use instead, or None to keep it."""

    @abc.abstractmethod
    def get_extra_metadata(self, backup, volume):
        """JSON-serialisable data passed to readers and writers."""

    def get_data_object_writer(self, container, object_name, offset, length,
                               extra_metadata=None, barrier=None):
        """A writer for a data object: ``length`` bytes at ``offset``.

        ``offset`` and ``length`` are what the object's metadata entry
        will record (its volume offset and its data before compression);
        a driver that encrypts binds them to the object.  ``barrier``:
        one from ``durability_barrier``, or None.  By default, as
        ``get_object_writer`` (and there is no barrier).
        """
        return self.get_object_writer(container, object_name,
                                      extra_metadata=extra_metadata)

    def get_data_object_reader(self, container, object_name, offset, length,
                               extra_metadata=None):
        """A reader of a data object, given its metadata entry's placement.

        By default, as ``get_object_reader``.
        """
        return self.get_object_reader(container, object_name,
                                      extra_metadata=extra_metadata)

    def validate_container(self, container):
        """Refuse a container name this driver cannot use safely."""
        return None

    #: Objects this driver's store may commit at the same time.
    max_concurrent_writes = 1
    #: Of them, objects of one piece or less (None: as many).
    max_concurrent_small_writes = None
    #: True when the writers of ``get_object_writer`` do not hold the
    #: object until their commit (see :func:`cuts.whole_object_bytes`).
    streams_writes = False

    # -- surroundings ------------------------------------------------------

    @property
    def env(self):
        if self._env_cache is None:
            self._env_cache = environment.for_driver(self)
        return self._env_cache

    @property
    def encryption(self):
        """The :class:`BackupEncryption` of this driver's backups."""
        if self._encryption is None:
            password_keys = getattr(self.context, 'password_keys', None)
            if password_keys is not None:
                # The standalone tool with a password: it encrypts.
                sources = encryption.KeySources(password_keys)
                cipher = encryption.AES_256_GCM
            else:
                sources = encryption.KeySources(
                    encryption_keys.KeyManagerKeys(CONF, self.context))
                cipher = self.settings.encryption
            self._encryption = encryption.BackupEncryption(
                cipher, sources, self.keyring)
        return self._encryption

    def get_metadata(self, volume_id):
        own = getattr(self.context, 'chunked_environment', None)
        if own is not None:
            return own.get_volume_metadata(volume_id)
        return super().get_metadata(volume_id)

    def put_metadata(self, volume_id, json_metadata):
        own = getattr(self.context, 'chunked_environment', None)
        if own is not None:
            return own.put_volume_metadata(volume_id, json_metadata)
        return super().put_metadata(volume_id, json_metadata)

    # -- the geometry the engine reads (public: the engine's modules use
    # these and ``settings``; the ``_``-named methods below are upstream's
    # subclass interface, kept under upstream's names) ----------------------

    def piece_bytes(self):
        """The unit of work of the pipelines: whole hash blocks, ~4 MiB."""
        block = self.sha_block_size_bytes
        return max(1, PIECE_BYTES // block) * block

    def full_object_bytes(self):
        """The size of a full backup's objects: whole hash blocks."""
        block = self.sha_block_size_bytes
        wanted = self.settings.full_backup_object_bytes
        if not wanted:
            return self.chunk_size_bytes
        return min(self.chunk_size_bytes, max(1, wanted // block) * block)

    # -- repository documents ----------------------------------------------

    def _metadata_filename(self, backup):
        return manifest.metadata_name(backup['service_metadata'])

    def _sha256_filename(self, backup):
        return manifest.sha256file_name(backup['service_metadata'])

    def _read_object_fully(self, container, name, extra_metadata=None):
        def read():
            with self.get_object_reader(container, name,
                                        extra_metadata=extra_metadata) as r:
                return r.read()
        return concurrency.execute(read)

    def _write_object_fully(self, container, name, data,
                            extra_metadata=None):
        """Write one whole object: ``data`` is bytes or a list of them."""
        pieces = [data] if isinstance(data, (bytes, bytearray)) else data

        def write():
            with self.get_object_writer(container, name,
                                        extra_metadata=extra_metadata) as w:
                for piece in pieces:
                    w.write(piece)
        concurrency.execute(write)

    def _read_metadata(self, backup):
        """The parsed ``_metadata`` of ``backup``, with version dispatch."""
        return self._read_document(backup, self._metadata_filename(backup),
                                   manifest.BackupMetadata)

    def _read_sha256file(self, backup):
        return self._read_document(backup, self._sha256_filename(backup),
                                   manifest.Sha256File,
                                   zero_block=self.sha_block_size_bytes)

    def _read_document(self, backup, name, document_class, **options):
        raw = self._read_object_fully(backup['container'], name)
        try:
            # Decrypted when sealed; a backup's metadata also makes its
            # key (or its being plain) known for its data objects.
            raw = self.encryption.open_document(
                backup, name, raw,
                holds_objects=document_class is manifest.BackupMetadata,
                execute=concurrency.execute)
            # Parsed on a worker thread: a large volume's sha256file is
            # tens of MB of JSON, which would hold up every green thread
            # of the service for as long as it takes.
            return concurrency.execute(document_class.from_json, raw,
                                       backup_id=backup['id'], **options)
        except exception.CorruptBackup as e:
            # Name the damaged object, so that it can be found and fixed.
            reason = (getattr(e, 'kwargs', None) or {}).get('reason', e)
            raise exception.CorruptBackup(
                backup_id=backup['id'], reason='%s: %s' % (name, reason))

    def _write_document(self, backup, container, name, pieces):
        """Write one of ``backup``'s JSON documents (sealed if encrypted)."""
        self._write_object_fully(
            container, name,
            self.encryption.seal_document(
                backup, name, pieces,
                is_sha256file=name == self._sha256_filename(backup)))

    def _bind_prefix(self, backup, prefix):
        """``backup``'s objects are named ``prefix``*: seal them if needed."""
        self.encryption.bind(backup, prefix)

    def _generate_object_names(self, backup):
        return self.get_container_entries(backup['container'],
                                          backup['service_metadata'])

    # -- backup, restore, delete ---------------------------------------------

    def _tune_malloc(self):
        """Apply the process-wide malloc settings (once per process)."""
        budget.limit_malloc_arenas(self.settings.malloc_arena_max)
        budget.fix_mmap_threshold(self.settings.malloc_mmap_threshold)

    def backup(self, backup, volume_file, backup_metadata=True):
        """Back up ``volume_file``; incremental when ``parent_id`` is set.

        The data path is :class:`cinder_chunked_ext.engine.backup.BackupJob`.
        """
        self._tune_malloc()
        job = backup_path.BackupJob(self, backup, volume_file)
        # An encrypted backup's key is made first, and deleted again
        # when the backup fails or is cancelled.
        with self.encryption.creating(backup) as discard_key:
            job.run(backup_metadata=backup_metadata)
            if job.cancelled:
                discard_key()

    def restore(self, backup, volume_id, volume_file, volume_is_new):
        """Restore ``backup`` (and the chain below it) to ``volume_file``.

        The data path is :mod:`cinder_chunked_ext.engine.restore`.  Raises
        BackupRestoreCancel when the backup's status changes away from
        ``restoring``.
        """
        self._tune_malloc()
        restore_path.restore_chain(self, backup, volume_id, volume_file,
                                   volume_is_new)

    def restore_spool(self):
        """A context holding the restore's read spool, or None.

        By default none: every object the check pass reads is read
        again by the write pass (see
        :mod:`cinder_chunked_ext.store.read_spool`).
        """
        return contextlib.nullcontext()

    def _restore_function(self, backup, metadata):
        method = self.DRIVER_VERSION_MAPPING.get(metadata.version)
        if method is None:
            raise exception.UnsupportedBackupVersion(
                version=metadata.version, backup_id=backup['id'])
        return getattr(self, method)

    def _restore_v1(self, backup, volume_id, metadata, volume_file,
                    volume_is_new, requested_backup, checked=None,
                    write_masks=None):
        """Restore the objects of one format 1.0.0 backup.

        ``checked``: what the restore's check pass proved, by object name.
        ``write_masks``: the hash blocks to write of each object, where
        the restore writes only those (:mod:`restore_delta`).
        """
        restore_path.LayerRestore(self, backup, volume_id, metadata,
                                  volume_file, volume_is_new,
                                  requested_backup, checked=checked,
                                  write_masks=write_masks).run()

    # -- delete --------------------------------------------------------------

    def delete_backup(self, backup):
        """Delete every object of ``backup`` (found by its prefix).

        A prefix that is empty or not the backup's own, or a listing that
        holds objects not of this backup, is refused before anything is
        deleted (see :mod:`cinder_chunked_ext.engine.prefixes`).
        """
        container = backup['container']
        prefix = backup['service_metadata']
        LOG.debug('Deleting backup %(id)s: container %(container)s, prefix '
                  '%(prefix)s.', {'id': backup['id'], 'container': container,
                                  'prefix': prefix})
        if container is None or prefix is None:
            return
        self._refuse_foreign(backup, prefixes.check, backup['id'], prefix)
        try:
            names = concurrency.execute(self.get_container_entries,
                                        container, prefix)
        except Exception as e:
            LOG.warning('Could not list the objects of backup %(id)s in '
                        'container %(container)s (%(error)s); continuing '
                        'with the delete. Objects named %(prefix)s* may '
                        'remain.', {'id': backup['id'], 'error': e,
                                    'container': container,
                                    'prefix': prefix})
            names = []
        self._refuse_foreign(backup, prefixes.check_listing, backup['id'],
                             prefix, names)
        for name in names:
            concurrency.execute(self.delete_object, container, name)
            concurrency.cooperative_yield()
        # Temporary files a killed writer left (stores that have them).
        leftovers = getattr(getattr(self, 'store', None),
                            'delete_leftovers', None)
        if leftovers is not None:
            try:
                removed = concurrency.execute(
                    leftovers, container, prefix,
                    lambda name: prefixes.owns(prefix, name))
            except Exception as e:
                LOG.warning('Could not remove the temporary files of '
                            'backup %(id)s in container %(container)s: '
                            '%(error)s', {'id': backup['id'], 'error': e,
                                          'container': container})
            else:
                if removed:
                    LOG.info('Removed %(count)d temporary file(s) of '
                             'unfinished writes of backup %(id)s.',
                             {'count': len(removed), 'id': backup['id']})
        LOG.info('Deleted backup %(id)s (%(count)d objects).',
                 {'id': backup['id'], 'count': len(names)})

    @staticmethod
    def _refuse_foreign(backup, check, *args):
        try:
            check(*args)
        except exception.UnsafePrefix as e:
            LOG.error('Refusing to delete backup %(id)s in container '
                      '%(container)s: %(error)s',
                      {'id': backup['id'], 'container': backup['container'],
                       'error': e})
            raise

    def import_record(self, backup, driver_info):
        """Refuse an imported record whose container is unsafe.

        Cinder's manager calls this with ``driver_info`` alone, before it
        copies the record's fields (``service_metadata`` included) into
        ``backup``: an empty or foreign prefix cannot be seen here, and
        :meth:`delete_backup` is where it is refused.
        """
        self.validate_container(backup['container'])
        return super().import_record(backup, driver_info)


def utcnow_stamp():
    """The UTC timestamp upstream puts in object name prefixes."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%d%H%M%S')
