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

"""The standalone tool's database of backups: one SQLite file.

Inside ``cinder-backup`` the engine keeps its records in Cinder's
database.  The command line keeps them here instead: a ``backups`` table
with the fields of Cinder's backup object that the engine reads and
writes (id, volume_id, container, service_metadata, parent_id, size in
GiB, status, display_name, display_description, created_at,
object_count, availability_zone) plus what the tool needs to restore
without asking (the volume's exact size in bytes, its source path, the
driver, why a backup failed), and a ``volumes`` table (size and volume
metadata).

:class:`CatalogEnvironment` is the environment the engine asks for its
surroundings (see :mod:`cinder_chunked_ext.engine.environment`), and
:class:`CatalogBackup` behaves like Cinder's ``objects.Backup`` for it:
``save()`` writes the record, ``refresh()`` re-reads it (so a status set
by another process, such as ``deleting``, is seen by a running backup),
``as_read_deleted()`` and item access work as the engine expects.
"""

import contextlib
import datetime
import math
import os
import sqlite3
import uuid

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks

GiB = 1024 ** 3
SCHEMA_VERSION = 1
#: The shortest backup ID prefix accepted for an ID.
MIN_PREFIX = 4

# Backup statuses, spelled as Cinder's objects.fields.BackupStatus.
CREATING = 'creating'
AVAILABLE = 'available'
ERROR = 'error'
DELETING = 'deleting'
DELETED = 'deleted'
RESTORING = 'restoring'

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    volume_id TEXT NOT NULL,
    container TEXT,
    service_metadata TEXT,
    parent_id TEXT,
    size INTEGER NOT NULL,
    status TEXT NOT NULL,
    display_name TEXT,
    display_description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    object_count INTEGER NOT NULL DEFAULT 0,
    availability_zone TEXT,
    volume_size_bytes INTEGER,
    source_path TEXT,
    driver TEXT,
    fail_reason TEXT
);
CREATE INDEX IF NOT EXISTS backups_volume ON backups (volume_id);
CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent_id);
CREATE TABLE IF NOT EXISTS volumes (
    id TEXT PRIMARY KEY,
    path TEXT,
    size_bytes INTEGER,
    size_gib INTEGER,
    metadata TEXT
);
"""


class CatalogError(exception.InvalidConfigurationValue):
    """The catalog file cannot be used."""

    message = 'Backup catalog %(path)s cannot be used: %(reason)s'


def size_gib(size_bytes):
    """A volume size in GiB as Cinder counts it: rounded up, at least 1."""
    return max(1, math.ceil(size_bytes / GiB))


def volume_id_for_path(path):
    """A stable volume id for a file or device: uuid5 of its real path."""
    real = os.path.realpath(path)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, 'file://' + real))


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0)


def _parse_time(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text)


def _format_time(value):
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value.isoformat()


class CatalogBackup(object):
    """A backup record, with the fields and methods the engine uses."""

    #: The fields of Cinder's backup object the engine reads or writes.
    FIELDS = ('id', 'volume_id', 'container', 'service_metadata',
              'parent_id', 'size', 'status', 'display_name',
              'display_description', 'created_at', 'object_count',
              'availability_zone')
    #: What the tool keeps besides.
    EXTRA_FIELDS = ('updated_at', 'volume_size_bytes', 'source_path',
                    'driver', 'fail_reason')
    COLUMNS = FIELDS + EXTRA_FIELDS

    def __init__(self, catalog, row):
        self._catalog = catalog
        self._load(row)

    def _load(self, row):
        for name in self.COLUMNS:
            value = row[name]
            if name in ('created_at', 'updated_at'):
                value = _parse_time(value)
            setattr(self, name, value)

    def __getitem__(self, key):
        return getattr(self, key)

    def __repr__(self):
        return '<CatalogBackup %s %s>' % (self.id, self.status)

    @property
    def deleted(self):
        return self.status == DELETED

    @property
    def read_only(self):
        """True when this process cannot write the catalog."""
        return not self._catalog.writable()

    def save(self):
        """Write every field back to the catalog."""
        self.updated_at = utcnow()
        self._catalog._update(self)

    def refresh(self):
        """Re-read the record; a record removed meanwhile reads deleted."""
        row = self._catalog._row(self.id)
        if row is None:
            self.status = DELETED
        else:
            self._load(row)

    @contextlib.contextmanager
    def as_read_deleted(self):
        # Deleted records stay readable: refresh() reports them deleted.
        yield self

    def to_dict(self):
        return {name: getattr(self, name) for name in self.COLUMNS}


class Catalog(object):
    """The SQLite file that records backups, parent links and volumes.

    :param path: the database file.
    :param create: create the file (and its directory) when missing.
        When False a missing file reads as an empty catalog and nothing
        is created, so read-only commands leave no trace.
    """

    def __init__(self, path, create=True):
        self.path = path
        self._lock = locks.native_rlock()
        self.exists = os.path.exists(path)
        if not self.exists and not create:
            target = ':memory:'
        else:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise CatalogError(path=path, reason=e.strerror or str(e))
            target = path
        try:
            self._conn = sqlite3.connect(target, timeout=30,
                                         check_same_thread=False,
                                         isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._prepare()
        except sqlite3.DatabaseError as e:
            raise CatalogError(path=path, reason=str(e))
        self.exists = target != ':memory:'

    def _prepare(self):
        version = self._conn.execute('PRAGMA user_version').fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(
                path=self.path,
                reason='it was written by a newer version (schema %d, this '
                       'version knows %d)' % (version, SCHEMA_VERSION))
        if version == 0:
            tables = self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND "
                "name NOT LIKE 'sqlite_%'").fetchall()
            if tables and 'backups' not in {t[0] for t in tables}:
                raise CatalogError(
                    path=self.path,
                    reason='it is an SQLite database but not a backup '
                           'catalog')
            with self._transaction() as conn:
                for statement in _SCHEMA.split(';'):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute('PRAGMA user_version = %d' % SCHEMA_VERSION)

    def close(self):
        self._conn.close()

    def writable(self):
        """Whether this process may write the catalog file.

        SQLite also creates its journal beside the file, so the directory
        must be writable too.  A catalog not created yet is writable.
        """
        if not self.exists:
            return True
        directory = os.path.dirname(os.path.abspath(self.path))
        return (os.access(self.path, os.W_OK) and
                os.access(directory, os.W_OK))

    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._conn.execute('BEGIN IMMEDIATE')
            try:
                yield self._conn
                self._conn.execute('COMMIT')
            except BaseException:
                # SQLite has already rolled back after some errors (a
                # full disk): a second ROLLBACK would hide the first error.
                if self._conn.in_transaction:
                    self._conn.execute('ROLLBACK')
                raise

    def _query(self, sql, args=()):
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as e:
                raise CatalogError(path=self.path, reason=str(e))

    def _row(self, backup_id):
        rows = self._query('SELECT * FROM backups WHERE id = ?', (backup_id,))
        return rows[0] if rows else None

    def _update(self, backup):
        values = [_format_time(getattr(backup, name)) if name.endswith('_at')
                  else getattr(backup, name)
                  for name in CatalogBackup.COLUMNS if name != 'id']
        assignments = ', '.join('%s = ?' % name
                                for name in CatalogBackup.COLUMNS
                                if name != 'id')
        with self._transaction() as conn:
            # A record removed meanwhile (deleted) is not brought back.
            conn.execute('UPDATE backups SET %s WHERE id = ?' % assignments,
                         values + [backup.id])

    # -- backups -------------------------------------------------------

    def new_backup(self, volume_id, size, backup_id=None, parent_id=None,
                   container=None, display_name=None,
                   display_description=None, availability_zone=None,
                   volume_size_bytes=None, source_path=None, driver=None):
        """Record a new backup in status ``creating`` and return it."""
        backup_id = backup_id or str(uuid.uuid4())
        now = _format_time(utcnow())
        with self._transaction() as conn:
            conn.execute(
                'INSERT INTO backups (id, volume_id, container, parent_id, '
                'size, status, display_name, display_description, '
                'created_at, updated_at, availability_zone, '
                'volume_size_bytes, source_path, driver) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (backup_id, volume_id, container, parent_id, size, CREATING,
                 display_name, display_description, now, now,
                 availability_zone, volume_size_bytes, source_path, driver))
        return self.get(backup_id)

    def add_record(self, **fields):
        """Record a backup with the fields given, as they are.

        For backups found in a repository (``repository import``): the
        record is written with its own creation time and status.
        """
        unknown = set(fields) - set(CatalogBackup.COLUMNS)
        if unknown:
            raise TypeError('unknown fields %s' % sorted(unknown))
        fields.setdefault('updated_at', utcnow())
        names = [name for name in CatalogBackup.COLUMNS if name in fields]
        values = [_format_time(fields[name]) if name.endswith('_at')
                  else fields[name] for name in names]
        with self._transaction() as conn:
            conn.execute('INSERT INTO backups (%s) VALUES (%s)'
                         % (', '.join(names), ', '.join('?' * len(names))),
                         values)
        return self.get(fields['id'])

    def get(self, backup_id):
        """The record of ``backup_id``; BackupNotFound when unknown."""
        row = self._row(backup_id)
        if row is None:
            raise exception.BackupNotFound(backup_id=backup_id)
        return CatalogBackup(self, row)

    def resolve(self, id_or_prefix):
        """The record of a full id or of a unique prefix of one."""
        row = self._row(id_or_prefix)
        if row is not None:
            return CatalogBackup(self, row)
        if len(id_or_prefix) >= MIN_PREFIX:
            pattern = (id_or_prefix.replace('\\', '\\\\')
                       .replace('%', '\\%').replace('_', '\\_') + '%')
            rows = self._query("SELECT * FROM backups WHERE id LIKE ? "
                               "ESCAPE '\\' ORDER BY seq", (pattern,))
            if len(rows) == 1:
                return CatalogBackup(self, rows[0])
            if len(rows) > 1:
                raise AmbiguousBackupId(
                    prefix=id_or_prefix,
                    ids=', '.join(r['id'] for r in rows))
        raise exception.BackupNotFound(backup_id=id_or_prefix)

    def list(self, volume_id=None, status=None):
        """Records, oldest first."""
        clauses = []
        args = []
        if volume_id is not None:
            clauses.append('volume_id = ?')
            args.append(volume_id)
        if status is not None:
            clauses.append('status = ?')
            args.append(status)
        where = (' WHERE ' + ' AND '.join(clauses)) if clauses else ''
        rows = self._query('SELECT * FROM backups%s ORDER BY seq' % where,
                           args)
        return [CatalogBackup(self, row) for row in rows]

    def latest_available(self, volume_id):
        """The newest available backup of a volume, or None."""
        rows = self._query('SELECT * FROM backups WHERE volume_id = ? AND '
                           'status = ? ORDER BY seq DESC LIMIT 1',
                           (volume_id, AVAILABLE))
        return CatalogBackup(self, rows[0]) if rows else None

    def children(self, backup_id):
        """Records whose parent is ``backup_id``."""
        rows = self._query('SELECT * FROM backups WHERE parent_id = ? '
                           'ORDER BY seq', (backup_id,))
        return [CatalogBackup(self, row) for row in rows]

    def remove(self, backup_id):
        with self._transaction() as conn:
            conn.execute('DELETE FROM backups WHERE id = ?', (backup_id,))

    # -- volumes ---------------------------------------------------------

    def put_volume(self, volume_id, path, size_bytes):
        with self._transaction() as conn:
            conn.execute(
                'INSERT INTO volumes (id, path, size_bytes, size_gib) '
                'VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET '
                'path = excluded.path, size_bytes = excluded.size_bytes, '
                'size_gib = excluded.size_gib',
                (volume_id, path, size_bytes, size_gib(size_bytes)))

    def _volume(self, volume_id):
        rows = self._query('SELECT * FROM volumes WHERE id = ?', (volume_id,))
        return rows[0] if rows else None

    def volume_size_gib(self, volume_id):
        row = self._volume(volume_id)
        return row['size_gib'] if row is not None else None

    def volume_metadata(self, volume_id):
        row = self._volume(volume_id)
        return row['metadata'] if row is not None else None

    def put_volume_metadata(self, volume_id, json_metadata):
        with self._transaction() as conn:
            conn.execute(
                'INSERT INTO volumes (id, metadata) VALUES (?, ?) '
                'ON CONFLICT (id) DO UPDATE SET metadata = excluded.metadata',
                (volume_id, json_metadata))


class AmbiguousBackupId(exception.InvalidBackup):
    """A prefix matches more than one backup."""

    message = 'Invalid backup: %(prefix)s matches several backups: %(ids)s'


class CatalogEnvironment(object):
    """The engine's surroundings, backed by a :class:`Catalog`."""

    def __init__(self, catalog, progress_listener=None):
        self.catalog = catalog
        self.progress_listener = progress_listener

    def get_backup(self, backup_id):
        return self.catalog.get(backup_id)

    def volume_size_gib(self, volume_id):
        return self.catalog.volume_size_gib(volume_id)

    def notify_progress(self, backup, usage_info):
        if self.progress_listener is not None:
            self.progress_listener(backup, usage_info)

    def get_volume_metadata(self, volume_id):
        return self.catalog.volume_metadata(volume_id)

    def put_volume_metadata(self, volume_id, json_metadata):
        self.catalog.put_volume_metadata(volume_id, json_metadata)


class Context(object):
    """The request context the standalone tool gives the drivers."""

    def __init__(self, environment, password_keys=None):
        self.chunked_environment = environment
        #: The key source of --password-file: the drivers encrypt with it.
        self.password_keys = password_keys
        self.project_id = None
        self.user_id = None
        self.is_admin = True
