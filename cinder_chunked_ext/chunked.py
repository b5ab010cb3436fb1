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

"""The chunked backup engine: backup, restore and delete.

Format-compatible with Cinder's ``ChunkedBackupDriver`` (repository
format 1.0.0) and with the same subclass interface (``put_container``,
``get_container_entries``, ``get_object_writer``, ``get_object_reader``,
``delete_object``, ``_generate_object_name_prefix``,
``update_container_name``, ``get_extra_metadata``).

The data path of a backup, top to bottom:

1. ``backup`` checks the geometry, loads the parent's block hashes for an
   incremental backup, and prepares the container and object prefix.
2. The volume is cut into chunks of ``chunk_size_bytes``.  A full backup
   stores each chunk as one object; an incremental one first hashes the
   chunk on the pool (``_hash_chunk``), then reads and stores each run
   of changed hash blocks as one object.  Objects no larger than a
   piece are written whole by a worker, several at once
   (``_write_small_object``).
3. ``_store_object`` streams one object (``_stream_object``): pieces of
   a few MiB are read in order and analysed on the worker pool (zero
   test, SHA-256 per hash block, compression of splittable codecs);
   then two lanes take them in order, one keeping the object's MD5, the
   other framing the stored form and writing it.  At most
   ``max_bytes_in_flight`` of pieces are pending at once.  When
   compression did not make the object smaller it is written again raw,
   as upstream records it.  Objects commit (an upload, for S3) in the
   background, a bounded number at a time.
4. ``_finalize_backup`` writes ``<prefix>_sha256file`` and then
   ``<prefix>_metadata``: a backup is complete only once its metadata
   exists, so a failure anywhere before leaves nothing that looks
   restorable.

Restore reads and checks the metadata of every backup of the chain
against the volume and the stored object list before writing anything,
then restores the layers from the full backup up.  Objects are fetched,
decompressed and verified (length and MD5) ahead on the pool and written
in order only once verified; objects too large to hold are streamed.
"""

import abc
import collections
import dataclasses
import datetime
import hashlib
import time
import typing

from oslo_config import cfg
from oslo_log import log as logging

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext import compression
from cinder_chunked_ext import concurrency
from cinder_chunked_ext import environment
from cinder_chunked_ext import exception
from cinder_chunked_ext import manifest
from cinder_chunked_ext import pipeline
from cinder_chunked_ext import volume_io

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3
MiB = 1024 ** 2
PIECE_BYTES = 4 * MiB
# Pieces handed to the in-order lanes and not yet through them.
LANE_DEPTH = 8
MAX_CHAIN_LENGTH = 10000
STATUS_CHECK_SECONDS = 1.0

backup_opts = [
    cfg.StrOpt('backup_compression_algorithm',
               default='zlib',
               ignore_case=True,
               choices=compression.CHOICES,
               help="Compression algorithm for backups ('none' to "
                    "disable)."),
    cfg.BoolOpt('backup_create_containers',
                default=True,
                help='Create the container of a backup when it does not '
                     'exist. When False, the operator must create it.'),
]

driver_opts = [
    cfg.IntOpt('backup_metadata_version', default=2,
               help='Backup metadata version used when backing up volume '
                    'metadata. The service that restores must support '
                    'it.'),
    cfg.IntOpt('backup_object_number_per_notification',
               default=10,
               help='Number of objects written between two progress '
                    'notifications.'),
    cfg.IntOpt('backup_timer_interval',
               default=120,
               help='Interval, in seconds, between two progress '
                    'notifications reporting the backup status.'),
]

common_opts = [
    cfg.StrOpt('state_path',
               default='/var/lib/cinder',
               help="Top-level directory for maintaining cinder's state."),
    cfg.StrOpt('storage_availability_zone',
               default='nova',
               help='Availability zone of this node.'),
]

pipeline_opts = [
    cfg.IntOpt('workers',
               default=0,
               min=0,
               help='Worker threads that hash, compress and decompress. '
                    '0 means one per CPU available to the service.'),
    cfg.IntOpt('max_bytes_in_flight',
               default=128 * MiB,
               min=8 * MiB,
               help='Upper bound, in bytes, of volume data a backup or '
                    'restore holds in memory at once (pieces waiting to '
                    'be hashed, compressed or written).'),
    cfg.BoolOpt('verify_checksums_on_restore',
                default=True,
                help="Check every object's MD5 recorded at backup time "
                     'before its data is written to the volume.'),
]

PIPELINE_GROUP = 'chunked_backup'

CONF = cfg.CONF
if cinder_compat.HAVE_CINDER:  # pragma: no cover - depends on environment
    import cinder.common.config  # noqa: F401 - state_path, availability zone
else:
    CONF.register_opts(common_opts)
CONF.register_opts(cinder_compat.same_as_upstream(
    backup_opts, 'cinder.backup.chunkeddriver', 'backup_opts'))
CONF.register_opts(cinder_compat.same_as_upstream(
    driver_opts, 'cinder.backup.driver', 'backup_opts'))
CONF.register_opts(pipeline_opts, group=PIPELINE_GROUP)


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """Everything the engine reads from configuration, read once."""

    compression: str
    create_containers: bool
    timer_interval: int
    objects_per_notification: int
    availability_zone: str
    workers: int
    max_bytes_in_flight: int
    verify_checksums: bool

    @classmethod
    def from_conf(cls, conf=CONF):
        group = conf[PIPELINE_GROUP]
        return cls(
            compression=conf.backup_compression_algorithm.lower(),
            create_containers=conf.backup_create_containers,
            timer_interval=conf.backup_timer_interval,
            objects_per_notification=max(
                1, conf.backup_object_number_per_notification),
            availability_zone=conf.storage_availability_zone,
            workers=group.workers or concurrency.default_workers(),
            max_bytes_in_flight=group.max_bytes_in_flight,
            verify_checksums=group.verify_checksums_on_restore,
        )


@dataclasses.dataclass
class _BackupRun:
    """The state of one backup while it runs."""

    backup: typing.Any
    container: str
    prefix: str
    extra_metadata: typing.Any
    volume_size_bytes: int
    metadata: manifest.BackupMetadata
    parent_hashes: typing.Optional[typing.List[str]]
    hashes: typing.List[str] = dataclasses.field(default_factory=list)
    next_number: int = 1
    bytes_done: int = 0
    cancelled: bool = False
    last_status_check: float = 0.0
    # The machinery, set by ``backup`` for the duration of the run.
    source: typing.Any = None
    pool: typing.Any = None
    commits: typing.Any = None      # OrderedWindow of object commits
    small: typing.Any = None        # OrderedWindow of whole small objects
    md5_lane: typing.Any = None
    out_lane: typing.Any = None
    progress: typing.Any = None

    @property
    def incremental(self):
        return self.parent_hashes is not None


class _Progress(object):
    """Progress notifications: on a timer, every N objects, and at 100%.

    The timer is checked as data flows rather than run on its own thread,
    so it works the same under eventlet and native threads.
    """

    def __init__(self, env, run, settings, enabled_timer):
        self._env = env
        self._run = run
        self._interval = settings.timer_interval
        self._every = settings.objects_per_notification
        # As upstream's looping call: an interval of 0 fires at once.
        self._timer = enabled_timer and self._interval >= 0
        self._last = time.monotonic()
        self._objects_since = 0

    def _send(self, percent):
        info = {'id': self._run.next_number,
                'list': [o.to_json_entry()
                         for o in self._run.metadata.objects],
                'prefix': self._run.prefix,
                'volume_meta': self._run.metadata.volume_meta,
                'backup_percent': percent}
        if self._run.extra_metadata is not None:
            info['extra_metadata'] = self._run.extra_metadata
        try:
            self._env.notify_progress(self._run.backup, info)
        except Exception:  # noqa - a notifier must not fail a backup
            LOG.warning('Could not send the progress notification of '
                        'backup %s.', self._run.backup.id, exc_info=True)
        self._last = time.monotonic()

    def percent(self):
        size = self._run.volume_size_bytes
        if size <= 0:
            return 0
        return min(100, self._run.bytes_done * 100 / size)

    def tick(self):
        if self._timer and time.monotonic() - self._last >= self._interval:
            self._send(self.percent())

    def object_written(self):
        self._objects_since += 1
        if self._objects_since >= self._every:
            self._objects_since = 0
            self._send(self.percent())

    def finished(self):
        self._send(100)


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One backup of a chain being restored, and where it goes."""

    backup: typing.Any
    container: str
    extra_metadata: typing.Any
    volume_file: typing.Any
    volume_is_new: bool
    lengths: collections.Counter = dataclasses.field(
        default_factory=collections.Counter)


@dataclasses.dataclass(frozen=True)
class _RestoreLanes:
    """The in-order lanes of one restore layer."""

    decode: typing.Any
    md5: typing.Any
    write: typing.Any


class _DoneNothing(object):
    """A finished future with nothing to write."""

    @staticmethod
    def result():
        return []


_DONE_NOTHING = _DoneNothing()


class _Incompressible(Exception):
    """Raised inside an object writer to drop a compressed attempt."""


class _Cancelled(Exception):
    """Raised inside an object writer when the backup is being deleted."""


class _ZeroAwareMd5(object):
    """An MD5 that does not hash an object's leading zero pieces yet.

    An object that turns out to be all zeros takes its digest from a
    per-length cache; otherwise the zeros are hashed when the first data
    arrives.  Runs on one lane, so it needs no lock.
    """

    def __init__(self):
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._zeros = 0
        self._data = False

    def update(self, data, zero):
        if zero and not self._data:
            self._zeros += len(data)
            return
        while self._zeros:
            step = min(self._zeros, PIECE_BYTES)
            self._md5.update(pipeline.zeros(step))
            self._zeros -= step
        self._data = True
        self._md5.update(data)

    def hexdigest(self):
        if not self._data:
            return pipeline.zero_md5(self._zeros)
        return self._md5.hexdigest()


class _LanePair(object):
    """Steps for two ordered lanes, at most ``depth`` pieces pending.

    The second lane's steps return how many bytes they stored.
    """

    def __init__(self, first, second, depth):
        self._lanes = (first, second)
        self._depth = depth
        self._pending = collections.deque()
        self.stored = 0

    def submit(self, first_step, second_step):
        while len(self._pending) >= self._depth:
            self._settle()
        self._pending.append(tuple(
            lane.submit(*step) if step else None
            for lane, step in zip(self._lanes, (first_step, second_step))))

    def _settle(self):
        first, second = self._pending.popleft()
        if first is not None:
            first.result()
        if second is not None:
            self.stored += second.result()

    def finish(self):
        """Wait for every step; return the bytes stored."""
        while self._pending:
            self._settle()
        return self.stored

    def drain(self):
        """Wait for every step, ignoring errors (the caller failed)."""
        while self._pending:
            for future in self._pending.popleft():
                if future is None:
                    continue
                try:
                    future.result()
                except Exception:  # noqa: S110 - already failing
                    pass


def _emit(encoder, writer, result):
    """Frame one analysed piece and write it (an output lane's step)."""
    out = (encoder.feed(result.data, result.encoded)
           if encoder is not None else result.data)
    if out:
        writer.write(out)
    return len(out)


def _emit_bytes(writer, data):
    writer.write(data)
    return len(data)


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

    def validate_container(self, container):
        """Refuse a container name this driver cannot use safely."""
        return None

    #: Objects this driver's store may commit at the same time.
    max_concurrent_writes = 1

    # -- surroundings ------------------------------------------------------

    @property
    def env(self):
        if self._env_cache is None:
            self._env_cache = environment.for_driver(self)
        return self._env_cache

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

    def _piece_bytes(self):
        block = self.sha_block_size_bytes
        return max(1, PIECE_BYTES // block) * block

    def _window_depth(self):
        """Pieces the pool may hold: enough to keep every worker busy.

        More would only hold memory (the lanes, not the pool, set the
        pace); fewer if ``max_bytes_in_flight`` says so.
        """
        pieces = self.settings.max_bytes_in_flight // self._piece_bytes()
        return max(2, min(pieces - LANE_DEPTH, 3 * self.settings.workers))

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
        def write():
            with self.get_object_writer(container, name,
                                        extra_metadata=extra_metadata) as w:
                w.write(data)
        concurrency.execute(write)

    def _read_metadata(self, backup):
        """The parsed ``_metadata`` of ``backup``, with version dispatch."""
        return self._read_document(backup, self._metadata_filename(backup),
                                   manifest.BackupMetadata)

    def _read_sha256file(self, backup):
        return self._read_document(backup, self._sha256_filename(backup),
                                   manifest.Sha256File)

    def _read_document(self, backup, name, document_class):
        raw = self._read_object_fully(backup['container'], name)
        try:
            return document_class.from_json(raw, backup_id=backup['id'])
        except exception.CorruptBackup as e:
            # Name the damaged object, so that it can be found and fixed.
            reason = (getattr(e, 'kwargs', None) or {}).get('reason', e)
            raise exception.CorruptBackup(
                backup_id=backup['id'], reason='%s: %s' % (name, reason))

    def _generate_object_names(self, backup):
        return self.get_container_entries(backup['container'],
                                          backup['service_metadata'])

    # -- backup --------------------------------------------------------------

    def backup(self, backup, volume_file, backup_metadata=True):
        """Back up ``volume_file``; incremental when ``parent_id`` is set."""
        if self.chunk_size_bytes % self.sha_block_size_bytes:
            raise exception.InvalidBackup(
                reason='Chunk size is not multiple of block size for '
                       'creating hash.')
        parent_hashes = self._parent_hashes(backup)
        run = self._prepare_backup(backup, parent_hashes)
        LOG.info('Backing up volume %(volume)s as backup %(backup)s '
                 '(%(kind)s, compression %(algo)s, %(workers)d workers) '
                 'into container %(container)s.',
                 {'volume': backup.volume_id, 'backup': backup.id,
                  'kind': 'incremental' if run.incremental else 'full',
                  'algo': self.settings.compression,
                  'workers': self.settings.workers,
                  'container': run.container})
        run.progress = _Progress(self.env, run, self.settings,
                                 self.enable_progress_timer)
        run.source = volume_io.VolumeSource(volume_file)
        with concurrency.WorkerPool(self.settings.workers) as pool:
            run.pool = pool
            run.md5_lane = pool.lane()
            run.out_lane = pool.lane()
            run.commits = concurrency.OrderedWindow(
                pool, max(1, self.max_concurrent_writes))
            # Small objects are stored (committed) by the workers that
            # make them: as many at once as the store accepts commits.
            run.small = concurrency.OrderedWindow(
                pool, max(1, self.max_concurrent_writes))
            try:
                self._backup_chunks(run)
                self._settle_small_objects(run)
                while len(run.commits):
                    run.commits.pop()   # raises the first failed commit
            finally:
                # Nothing may still write once we return or raise.
                run.small.drain()
                run.commits.drain()
        progress = run.progress
        if run.cancelled:
            # Delete what was written, now that nothing writes any more.
            self.delete_backup(backup)
            LOG.info('Backup %s was cancelled; its objects were deleted.',
                     backup.id)
            return
        progress.finished()
        if backup_metadata:
            self._backup_volume_metadata(run)
        self._finalize_backup(run)

    def _parent_hashes(self, backup):
        if not backup.parent_id:
            return None
        parent = self.env.get_backup(backup.parent_id)
        shafile = self._read_sha256file(parent)
        if shafile.chunk_size != self.sha_block_size_bytes:
            raise exception.InvalidBackup(
                reason='Hash block size has changed since the last backup. '
                       'New hash block size: %(new)s. Old hash block '
                       'size: %(old)s. Do a full backup.'
                       % {'new': self.sha_block_size_bytes,
                          'old': shafile.chunk_size})
        if (backup.size or 0) > (parent.size or 0):
            raise exception.InvalidBackup(
                reason='Volume size increased since the last backup. '
                       'Do a full backup.')
        return shafile.sha256s

    def _create_container(self, backup):
        new_container = self.update_container_name(backup, backup.container)
        if new_container:
            if new_container != backup.container:
                backup.container = new_container
        elif backup.container is None:
            backup.container = self.backup_default_container
        self.validate_container(backup.container)
        backup.save()
        concurrency.execute(self.put_container, backup.container)
        return backup.container

    def _prepare_backup(self, backup, parent_hashes):
        size_gib = self.env.volume_size_gib(backup.volume_id)
        if size_gib is None or size_gib <= 0:
            raise exception.InvalidVolume(
                reason='volume size %s is invalid.' % size_gib)
        container = self._create_container(backup)
        prefix = self._generate_object_name_prefix(backup)
        backup.service_metadata = prefix
        backup.save()
        volume = {'id': backup.volume_id, 'size': size_gib}
        extra = self.get_extra_metadata(backup, volume)
        metadata = manifest.BackupMetadata(
            backup_id=backup.id, volume_id=backup.volume_id,
            backup_name=backup.display_name,
            backup_description=backup.display_description,
            created_at=str(backup.created_at), parent_id=backup.parent_id,
            extra_metadata=extra)
        LOG.debug('Backup %(id)s: prefix %(prefix)s, volume size %(size)d '
                  'GiB, availability zone %(az)s.',
                  {'id': backup.id, 'prefix': prefix, 'size': size_gib,
                   'az': self.az})
        return _BackupRun(backup=backup, container=container, prefix=prefix,
                          extra_metadata=extra,
                          volume_size_bytes=size_gib * GiB,
                          metadata=metadata, parent_hashes=parent_hashes)

    def _backup_chunks(self, run):
        source = run.source
        offset = source.start
        while True:
            if self._backup_cancelled(run, force=True):
                return
            length = source.chunk_length(offset, self.chunk_size_bytes)
            if length == 0:
                return
            if run.incremental:
                hashes = self._hash_chunk(run, offset, length)
                extents = pipeline.changed_extents(
                    hashes, run.parent_hashes,
                    offset // self.sha_block_size_bytes, offset,
                    self.sha_block_size_bytes, length)
                for ext_offset, ext_length in extents:
                    self._store_any_object(run, ext_offset, ext_length,
                                           False)
                    if run.cancelled:
                        return
                run.hashes.extend(hashes)
                if run.cancelled:
                    return
            else:
                self._store_any_object(run, offset, length, True)
                if run.cancelled:
                    return
            offset += length
            run.bytes_done = offset - source.start
            run.progress.tick()

    def _backup_cancelled(self, run, force=False):
        """Re-read the backup's status; cancel on deleting/deleted."""
        now = time.monotonic()
        if not force and now - run.last_status_check < STATUS_CHECK_SECONDS:
            return run.cancelled
        run.last_status_check = now
        backup = run.backup
        with backup.as_read_deleted():
            backup.refresh()
        if backup.status in (cinder_compat.BackupStatus.DELETING,
                             cinder_compat.BackupStatus.DELETED):
            run.cancelled = True
        return run.cancelled

    def _pieces(self, offset, length):
        step = self._piece_bytes()
        end = offset + length
        for start in range(offset, end, step):
            yield start, min(step, end - start)

    def _hash_chunk(self, run, offset, length):
        """Block hashes of one chunk (an incremental backup's first pass)."""
        window = concurrency.OrderedWindow(run.pool, self._window_depth())
        hashes = []
        try:
            for start, size in self._pieces(offset, length):
                while window.full or window.ready:
                    hashes.extend(window.pop()[1])
                data = self._read_piece(run, start, size)
                window.submit(start, pipeline.hash_piece, data,
                              self.sha_block_size_bytes)
            while len(window):
                hashes.extend(window.pop()[1])
        finally:
            window.drain()
        return hashes

    def _read_piece(self, run, start, size):
        data = run.source.read_at(start, size)
        if len(data) != size:
            raise exception.InvalidVolume(
                reason='the volume ended at offset %d while reading %d '
                       'bytes at %d' % (start + len(data), size, start))
        return data

    def _store_any_object(self, run, offset, length, want_hashes):
        """Store ``[offset, offset + length)`` as the next object.

        An object no larger than a piece is read here and handed whole to
        the pool, several at once (incremental backups are mostly such
        objects); a larger one is streamed.
        """
        if length <= self._piece_bytes():
            if self._backup_cancelled(run):
                return
            data = self._read_piece(run, offset, length)
            name = manifest.object_name(run.prefix, run.next_number)
            run.next_number += 1
            while run.small.full or run.small.ready:
                self._finish_small_object(run, run.small.pop()[1])
            run.small.submit(name, self._write_small_object, run, name,
                             offset, data, want_hashes)
            return
        # Objects are recorded in number order: settle the small ones.
        self._settle_small_objects(run)
        self._store_object(run, offset, length,
                           run.hashes if want_hashes else None)

    def _settle_small_objects(self, run):
        while len(run.small):
            self._finish_small_object(run, run.small.pop()[1])

    def _finish_small_object(self, run, result):
        record, hashes = result
        if hashes is not None:
            run.hashes.extend(hashes)
        run.metadata.objects.append(record)
        run.bytes_done = max(run.bytes_done, record.end - run.source.start)
        run.progress.object_written()

    def _write_small_object(self, run, name, offset, data, want_hashes):
        """Hash, compress and store one whole small object (a worker's job).

        Returns its record and, when asked, its block hashes.
        """
        algorithm = self.settings.compression
        result = pipeline.analyse_piece(
            data, self.sha_block_size_bytes,
            compression.parallel_piece_encoder(algorithm), want_hashes)
        md5 = (pipeline.zero_md5(len(data)) if result.zero
               else hashlib.md5(data, usedforsecurity=False).hexdigest())
        stored, stored_as = data, 'none'
        encoder = compression.new_object_encoder(algorithm, len(data))
        if encoder is not None:
            out = b''.join([encoder.start(),
                            encoder.feed(data, result.encoded),
                            encoder.finish()])
            if len(out) < len(data):
                stored, stored_as = out, algorithm
        with self.get_object_writer(run.container, name,
                                    extra_metadata=run.extra_metadata) as w:
            w.write(stored)
        record = manifest.ObjectRecord(name=name, offset=offset,
                                       length=len(data),
                                       compression=stored_as, md5=md5)
        return record, result.hashes

    def _store_object(self, run, offset, length, hashes_out):
        """Write one data object covering ``[offset, offset + length)``."""
        name = manifest.object_name(run.prefix, run.next_number)
        algorithm = self.settings.compression
        md5 = None
        try:
            if compression.family(algorithm) is not None:
                try:
                    md5 = self._stream_object(run, name, offset, length,
                                              algorithm, hashes_out)
                except _Incompressible:
                    LOG.debug('Compression of %s was ineffective; storing '
                              'it raw.', name)
                    hashes_out = None  # collected by the first attempt
            if md5 is None:
                algorithm = 'none'
                md5 = self._stream_object(run, name, offset, length, None,
                                          hashes_out)
        except _Cancelled:
            return
        run.metadata.objects.append(manifest.ObjectRecord(
            name=name, offset=offset, length=length,
            compression=algorithm, md5=md5))
        run.next_number += 1
        # Count this object's bytes before a notification reports them.
        run.bytes_done = max(run.bytes_done,
                             offset + length - run.source.start)
        run.progress.object_written()

    def _stream_object(self, run, name, offset, length, algorithm,
                       hashes_out):
        """Read, analyse and write one object; return its MD5.

        Pieces are read in order, analysed on the pool (zero test, block
        hashes, compression of splittable codecs), then handed to two
        lanes that see them in order: one keeps the MD5, the other frames
        the stored form and writes it.  Raises _Incompressible, after
        dropping what was written, when the stored form would not be
        smaller than the data.
        """
        piece_encoder = (compression.parallel_piece_encoder(algorithm)
                         if algorithm else None)
        # zstd runs single-threaded on the output lane: fed piece by piece,
        # its own worker threads cost more than they bring.
        encoder = (compression.new_object_encoder(algorithm, length)
                   if algorithm else None)
        writer = self.get_object_writer(run.container, name,
                                        extra_metadata=run.extra_metadata)
        window = concurrency.OrderedWindow(run.pool, self._window_depth())
        lanes = _LanePair(run.md5_lane, run.out_lane, LANE_DEPTH)
        digest = _ZeroAwareMd5()
        want_hashes = hashes_out is not None
        stored = 0

        def hand_over(result):
            if want_hashes:
                hashes_out.extend(result.hashes)
            lanes.submit((digest.update, result.data, result.zero),
                         (_emit, encoder, writer, result))

        try:
            if encoder is not None:
                lanes.submit(None, (_emit_bytes, writer, encoder.start()))
            for start, size in self._pieces(offset, length):
                if self._backup_cancelled(run):
                    raise _Cancelled()
                # Results leave the window as soon as they are there, so
                # the lanes start with the first piece, not when the
                # window is full.
                while window.full or window.ready:
                    hand_over(window.pop()[1])
                data = self._read_piece(run, start, size)
                window.submit(start, pipeline.analyse_piece, data,
                              self.sha_block_size_bytes, piece_encoder,
                              want_hashes)
            while len(window):
                hand_over(window.pop()[1])
            stored = lanes.finish()
            if encoder is not None:
                tail = encoder.finish()
                if stored + len(tail) >= length:
                    raise _Incompressible()
                concurrency.execute(writer.write, tail)
            # Commit (upload) in the background, a bounded number at
            # once; an earlier object's failed commit aborts this one.
            if run.commits.full:
                run.commits.pop()
        except BaseException as e:
            window.drain()
            lanes.drain()
            concurrency.execute(writer.__exit__, type(e), e, None)
            raise
        run.commits.submit(name, writer.__exit__, None, None, None)
        return digest.hexdigest()

    def _backup_volume_metadata(self, run):
        try:
            json_meta = self.get_metadata(run.backup.volume_id)
        except Exception:
            LOG.exception('Backup of the metadata of volume %s failed.',
                          run.backup.volume_id)
            self.delete_backup(run.backup)
            raise
        if json_meta:
            run.metadata.volume_meta = json_meta

    def _finalize_backup(self, run):
        """Write the sha256file, then the metadata that completes it."""
        backup = run.backup
        sha256file = manifest.Sha256File(
            backup_id=backup.id, volume_id=backup.volume_id,
            backup_name=backup.display_name,
            backup_description=backup.display_description,
            created_at=str(backup.created_at),
            chunk_size=self.sha_block_size_bytes, sha256s=run.hashes)
        self._write_object_fully(run.container, self._sha256_filename(backup),
                                 sha256file.to_json())
        self._write_object_fully(run.container,
                                 self._metadata_filename(backup),
                                 run.metadata.to_json())
        backup.object_count = run.next_number - 1
        backup.save()
        LOG.info('Backup %(id)s finished: %(count)d objects.',
                 {'id': backup.id, 'count': backup.object_count})

    # -- restore -------------------------------------------------------------

    def restore(self, backup, volume_id, volume_file, volume_is_new):
        """Restore ``backup`` (and the chain below it) to ``volume_file``.

        Raises BackupRestoreCancel when the backup's status changes away
        from ``restoring``.
        """
        LOG.info('Restoring backup %(id)s to %(new)s volume %(volume)s.',
                 {'id': backup['id'], 'volume': volume_id,
                  'new': 'new' if volume_is_new else 'existing'})
        metadata = self._read_metadata(backup)
        restore_func = self._restore_function(backup, metadata)
        chain = self._backup_chain(backup)
        # Every layer's documents are read and checked before the first
        # write: a damaged layer anywhere in the chain leaves the volume
        # as it was.
        metas = [metadata] + [self._read_metadata(b) for b in chain[1:]]
        for layer, layer_meta in zip(chain, metas):
            self._check_objects(layer, layer_meta)
            self._check_object_list(layer, layer_meta)
        restored = []
        for layer, layer_meta in reversed(list(zip(chain, metas))):
            is_base = not layer.parent_id
            try:
                restore_func(layer, volume_id, layer_meta, volume_file,
                             volume_is_new and is_base, backup)
            except exception.BackupRestoreCancel:
                raise
            except Exception:
                LOG.error('Restore of backup %(id)s to volume %(volume)s '
                          'failed in layer %(layer)s after restoring '
                          '%(done)s.',
                          {'id': backup['id'], 'volume': volume_id,
                           'layer': layer['id'],
                           'done': ', '.join(restored) or 'nothing'})
                raise
            restored.append(layer['id'])
            if layer_meta.volume_meta:
                try:
                    self.put_metadata(volume_id, layer_meta.volume_meta)
                except exception.BackupMetadataUnsupportedVersion:
                    msg = ('Metadata restore failed due to incompatible '
                           'version.')
                    LOG.error(msg)
                    raise exception.BackupOperationError(msg)
        LOG.info('Restore of backup %(id)s to volume %(volume)s finished.',
                 {'id': backup['id'], 'volume': volume_id})

    def _restore_function(self, backup, metadata):
        method = self.DRIVER_VERSION_MAPPING.get(metadata.version)
        if method is None:
            raise exception.UnsupportedBackupVersion(
                version=metadata.version, backup_id=backup['id'])
        return getattr(self, method)

    def _backup_chain(self, backup):
        """``[backup, parent, grandparent, ..., full]``; refuses cycles."""
        chain = [backup]
        seen = {backup['id']}
        current = backup
        while current.parent_id:
            if current.parent_id in seen or len(chain) > MAX_CHAIN_LENGTH:
                raise exception.CorruptBackup(
                    backup_id=backup['id'],
                    reason='the chain of parent backups loops at %s'
                           % current.parent_id)
            current = self.env.get_backup(current.parent_id)
            seen.add(current['id'])
            chain.append(current)
        return chain

    def _check_objects(self, backup, metadata):
        """Refuse metadata that would write outside the volume or overlap."""
        prefix = backup['service_metadata']
        limit = (backup['size'] or 0) * GiB or None
        previous_end = 0
        for obj in sorted(metadata.objects, key=lambda o: o.offset):
            if manifest.object_number(prefix, obj.name) is None:
                raise exception.CorruptBackup(
                    backup_id=backup['id'],
                    reason='object name %r does not belong to prefix %r'
                           % (obj.name, prefix))
            if obj.offset < previous_end:
                raise exception.CorruptBackup(
                    backup_id=backup['id'],
                    reason='object %s overlaps the previous object'
                           % obj.name)
            if limit is not None and obj.end > limit:
                raise exception.CorruptBackup(
                    backup_id=backup['id'],
                    reason='object %s ends at byte %d, beyond the %d-byte '
                           'volume' % (obj.name, obj.end, limit))
            previous_end = obj.end

    def _check_object_list(self, backup, metadata):
        names = set(self._generate_object_names(backup))
        names.discard(self._metadata_filename(backup))
        names.discard(self._sha256_filename(backup))
        expected = {obj.name for obj in metadata.objects}
        if names != expected:
            missing = sorted(expected - names)
            extra = sorted(names - expected)
            raise exception.InvalidBackup(
                reason='restore_backup aborted, actual object list does not '
                       'match object list stored in metadata of backup '
                       '%s (missing: %s; unexpected: %s).'
                       % (backup['id'], ', '.join(missing) or 'none',
                          ', '.join(extra) or 'none'))

    def _restore_v1(self, backup, volume_id, metadata, volume_file,
                    volume_is_new, requested_backup):
        """Restore the objects of one v1 backup onto ``volume_file``.

        ``restore`` has checked ``metadata`` against the volume and the
        stored object list (``_check_objects``, ``_check_object_list``).
        The object at the head of the queue streams through three lanes
        (read and decompress, MD5, write); the objects after it that are
        small enough to hold are fetched, decompressed and verified ahead
        on the pool, several at once.  Each is written, in order, once
        verified (see ``_restore_streamed`` for large objects).
        """
        layer = _Layer(backup, backup['container'], metadata.extra_metadata,
                       volume_file, volume_is_new)
        # The head object may hold up to half of the bound in memory; the
        # objects fetched ahead share the other half.
        budget = (self.settings.max_bytes_in_flight -
                  self.settings.max_bytes_in_flight // 2)
        with concurrency.WorkerPool(self.settings.workers) as pool:
            lanes = _RestoreLanes(pool.lane(), pool.lane(), pool.lane())
            ahead = collections.deque()     # (object, future or None)
            held = 0
            objects = collections.deque(metadata.objects)
            try:
                while objects or ahead:
                    if not ahead:
                        obj = objects.popleft()
                        ahead.append((obj, _DONE_NOTHING
                                      if self._known_zeros(layer, obj)
                                      else None))
                    while (objects and self._holdable(objects[0]) and
                           held + objects[0].length <= budget):
                        obj = objects.popleft()
                        future = _DONE_NOTHING
                        if not self._known_zeros(layer, obj):
                            future = pool.submit(self._fetch_verified,
                                                 layer, obj)
                            held += obj.length
                        ahead.append((obj, future))
                    obj, future = ahead.popleft()
                    self._check_restore_status(backup, volume_id,
                                               requested_backup)
                    LOG.debug('Restoring object %(name)s of backup %(id)s '
                              'at offset %(offset)d.',
                              {'name': obj.name, 'id': backup['id'],
                               'offset': obj.offset})
                    if future is None:
                        self._restore_streamed(lanes, layer, obj)
                    else:
                        pieces = future.result()
                        if future is not _DONE_NOTHING:
                            held -= obj.length
                        self._write_pieces(layer, obj.offset, pieces)
                    concurrency.execute(volume_io.flush_and_sync,
                                        volume_file)
                    concurrency.cooperative_yield()
            finally:
                for _obj, future in ahead:
                    if future is not None:
                        try:
                            future.result()
                        except Exception:  # noqa: S110 - already failing
                            pass

    def _holdable(self, obj):
        """Small enough to verify in memory before writing any of it.

        With the default bound of 128 MiB that includes S3's 50 MB objects.
        """
        return obj.length <= self.settings.max_bytes_in_flight // 2

    def _check_restore_status(self, backup, volume_id, requested_backup):
        with requested_backup.as_read_deleted():
            requested_backup.refresh()
        if requested_backup.status != cinder_compat.BackupStatus.RESTORING:
            raise exception.BackupRestoreCancel(back_id=backup['id'],
                                                vol_id=volume_id)

    def _known_zeros(self, layer, obj):
        """True for an all-zero object that a new volume already holds.

        Known from its MD5 alone, so it costs nothing to restore.  The
        MD5 of zeros is computed once per length, and only for a length
        seen twice (typically every full chunk), so objects of unique
        lengths never pay for it.
        """
        if not layer.volume_is_new:
            return False
        layer.lengths[obj.length] += 1
        if layer.lengths[obj.length] < 2:
            return False
        return obj.md5 == concurrency.execute(pipeline.zero_md5, obj.length)

    def _fetch_verified(self, layer, obj):
        """All of ``obj``'s data, decompressed and checked (a worker's job)."""
        return list(self._decoded_pieces(layer.backup, layer.container, obj,
                                         layer.extra_metadata))

    def _write_pieces(self, layer, offset, pieces):
        write = (volume_io.write_skipping_zeros if layer.volume_is_new
                 else volume_io.write_at)
        for data in pieces:
            concurrency.execute(write, layer.volume_file, offset, data)
            offset += len(data)

    def _restore_streamed(self, lanes, layer, obj):
        """Restore one object through the lanes.

        An object small enough to hold is verified before any of it is
        written.  A larger one onto an existing volume is verified in a
        first pass so that bad data never overwrites good; onto a new
        volume it is verified as it is written (the restore fails at that
        object, naming it, and the new volume must not be used).
        """
        verify = self.settings.verify_checksums
        if verify and self._holdable(obj):
            pieces = list(self._decoded_pieces(
                layer.backup, layer.container, obj, layer.extra_metadata,
                decode_lane=lanes.decode, md5_lane=lanes.md5))
            self._write_pieces(layer, obj.offset, pieces)
            return
        if verify and not layer.volume_is_new:
            self._stream_decoded(lanes, layer, obj, write=False)
        self._stream_decoded(lanes, layer, obj, write=True)

    def _stream_decoded(self, lanes, layer, obj, write):
        """Decode ``obj`` on one lane, MD5 it on another, write on a third."""
        write_fn = (volume_io.write_skipping_zeros if layer.volume_is_new
                    else volume_io.write_at)
        pieces = self._decoded_pieces(layer.backup, layer.container, obj,
                                      layer.extra_metadata,
                                      decode_lane=lanes.decode,
                                      md5_lane=lanes.md5)
        writes = collections.deque()
        offset = obj.offset
        try:
            for data in pieces:
                if not write:
                    continue
                while len(writes) >= LANE_DEPTH:
                    writes.popleft().result()
                writes.append(lanes.write.submit(write_fn, layer.volume_file,
                                                 offset, data))
                offset += len(data)
            while writes:
                writes.popleft().result()
        finally:
            for future in writes:
                try:
                    future.result()
                except Exception:  # noqa: S110 - already failing
                    pass

    def _open_decoded(self, container, obj, extra_metadata):
        reader = self.get_object_reader(container, obj.name,
                                        extra_metadata=extra_metadata)
        return reader, compression.open_decoding_reader(obj.compression,
                                                        reader)

    def _decoded_pieces(self, backup, container, obj, extra_metadata,
                        decode_lane=None, md5_lane=None):
        """Yield the decompressed data of ``obj`` in pieces; check it.

        The length and (unless disabled) the MD5 are checked after the
        last piece: the generator raises CorruptBackup or ChecksumMismatch
        naming the object instead of finishing.  With lanes, reading and
        decompressing run ahead on one and the MD5 on another.
        """
        reader, decoded = concurrency.execute(
            self._open_decoded, container, obj, extra_metadata)
        md5 = hashlib.md5(usedforsecurity=False)
        step = self._piece_bytes()
        reads = collections.deque()
        digests = collections.deque()
        total = 0

        def next_piece():
            if decode_lane is None:
                return concurrency.execute(_read_exactly, decoded, step)
            while len(reads) < LANE_DEPTH:
                reads.append(decode_lane.submit(_read_exactly, decoded,
                                                step))
            return reads.popleft().result()

        try:
            while True:
                try:
                    data = next_piece()
                except ValueError as e:
                    raise exception.CorruptBackup(
                        backup_id=backup['id'],
                        reason='object %s cannot be decompressed (%s)'
                               % (obj.name, e))
                if not data:
                    break
                total += len(data)
                if total > obj.length:
                    break
                if md5_lane is None:
                    md5.update(data)
                else:
                    while len(digests) >= LANE_DEPTH:
                        digests.popleft().result()
                    digests.append(md5_lane.submit(md5.update, data))
                yield data
            while digests:
                digests.popleft().result()
        finally:
            for future in list(reads) + list(digests):
                try:
                    future.result()
                except Exception:  # noqa: S110 - already failing
                    pass
            concurrency.execute(reader.__exit__, None, None, None)
        if total != obj.length:
            raise exception.CorruptBackup(
                backup_id=backup['id'],
                reason='object %s holds %s bytes of data, the metadata says '
                       '%d' % (obj.name, total if total <= obj.length
                               else 'more than %d' % obj.length, obj.length))
        actual = md5.hexdigest()
        if actual != obj.md5 and self.settings.verify_checksums:
            raise exception.ChecksumMismatch(
                backup_id=backup['id'], object_name=obj.name,
                expected=obj.md5, actual=actual)

    # -- delete --------------------------------------------------------------

    def delete_backup(self, backup):
        """Delete every object of ``backup`` (found by its prefix)."""
        container = backup['container']
        prefix = backup['service_metadata']
        LOG.debug('Deleting backup %(id)s: container %(container)s, prefix '
                  '%(prefix)s.', {'id': backup['id'], 'container': container,
                                  'prefix': prefix})
        if container is None or prefix is None:
            return
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
        for name in names:
            concurrency.execute(self.delete_object, container, name)
            concurrency.cooperative_yield()
        # Temporary files a killed writer left (stores that have them).
        leftovers = getattr(getattr(self, 'store', None),
                            'delete_leftovers', None)
        if leftovers is not None:
            try:
                removed = concurrency.execute(leftovers, container, prefix)
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

    def import_record(self, backup, driver_info):
        """Refuse an imported record whose container is unsafe."""
        self.validate_container(backup['container'])
        return super().import_record(backup, driver_info)


def _read_exactly(reader, size):
    """Up to ``size`` bytes, fewer only at the end of the stream."""
    parts = []
    left = size
    while left > 0:
        data = reader.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b''.join(parts)


def utcnow_stamp():
    """The UTC timestamp upstream puts in object name prefixes."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%d%H%M%S')
