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

"""The engine's options, and the settings it reads from them once.

Upstream's options keep their names, types and defaults in
``[DEFAULT]``; the package's own are in ``[chunked_backup]``.  A driver
reads them once into :class:`EngineSettings`, the small public object
the engine's modules read (never the global configuration per chunk).
"""

import dataclasses
import typing

from oslo_config import cfg

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.encryption import backups as encryption
from cinder_chunked_ext.engine import compression
from cinder_chunked_ext.engine import concurrency

MiB = 1024 ** 2

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
               help='Worker threads that hash, compress and decompress, '
                    'shared by every backup and restore the process runs '
                    'at once (cinder-backup runs up to '
                    'backup_max_operations of them). 0 means one per CPU '
                    'available to the service.'),
    cfg.IntOpt('io_threads',
               default=16,
               min=1,
               help='Threads that write, upload, commit and sync objects, '
                    'shared by every backup and restore the process runs '
                    'at once. Under eventlet these are the tasks that may '
                    'occupy eventlet\'s native thread pool at the same '
                    'time besides the workers.'),
    cfg.IntOpt('max_bytes_in_flight',
               default=128 * MiB,
               min=8 * MiB,
               help='Upper bound, in bytes, of the volume data that all the '
                    'backups and restores of the process together hold in '
                    'memory at once: pieces read and not yet written, '
                    'their compressed or decompressed forms, and objects '
                    'waiting for their upload. Each running operation may '
                    'hold an equal part of it, and never less than the few '
                    'pieces of 4 MiB it needs to make progress (about 24 '
                    'MiB), so the bound holds up to about five operations '
                    'at once per 128 MiB. The interpreter, the libraries '
                    'and the codecs\' state come on top.'),
    cfg.BoolOpt('verify_checksums_on_restore',
                default=True,
                help='Check every object of a restore against what was '
                     'recorded at backup time (its length and MD5, or the '
                     'SHA-256 of its hash blocks) before its data is '
                     'written. Over an existing volume every object the '
                     'restore needs is checked before the first write, so '
                     'a damaged backup leaves the volume untouched; onto a '
                     'new volume each object is checked before its own '
                     'write. The objects of encrypted backups are always '
                     'authenticated before the first write, whatever this '
                     'says.'),
    cfg.BoolOpt('restore_changed_blocks_only',
                default=True,
                help='Over an existing volume, read and hash the volume '
                     'before the first write and restore only the hash '
                     'blocks that differ from the backup (by the restored '
                     'backup\'s sha256file); objects none of whose blocks '
                     'differ are neither read nor checked. The result is '
                     'the same volume, byte for byte. It costs one read '
                     'of the volume and saves the writes of every block '
                     'that is already right: a restore over the volume the '
                     'backup was taken from (a rollback) writes what '
                     'changed since. Volumes read through something other '
                     'than a file or block device of their own (an RBD '
                     'image handle) are written in full, as with False.'),
    cfg.StrOpt('restore_spool_dir',
               help='A local directory where a restore keeps a copy of the '
                    'stored bytes of each object its check pass reads '
                    '(over an existing volume, and for any encrypted '
                    'backup), so that its write pass reads the copy '
                    'instead of fetching the object again: one GET per '
                    'object from S3 or Swift instead of two. The write '
                    'pass proves the copy again as it reads it (CRC-32 or '
                    'AES-GCM), so a copy changed on the local disk is '
                    'refused, never written to the volume. Each restore '
                    'makes a directory of its own under this one (mode '
                    '0700) and removes it when it ends. Unset (the '
                    'default): no copy, every object is read twice. On '
                    'POSIX and NFS the second read comes from the page '
                    'cache or the share: leave it unset there.'),
    cfg.IntOpt('restore_spool_max_mib',
               default=10240,
               min=1,
               help='Most MiB that the restores of this process keep in '
                    'restore_spool_dir at once, all of them together. An '
                    'object that would pass it is not kept, and is '
                    'fetched again by the write pass.'),
    cfg.IntOpt('full_backup_object_bytes',
               default=16 * MiB,
               min=0,
               help='Largest object, in bytes, that a full backup writes '
                    '(rounded down to whole hash blocks, and never more '
                    'than the chunk size). Smaller objects let a restore '
                    'decompress several at once and bound the memory of '
                    'any restore, ours or upstream Cinder\'s. 0 means one '
                    'object per chunk, as upstream Cinder writes them.'),
    cfg.IntOpt('malloc_arena_max',
               default=2,
               min=0,
               help='Malloc arenas the service process may use (glibc\'s '
                    'M_ARENA_MAX), set when the first backup or restore '
                    'starts. Under eventlet the data passes through many '
                    'native threads, and with one arena per thread freed '
                    'buffers keep about 100 MB more resident. The limit '
                    'is process-wide: it applies to everything in the '
                    'cinder-backup process until it exits. 0 leaves '
                    'the C library\'s default.'),
    cfg.IntOpt('malloc_mmap_threshold',
               default=8 * MiB,
               min=0,
               help='Size in bytes from which glibc gives a buffer a '
                    'memory mapping of its own, returned to the system '
                    'when freed (glibc\'s M_MMAP_THRESHOLD), set when '
                    'the first backup or restore starts. Left to glibc, '
                    'the threshold rises after the first large buffer is '
                    'freed, and the 16 MiB objects of full backups then '
                    'stay resident after use: about 50 MB more at the '
                    'peak. The setting is process-wide: it applies to '
                    'everything in the cinder-backup process until it '
                    'exits. 0 leaves the C library\'s sliding threshold.'),
    cfg.StrOpt('encryption',
               default=encryption.NONE,
               ignore_case=True,
               choices=encryption.CHOICES,
               help='Client-side encryption of new backups. "none" writes '
                    'the repository format of upstream Cinder, byte for '
                    'byte. "aes-256-gcm" encrypts every object (after '
                    'compression) and the two documents of each backup '
                    'with a data key of its own, kept by the key manager '
                    'configured in [key_manager] (castellan; Barbican in '
                    'production); upstream Cinder refuses to restore such '
                    'backups. Backups already made are read whatever this '
                    'says.'),
]

PIPELINE_GROUP = 'chunked_backup'

CONF = cfg.CONF
cinder_compat.register_common_opts(CONF, common_opts)
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
    io_threads: int = 16
    full_backup_object_bytes: int = 0
    malloc_arena_max: int = 0
    malloc_mmap_threshold: int = 0
    encryption: str = encryption.NONE
    restore_changed_blocks_only: bool = True
    restore_spool_dir: typing.Optional[str] = None
    restore_spool_max_mib: int = 10240

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
            io_threads=group.io_threads,
            full_backup_object_bytes=group.full_backup_object_bytes,
            malloc_arena_max=group.malloc_arena_max,
            malloc_mmap_threshold=group.malloc_mmap_threshold,
            encryption=group.encryption.lower(),
            restore_changed_blocks_only=group.restore_changed_blocks_only,
            restore_spool_dir=group.restore_spool_dir or None,
            restore_spool_max_mib=group.restore_spool_max_mib,
        )
