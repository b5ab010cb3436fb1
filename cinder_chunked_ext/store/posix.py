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

"""Objects as files under one repository directory.

A container is a relative directory path below the repository root and
an object is a file in it, as upstream's POSIX driver lays them out.
Unlike upstream, every path is confined to the root: absolute container
names, ``..``, NUL bytes, over-long names and symbolic links that lead
out of the root are refused before anything is created or read.  Objects
are written to a temporary file, fsynced, renamed into place and the
directory fsynced, so a crash never leaves a partial object under its
final name; through a durability barrier
(:mod:`~cinder_chunked_ext.store.file_durability`) the syncs and renames
of a backup's objects happen together, in that same order.
"""

import errno
import io
import itertools
import os
import stat
import uuid

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import file_durability

DIR_MODE = stat.S_IRWXU | stat.S_IRWXG                      # 0770
FILE_MODE = (stat.S_IRUSR | stat.S_IWUSR |
             stat.S_IRGRP | stat.S_IWGRP)                   # 0660
TEMP_MARK = '.tmp-'

#: How a barrier makes a backup's files durable (see file_durability).
SYNC_EACH_FILE = 'fsync'
SYNC_FILE_SYSTEM = 'syncfs'
SYNC_MODES = (SYNC_FILE_SYSTEM, SYNC_EACH_FILE)
NAME_MAX = 255
# Container directories whose confinement is remembered at once.
CONFINED_CACHE_SIZE = 1024

_PERMANENT_ERRNOS = frozenset([
    errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT,
    errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EFBIG,
    errno.ELOOP])


def classify_os_error(err, what):
    """Turn an OSError into the store error an operator can act on."""
    reason = '%s: %s' % (what, os.strerror(err.errno) if err.errno
                         else err)
    if err.errno == errno.ENOENT:
        return exception.ObjectNotFound(reason=reason)
    if err.errno in _PERMANENT_ERRNOS:
        return exception.PermanentStoreError(reason=reason)
    return exception.StoreError(reason=reason)


def _check_component(part, whole):
    if part in ('', '.', '..'):
        raise exception.UnsafePath(
            path=whole, reason='empty, "." or ".." path component')
    if '\x00' in part:
        raise exception.UnsafePath(path=whole, reason='NUL byte')
    if len(os.fsencode(part)) > NAME_MAX:
        raise exception.UnsafePath(
            path=whole, reason='a component is longer than %d bytes'
                               % NAME_MAX)


def check_container_name(container):
    """Refuse container names that are not plain relative paths."""
    if not isinstance(container, str) or not container:
        raise exception.UnsafePath(path=container, reason='empty container')
    if container.startswith('/'):
        raise exception.UnsafePath(
            path=container, reason='absolute paths are not allowed')
    for part in container.split('/'):
        _check_component(part, container)


def check_object_name(name):
    """Refuse object names that are not one plain path component."""
    if not isinstance(name, str) or '/' in name:
        raise exception.UnsafePath(
            path=name, reason='object names cannot contain "/"')
    _check_component(name, name)
    if name.startswith(TEMP_MARK) or name.startswith('.'):
        raise exception.UnsafePath(
            path=name, reason='object names cannot start with "."')


def _identity(path):
    """``(device, inode)`` of the directory at ``path``, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return st.st_dev, st.st_ino


DirectorySyncs = file_durability.DirectorySyncs


class TempTags(object):
    """The 12 hex characters that name an object's temporary file.

    A random part drawn once (6 hex) and a counter (6 hex, wrapping):
    ``uuid4`` per object would cost a system call, and a round trip of
    the GIL on a worker thread, per object.  A temporary file is only
    ever created with ``O_EXCL``, so a tag that meets a leftover of
    another writer's is never a risk to data: the writer then takes a
    ``uuid4`` instead.  Make one per store, not at import (a forked
    process would share it).
    """

    def __init__(self):
        self._random = os.urandom(3).hex()
        self._counter = itertools.count()

    def next(self):
        return '%s%06x' % (self._random, next(self._counter) & 0xFFFFFF)


class _AtomicFileWriter(base.ObjectWriter):
    """Writes ``.tmp-<tag>-<name>``; commit renames it to ``<name>``.

    With a barrier, commit closes the file and hands it to the barrier,
    which syncs and renames it with the backup's other objects.
    """

    def __init__(self, directory, name, syncs=None, barrier=None,
                 tags=None):
        super().__init__()
        self._syncs = syncs or DirectorySyncs()
        self._barrier = barrier
        self._size = 0
        self._final = os.path.join(directory, name)
        self._dir = directory
        try:
            try:
                fd = self._create(directory, name, (tags or TempTags()).next())
            except FileExistsError:
                # Another writer's leftover under the same tag: very
                # unlikely (see TempTags), and never overwritten.
                fd = self._create(directory, name, uuid.uuid4().hex[:12])
        except OSError as e:
            raise classify_os_error(e, 'cannot create %s' % self._final)
        try:
            os.fchmod(fd, FILE_MODE)
        except OSError:
            pass
        # Not ``os.fdopen``: under eventlet's monkey-patching it makes a
        # GreenPipe, whose reads and writes are loops in Python (with a
        # stat per call), on worker threads that hold the GIL for them.
        self._file = io.open(fd, 'wb')

    def _create(self, directory, name, tag):
        self._temp = os.path.join(directory,
                                  '%s%s-%s' % (TEMP_MARK, tag, name))
        if len(os.fsencode(os.path.basename(self._temp))) > NAME_MAX:
            self._temp = os.path.join(directory,
                                      TEMP_MARK + uuid.uuid4().hex)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        return os.open(self._temp, flags, FILE_MODE)

    def _write(self, data):
        try:
            self._file.write(data)
        except OSError as e:
            raise classify_os_error(e, 'cannot write %s' % self._final)
        self._size += len(data)

    def _commit(self):
        if self._barrier is not None:
            try:
                self._file.close()
            except OSError as e:
                raise classify_os_error(e, 'cannot write %s' % self._final)
            self._barrier.add(self._temp, self._final, self._size)
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self._temp, self._final)
            self._syncs.after_rename(self._dir)
        except OSError as e:
            raise classify_os_error(e, 'cannot commit %s' % self._final)

    def _abort(self):
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self._temp)
        except OSError:
            pass


class _FileReader(base.ObjectReader):
    def __init__(self, path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise classify_os_error(e, 'cannot open %s' % path)
        self._path = path
        self._file = io.open(fd, 'rb')     # not a GreenPipe, see above

    def read(self, size=-1):
        try:
            return self._file.read(size)
        except OSError as e:
            raise classify_os_error(e, 'cannot read %s' % self._path)

    def close(self):
        self._file.close()


class PosixStore(base.ObjectStore):
    """Objects as files below ``root``."""

    # Commits are mostly fsync: several at once let the file system
    # write them in one journal commit.
    max_concurrent_writes = 16
    # A small object (an incremental's changed run) is a few system calls
    # and a short fsync: each of its steps takes the GIL back, so sixteen
    # at once mostly wait for each other.  Four keep a journaled disk's
    # commits grouped and leave the CPU to the work (1 GiB incremental,
    # 1,600 objects, eventlet, 2 cores: tmpfs 1.40 s and 2.0 CPU-s at 16,
    # 1.18 s and 1.7 CPU-s at 4; ext4 with a journal 1.9 s at 16, 1.6 to
    # 2.0 s at 4, 2.1 s at 2).
    max_concurrent_small_writes = 4
    # Writes go to the temporary file as they come.
    streams_writes = True

    def __init__(self, root, sync=SYNC_EACH_FILE):
        if not root:
            raise exception.ConfigNotFound(path='backup_posix_path')
        if sync not in SYNC_MODES:
            raise exception.InvalidConfigurationValue(
                option='posix_sync', value=sync)
        self.root = os.path.abspath(root)
        self.sync = sync
        self._directory_syncs = DirectorySyncs()
        self._temp_tags = TempTags()
        # Container directories proven inside the root: path -> identity.
        self._confined = {}

    def describe(self):
        return 'POSIX repository %s' % self.root

    def _real_root(self):
        return os.path.realpath(self.root)

    def _inside(self, path):
        real_root = self._real_root()
        real = os.path.realpath(path)
        return real == real_root or real.startswith(real_root + os.sep)

    def container_path(self, container):
        """The directory of ``container``, proven to be inside the root.

        Resolving every component of the path costs two ``realpath``
        walks (a dozen ``lstat`` calls); an incremental backup asks for
        it once per object.  So a directory proven inside is remembered
        by its identity (device and inode): a later call that finds the
        same directory at that path, through whatever links, is inside
        too, and one that finds another directory there (a component
        swapped for a link since) is resolved and checked again.
        """
        check_container_name(container)
        path = os.path.join(self.root, container)
        known = self._confined.get(path)
        if known is not None and known == _identity(path):
            return path
        if not self._inside(path):
            self._confined.pop(path, None)
            raise exception.UnsafePath(
                path=container,
                reason='it resolves outside the backup repository')
        identity = _identity(path)
        if identity is not None:
            if len(self._confined) >= CONFINED_CACHE_SIZE:
                self._confined.clear()
            self._confined[path] = identity
        return path

    def _object_path(self, container, name):
        check_object_name(name)
        return os.path.join(self.container_path(container), name)

    def put_container(self, container, create=True):
        path = self.container_path(container)
        if os.path.isdir(path):
            return
        if not create:
            raise exception.ObjectNotFound(
                reason='backup directory %s does not exist and '
                       'backup_create_containers is False' % container)
        self._make_dirs(container)

    def _make_dirs(self, container):
        """Create the container's directories; make each new entry durable.

        A directory a backup creates (``xx``, ``xx/yy``, ``xx/yy/<id>``)
        is an entry in its parent: until the parent is synced, a crash
        can lose it, and with it every object of a backup already
        reported available.  Each parent that gained an entry is synced
        before the backup writes anything into it.
        """
        created = []
        if not os.path.isdir(self.root):
            try:
                os.makedirs(self.root)
                created.append(self.root)
            except FileExistsError:
                pass
            except OSError as e:
                raise classify_os_error(e, 'cannot create %s' % self.root)
        current = self.root
        for part in container.split('/'):
            current = os.path.join(current, part)
            try:
                os.mkdir(current, DIR_MODE)
                os.chmod(current, DIR_MODE)
                created.append(current)
            except FileExistsError:
                pass
            except OSError as e:
                raise classify_os_error(e, 'cannot create %s' % current)
            # A link planted while we walked must not lead us out.
            if not self._inside(current):
                raise exception.UnsafePath(
                    path=container,
                    reason='it resolves outside the backup repository')
        for parent in sorted({os.path.dirname(path) for path in created},
                             key=len, reverse=True):
            try:
                file_durability.fsync_directory(parent)
            except OSError as e:
                raise classify_os_error(e, 'cannot sync %s' % parent)

    def _listing(self, container, missing_ok=False):
        """``(path, sorted names)`` of a container's directory."""
        path = self.container_path(container)
        try:
            return path, sorted(os.listdir(path))
        except FileNotFoundError as e:
            if missing_ok:
                return path, []
            raise classify_os_error(e, 'cannot list %s' % container)
        except OSError as e:
            raise classify_os_error(e, 'cannot list %s' % container)

    def list_objects(self, container, prefix):
        _path, names = self._listing(container)
        return [n for n in names
                if n.startswith(prefix) and not n.startswith('.')]

    def open_writer(self, container, name, extra_metadata=None,
                    barrier=None):
        path = self._object_path(container, name)
        return _AtomicFileWriter(os.path.dirname(path), name,
                                 self._directory_syncs, barrier,
                                 self._temp_tags)

    def durability_barrier(self):
        return file_durability.PendingFiles(
            classify_os_error,
            whole_file_system=self.sync == SYNC_FILE_SYSTEM)

    def open_reader(self, container, name, extra_metadata=None):
        return _FileReader(self._object_path(container, name))

    def delete_object(self, container, name):
        path = self._object_path(container, name)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise classify_os_error(e, 'cannot delete %s' % path)

    def delete_leftovers(self, container, prefix, owns=None):
        """Remove the temporary files of unfinished writes of ``prefix*``.

        A writer stopped before its commit (SIGKILL, a crash, a power
        loss) leaves its ``.tmp-<id>-<name>`` file behind; deleting the
        backup removes them with its objects.  ``owns(name)``, when
        given, must also accept the object a file was for (the engine
        passes the backup's own object names).  An empty prefix, which
        would take every writer's files, is refused.  Returns the names
        removed.
        """
        if not prefix:
            raise exception.UnsafePrefix(
                backup_id='?', prefix=prefix,
                reason='an empty prefix names every object of the '
                       'container; nothing was deleted')
        path, names = self._listing(container, missing_ok=True)
        removed = []
        for name in names:
            target = self.unfinished_object_name(name)
            if target is None or not target.startswith(prefix) or (
                    owns is not None and not owns(target)):
                continue
            try:
                os.remove(os.path.join(path, name))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise classify_os_error(e, 'cannot delete %s' % name)
            removed.append(name)
        return removed

    def list_object_info(self, container, prefix=''):
        path = self.container_path(container)
        found = []
        for name in self.list_objects(container, prefix):
            try:
                st = os.stat(os.path.join(path, name), follow_symlinks=False)
            except FileNotFoundError:
                continue    # deleted since it was listed
            except OSError as e:
                raise classify_os_error(e, 'cannot stat %s' % name)
            if stat.S_ISREG(st.st_mode):
                found.append(base.ObjectInfo(name=name, size=st.st_size,
                                             modified=st.st_mtime))
        return found

    def list_containers(self):
        """Every directory below the root that holds a file.

        Directories whose name starts with ``.`` are skipped, and so are
        the files at the root itself (the tool's catalog lives there).
        """
        if not os.path.isdir(self.root):
            raise exception.ObjectNotFound(
                reason='backup repository %s does not exist' % self.root)
        containers = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            container = os.path.relpath(dirpath, self.root)
            if container != os.curdir and filenames:
                containers.append(container.replace(os.sep, '/'))
        return containers

    @staticmethod
    def unfinished_object_name(temp_name):
        """The object a ``.tmp-<12 hex>-<name>`` file was for, or None."""
        if not temp_name.startswith(TEMP_MARK):
            return None
        rest = temp_name[len(TEMP_MARK):]
        if rest[12:13] != '-':
            return None     # a name too long kept only the uuid
        return rest[13:]

    def list_unfinished(self, container):
        path, names = self._listing(container, missing_ok=True)
        found = []
        for temp in (n for n in names if n.startswith(TEMP_MARK)):
            try:
                st = os.stat(os.path.join(path, temp), follow_symlinks=False)
            except FileNotFoundError:
                continue    # committed or aborted since it was listed
            except OSError as e:
                raise classify_os_error(e, 'cannot stat %s' % temp)
            found.append(base.ObjectInfo(
                name=self.unfinished_object_name(temp) or temp,
                size=st.st_size, modified=st.st_mtime, handle=temp))
        return found

    def delete_unfinished(self, container, info):
        temp = info.handle
        if not temp or not temp.startswith(TEMP_MARK) or '/' in temp:
            raise exception.UnsafePath(
                path=temp, reason='not a temporary file of this store')
        path = os.path.join(self.container_path(container), temp)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise classify_os_error(e, 'cannot delete %s' % path)

    def object_size(self, container, name):
        path = self._object_path(container, name)
        try:
            return os.stat(path, follow_symlinks=False).st_size
        except OSError as e:
            raise classify_os_error(e, 'cannot stat %s' % path)

    def check(self):
        if os.path.isdir(self.root):
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise exception.PermanentStoreError(
                    reason='backup repository %s is not writable'
                           % self.root)
        elif os.path.exists(self.root):
            raise exception.StoreConfigurationError(
                reason='backup_posix_path %s is not a directory'
                       % self.root)
