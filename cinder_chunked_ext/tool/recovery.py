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

"""Disaster recovery: backups read straight from a repository.

When Cinder's database (or the tool's catalog) is gone, every backup can
still be found and restored from what the repository holds: each
backup's ``<prefix>_metadata`` object names its id, its volume and its
parent.  :class:`RepositoryEnvironment` is an engine environment (see
:mod:`cinder_chunked_ext.engine.environment`) whose backup records are built
from those objects:

* :meth:`RepositoryEnvironment.load` reads one backup given its
  container and object prefix (as ``repository scan`` prints them);
* a parent is located by its id: objects named ``*_backup_<id>_metadata``
  are looked for in the parent's default container (for the POSIX
  driver ``id[0:2]/id[2:4]/id``), then in the child's container, then in
  the whole repository;
* :meth:`RepositoryEnvironment.scan` lists every backup found.  A POSIX
  repository (also an NFS share) is walked on disk; an object store such
  as S3 is listed container by container (the default container is the
  configured bucket).

Records live in memory only: ``save`` and ``refresh`` keep their fields
as set by the caller.
"""

import dataclasses
import os
import typing

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import manifest
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import posix as posix_store
from cinder_chunked_ext.tool import catalog
from cinder_chunked_ext.tool import records

METADATA_SUFFIX = '_metadata'


class NotInRepository(exception.BackupNotFound):
    """No backup matches what was asked in the repository."""

    message = 'Backup %(backup_id)s could not be found in the repository.'


class RepositoryBackup(records.DetachedRecord):
    """A backup record built from the backup's own metadata object."""

    FIELDS = catalog.CatalogBackup.FIELDS

    def __init__(self, **fields):
        for name in self.FIELDS:
            setattr(self, name, fields.pop(name, None))
        self.volume_size_bytes = fields.pop('volume_size_bytes', None)
        self.metadata = fields.pop('metadata', None)
        if fields:
            raise TypeError('unknown fields %s' % sorted(fields))

    def __repr__(self):
        return '<RepositoryBackup %s>' % self.id


def record_from_metadata(container, prefix, metadata):
    """A :class:`RepositoryBackup` for a parsed ``_metadata`` document."""
    end = max((obj.end for obj in metadata.objects), default=0)
    return RepositoryBackup(
        id=metadata.backup_id,
        volume_id=metadata.volume_id,
        container=container,
        service_metadata=prefix,
        parent_id=metadata.parent_id,
        size=catalog.size_gib(end) if end else None,
        status=catalog.AVAILABLE,
        display_name=metadata.backup_name,
        display_description=metadata.backup_description,
        created_at=metadata.created_at,
        object_count=len(metadata.objects),
        availability_zone=None,
        metadata=metadata,
    )


@dataclasses.dataclass
class ScanEntry:
    """One ``*_metadata`` object found in a repository."""

    container: str
    prefix: str
    record: typing.Optional[RepositoryBackup] = None
    error: typing.Optional[str] = None


class RepositoryEnvironment(object):
    """The engine's surroundings read from the repository alone.

    Create it, build the driver with a context that carries it, then
    :meth:`attach` the driver (the environment reads objects through it).
    """

    def __init__(self):
        self.driver = None
        self._records = {}
        self.volume_metadata = {}

    def attach(self, driver):
        self.driver = driver

    # -- the environment interface the engine calls ----------------------

    def get_backup(self, backup_id):
        record = self._records.get(backup_id)
        if record is None:
            record = self.locate(backup_id)
        return record

    def volume_size_gib(self, volume_id):
        # Only a backup asks for it, and this environment only restores.
        return None

    def notify_progress(self, backup, usage_info):
        return None

    def get_volume_metadata(self, volume_id):
        return None

    def put_volume_metadata(self, volume_id, json_metadata):
        self.volume_metadata[volume_id] = json_metadata

    # -- finding backups -------------------------------------------------

    def load(self, container, prefix):
        """The backup whose objects are ``<container>/<prefix>*``."""
        if prefix.endswith(METADATA_SUFFIX):
            prefix = prefix[:-len(METADATA_SUFFIX)]
        try:
            raw = self.driver._read_object_fully(
                container, manifest.metadata_name(prefix))
        except exception.ObjectNotFound:
            raise NotInRepository(
                backup_id='with prefix %s in container %s'
                          % (prefix, container))
        # An encrypted backup's metadata is opened with its key (which
        # also makes its data objects readable).
        raw = self.driver.encryption.open_document(
            {'id': prefix, 'service_metadata': prefix},
            manifest.metadata_name(prefix), raw, holds_objects=True)
        metadata = manifest.BackupMetadata.from_json(raw, backup_id=prefix)
        record = record_from_metadata(container, prefix, metadata)
        self._records[record.id] = record
        return record

    def locate(self, backup_id, near=None):
        """Find a backup by id (its parent's container first, see above)."""
        suffix = '_backup_%s%s' % (backup_id, METADATA_SUFFIX)
        tried = set()
        for container in self._likely_containers(backup_id, near):
            tried.add(container)
            for name in self._names(container):
                if name.endswith(suffix):
                    return self.load(container, name)
        for container, name in self._walk(skip=tried):
            if name.endswith(suffix):
                return self.load(container, name)
        raise NotInRepository(backup_id=backup_id)

    def _likely_containers(self, backup_id, near):
        found = []
        default = None
        try:
            default = self.driver.update_container_name(
                {'id': backup_id}, None)
        except (KeyError, TypeError, AttributeError):
            default = None
        for candidate in (default, near,
                          getattr(self.driver, 'backup_default_container',
                                  None)):
            if candidate and candidate not in found:
                found.append(candidate)
        # Parents are most often next to their children.
        for record in self._records.values():
            if record.container and record.container not in found:
                found.append(record.container)
        return found

    def _names(self, container):
        try:
            return self.driver.get_container_entries(container, '')
        except (exception.StoreError, exception.UnsafePath):
            return []

    def _posix_root(self):
        store = getattr(self.driver, 'store', None)
        if isinstance(store, posix_store.PosixStore):
            return store.root
        return None

    def _walk(self, containers=None, skip=()):
        """``(container, object name)`` of every ``*_metadata`` object."""
        root = self._posix_root()
        if root is not None and not containers:
            yield from self._walk_posix(root, skip)
            return
        if not containers:
            default = getattr(self.driver, 'backup_default_container', None)
            containers = [default] if default else []
        for container in containers:
            if container in skip:
                continue
            for name in self._names(container):
                if name.endswith(METADATA_SUFFIX):
                    yield container, name

    def _walk_posix(self, root, skip):
        if not os.path.isdir(root):
            raise exception.ObjectNotFound(
                reason='backup repository %s does not exist' % root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            container = os.path.relpath(dirpath, root)
            if container == os.curdir or container in skip:
                continue
            for name in sorted(filenames):
                if name.endswith(METADATA_SUFFIX) and not name.startswith('.'):
                    yield container, name

    def scan(self, containers=None):
        """Every backup found, as :class:`ScanEntry`, oldest first.

        A metadata object that cannot be read or parsed is listed with
        its error rather than stopping the scan.
        """
        entries = []
        for container, name in self._walk(containers):
            prefix = name[:-len(METADATA_SUFFIX)]
            entry = ScanEntry(container=container, prefix=prefix)
            try:
                entry.record = self.load(container, prefix)
            except cinder_compat.CinderException as e:
                entry.error = str(e)
            entries.append(entry)
        entries.sort(key=lambda e: (e.record.created_at if e.record else '',
                                    e.container, e.prefix))
        return entries


def volume_size_bytes(chain):
    """The size of the volume a chain restores, from its full backup.

    A full backup stores every byte of the volume, so its objects end
    where the volume ends; incremental backups of a grown volume are
    refused by the engine, so no layer may reach beyond.  ``chain`` is
    ``[requested, parent, ..., full]`` with ``metadata`` loaded.
    """
    base = chain[-1]
    # A full backup stores every byte: its objects tile the volume from
    # byte 0.  A gap or an overlap means tampered metadata, whose size
    # could not be trusted.
    size = 0
    for obj in sorted(base.metadata.objects, key=lambda o: o.offset):
        if obj.offset != size:
            raise exception.CorruptBackup(
                backup_id=base.id,
                reason='object %s of the full backup starts at byte %d: '
                       '%s' % (obj.name, obj.offset,
                               'it leaves a gap after byte %d' % size
                               if obj.offset > size else
                               'it overlaps the object before it, which '
                               'ends at byte %d' % size))
        size = obj.end
    for layer in chain:
        end = max((obj.end for obj in layer.metadata.objects), default=0)
        if end > size:
            raise exception.CorruptBackup(
                backup_id=layer.id,
                reason='its objects end at byte %d, beyond the %d bytes of '
                       'the volume its full backup %s holds'
                       % (end, size, base.id))
    return size
