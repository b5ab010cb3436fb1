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

"""A backup's records around its data path: what it settles and leaves.

Before the first read: the checks against the parent (an incremental
backup needs the same hash block size and a volume that did not grow),
the container (named by the driver, validated and created), the object
prefix recorded in the backup's ``service_metadata``, and the metadata
document the data path fills.  After the last object: the volume's own
metadata, then the ``_sha256file`` and last the ``_metadata`` that makes
the backup complete.  The data path itself is
:mod:`cinder_chunked_ext.engine.backup`.
"""

import dataclasses
import typing

from oslo_log import log as logging

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext import exception

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3


@dataclasses.dataclass
class Target:
    """Where a backup goes and what it starts from."""

    container: str
    prefix: str
    extra_metadata: typing.Any
    metadata: manifest.BackupMetadata
    volume_size_bytes: int


def parent_hashes(driver, backup, block_size):
    """The parent's block hashes, or None for a full backup."""
    if not backup.parent_id:
        return None
    parent = driver.env.get_backup(backup.parent_id)
    shafile = driver._read_sha256file(parent)
    if shafile.chunk_size != block_size:
        raise exception.InvalidBackup(
            reason='Hash block size has changed since the last backup. '
                   'New hash block size: %(new)s. Old hash block '
                   'size: %(old)s. Do a full backup.'
                   % {'new': block_size, 'old': shafile.chunk_size})
    if (backup.size or 0) > (parent.size or 0):
        raise exception.InvalidBackup(
            reason='Volume size increased since the last backup. '
                   'Do a full backup.')
    return shafile.sha256s


def create_container(driver, backup):
    """Name, validate and create the backup's container; return it."""
    new_container = driver.update_container_name(backup, backup.container)
    if new_container:
        if new_container != backup.container:
            backup.container = new_container
    elif backup.container is None:
        backup.container = driver.backup_default_container
    driver.validate_container(backup.container)
    backup.save()
    concurrency.execute(driver.put_container, backup.container)
    return backup.container


def prepare(driver, backup):
    """Create the container, record the prefix; return the :class:`Target`."""
    size_gib = driver.env.volume_size_gib(backup.volume_id)
    if size_gib is None or size_gib <= 0:
        raise exception.InvalidVolume(
            reason='volume size %s is invalid.' % size_gib)
    container = create_container(driver, backup)
    prefix = driver._generate_object_name_prefix(backup)
    backup.service_metadata = prefix
    backup.save()
    driver._bind_prefix(backup, prefix)
    volume = {'id': backup.volume_id, 'size': size_gib}
    extra_metadata = driver.get_extra_metadata(backup, volume)
    metadata = manifest.BackupMetadata(
        backup_id=backup.id, volume_id=backup.volume_id,
        backup_name=backup.display_name,
        backup_description=backup.display_description,
        created_at=str(backup.created_at), parent_id=backup.parent_id,
        extra_metadata=extra_metadata)
    LOG.debug('Backup %(id)s: prefix %(prefix)s, volume size %(size)d '
              'GiB, availability zone %(az)s.',
              {'id': backup.id, 'prefix': prefix, 'size': size_gib,
               'az': driver.az})
    return Target(container=container, prefix=prefix,
                  extra_metadata=extra_metadata, metadata=metadata,
                  volume_size_bytes=size_gib * GiB)


def add_volume_metadata(driver, backup, metadata):
    """Record the volume's metadata; on failure delete the backup."""
    volume_id = backup.volume_id
    try:
        json_meta = driver.get_metadata(volume_id)
    except Exception:
        LOG.exception('Backup of the metadata of volume %s failed.',
                      volume_id)
        driver.delete_backup(backup)
        raise
    if json_meta:
        metadata.volume_meta = json_meta


def finalize(driver, backup, container, metadata, block_size, hashes,
             object_count):
    """Write the sha256file, then the metadata that completes the backup."""
    sha256file = manifest.Sha256File(
        backup_id=backup.id, volume_id=backup.volume_id,
        backup_name=backup.display_name,
        backup_description=backup.display_description,
        created_at=str(backup.created_at),
        chunk_size=block_size, sha256s=hashes)
    driver._write_document(backup, container,
                           driver._sha256_filename(backup),
                           sha256file.to_json_pieces())
    # Encoded on a worker thread, as the sha256file's pieces are (as
    # they are written): thousands of entries are too long a hold on
    # the green threads of the service.
    driver._write_document(backup, container,
                           driver._metadata_filename(backup),
                           concurrency.execute(metadata.to_json))
    backup.object_count = object_count
    backup.save()
    LOG.info('Backup %(id)s finished: %(count)d objects.',
             {'id': backup.id, 'count': object_count})
