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

"""Files made durable: directory syncs shared, one barrier per backup.

:class:`DirectorySyncs` shares the fsync of a directory between the
objects renamed into it at about the same time.  :class:`PendingFiles`
is one durability barrier for the files of one backup.

A file written through the barrier is closed at its commit and stays
under its temporary name (``.tmp-<id>-<name>``).  ``settle`` then, in
this order:

1. makes every such file durable: one ``syncfs`` of each file system
   they are on (``whole_file_system``, the POSIX driver's default where
   the kernel reports write-back errors through it, Linux 5.8 and
   later), or an fsync of each, many at once (their flushes share
   journal commits instead of paying one each);
2. renames each to its final name (no partial file is ever under a
   final name: what is renamed has been synced);
3. fsyncs each directory that gained a name, once.

Only after that does the engine write the backup's sha256file and
metadata, each durable on its own.  A crash before the metadata leaves
temporary files or unlisted objects, never a backup that looks complete
and is not; deleting the backup or ``repository check`` removes them.
"""

import ctypes
import functools
import os

from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base

#: The first Linux whose syncfs(2) returns write-back errors (before, it
#: returned 0 even when writing a file's data back had failed).
SYNCFS_ERRORS_SINCE = (5, 8)


def _fsync(path, flags):
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path):
    """fsync the directory at ``path`` (a link to one is followed)."""
    _fsync(path, os.O_DIRECTORY)


def fsync_file(path):
    """fsync the file at ``path``, never through a symbolic link."""
    _fsync(path, os.O_NOFOLLOW)


def _kernel_version(release):
    """``(major, minor)`` of a ``uname`` release string, or None."""
    parts = release.split('.')
    try:
        return int(parts[0]), int(''.join(
            c for c in parts[1].split('-')[0] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _libc_syncfs():
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


def syncfs_supported(release=None):
    """True when syncfs(2) can stand in for an fsync of each file.

    It needs the C library's ``syncfs`` and a kernel that reports
    write-back errors through it (Linux 5.8 and later).
    """
    version = _kernel_version(release or os.uname().release)
    return (version is not None and version >= SYNCFS_ERRORS_SINCE and
            _libc_syncfs() is not None)


def syncfs(path):
    """Write back and sync the whole file system holding directory ``path``.

    Raises OSError as an fsync would (EIO when some data could not be
    written back since the file system was last synced).
    """
    func = _libc_syncfs()
    if func is None:
        raise OSError(0, 'syncfs is not available')
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if func(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), path)
    finally:
        os.close(fd)


class DirectorySyncs(object):
    """Directory fsyncs shared by the commits that happen together.

    A commit renames its file into place and then needs the directory
    synced.  When several commit at once, one fsync of the directory
    started after a rename makes that rename durable as well as any
    other: :meth:`after_rename` returns once a sync that began after the
    caller's rename has finished, running one itself only when none has.
    Each commit still returns only once its name is on disk.
    """

    def __init__(self):
        self._lock = locks.native_lock()
        self._renames = {}      # directory -> renames counted so far
        self._synced = {}       # directory -> renames covered by a sync
        self._sync_locks = {}

    def after_rename(self, directory):
        with self._lock:
            mine = self._renames.get(directory, 0) + 1
            self._renames[directory] = mine
            if directory not in self._sync_locks:
                self._sync_locks[directory] = locks.native_lock()
            sync_lock = self._sync_locks[directory]
        with sync_lock:
            with self._lock:
                if self._synced.get(directory, 0) >= mine:
                    return
                covered = self._renames[directory]
            fsync_directory(directory)
            with self._lock:
                self._synced[directory] = max(
                    self._synced.get(directory, 0), covered)


class PendingFiles(base.DurabilityBarrier):
    """Files closed and not yet synced nor renamed, settled together.

    ``classify(error, what)`` turns an OSError into the store's error.
    Thread-safe: writers add from worker threads while the engine may be
    settling an earlier group (a native lock, taken on those threads).
    """

    def __init__(self, classify, whole_file_system=False):
        self._classify = classify
        #: One syncfs per file system instead of an fsync per file.
        self.whole_file_system = whole_file_system
        self._lock = locks.native_lock()
        self._files = []        # (temporary path, final path, size)
        self._bytes = 0

    @property
    def pending(self):
        with self._lock:
            return len(self._files), self._bytes

    def add(self, temp, final, size):
        with self._lock:
            self._files.append((temp, final, size))
            self._bytes += size

    def _take(self):
        with self._lock:
            files, self._files, self._bytes = self._files, [], 0
        return files

    def settle(self, run_all):
        files = self._take()
        if not files:
            return
        try:
            if self.whole_file_system:
                run_all(self._sync_file_system,
                        self._one_directory_per_device(files))
            else:
                run_all(self._sync_file,
                        [temp for temp, _final, _size in files])
            # One task for all the renames: off the caller's (green)
            # thread, and one hand-over rather than one per file.
            run_all(self._rename_all, [files])
            run_all(self._sync_directory,
                    sorted({os.path.dirname(final)
                            for _temp, final, _size in files}))
        except BaseException:
            # What is not under its final name yet is dropped (a renamed
            # file's temporary name no longer exists).
            self._remove(temp for temp, _final, _size in files)
            raise

    def _rename_all(self, files):
        for temp, final, _size in files:
            try:
                os.rename(temp, final)
            except OSError as e:
                raise self._classify(e, 'cannot commit %s' % final)

    def _one_directory_per_device(self, files):
        """A directory of ``files`` on each file system they are on."""
        by_device = {}
        for directory in sorted({os.path.dirname(temp)
                                 for temp, _final, _size in files}):
            try:
                device = os.stat(directory).st_dev
            except OSError as e:
                raise self._classify(e, 'cannot sync %s' % directory)
            by_device.setdefault(device, directory)
        return list(by_device.values())

    def _sync_file_system(self, directory):
        try:
            syncfs(directory)
        except OSError as e:
            raise self._classify(e, 'cannot sync the file system of %s'
                                 % directory)

    def _sync_file(self, temp):
        try:
            fsync_file(temp)
        except OSError as e:
            raise self._classify(e, 'cannot sync %s' % temp)

    def _sync_directory(self, directory):
        try:
            fsync_directory(directory)
        except OSError as e:
            raise self._classify(e, 'cannot sync %s' % directory)

    def abandon(self):
        self._remove(temp for temp, _final, _size in self._take())

    @staticmethod
    def _remove(temps):
        for temp in temps:
            try:
                os.unlink(temp)
            except OSError:
                pass
