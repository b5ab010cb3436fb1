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

"""A restore's local copy of the objects its check pass read.

A restore that proves objects before its first write (over an existing
volume; any encrypted backup) reads each of them twice: once in the
check pass and again in the write pass.  On POSIX the second read comes
from the page cache; from S3 or Swift it is a second GET of every
object, twice the requests and the transfer.  With ``[chunked_backup]
restore_spool_dir`` set, the check pass keeps the stored bytes of each
object it reads to the end in a file of its own, in a directory made
for the restore, and the write pass reads that file instead of the
store: one GET per object.

Nothing is trusted for being local: the write pass proves the bytes
again as it reads them (the CRC-32 of the stored bytes the check pass
proved, for plain objects; AES-GCM, for sealed ones, whose spooled bytes
are the ciphertext), so a spool file changed on the local disk stops
the restore before its bytes reach the volume.

``restore_spool_max_mib`` bounds the bytes spooled by every restore of
the process together; an object that would pass it is not spooled and
is read from the store again.  A failed write (a full disk) drops that
object's copy the same way.  The restore's directory is removed when it
ends, failed or not, and each file as soon as the write pass has read
it; directories left by a process that died are removed by the next
spool made in the same place.

Readers run on worker threads: nothing here logs.  What was spooled,
and why an object was not, is counted for the restore to log.
"""

import errno
import itertools
import os
import shutil
import tempfile

from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import sealed

#: Directories of spools are named ``<prefix><pid>-<random>``.
DIR_PREFIX = 'cinder-chunked-restore-'
MiB = 1024 * 1024


class Budget(object):
    """Bytes spooled by every restore of the process, under one bound."""

    def __init__(self):
        self._lock = locks.native_lock()
        self.used = 0

    def take(self, size, limit):
        with self._lock:
            if self.used + size > limit:
                return False
            self.used += size
            return True

    def give(self, size):
        with self._lock:
            self.used -= size


#: The process's budget: every spool shares it.
PROCESS_BUDGET = Budget()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent):
    """Remove the spool directories of processes that no longer run.

    Returns the names removed.  Only directories named as a spool's are
    considered, and only those of a process id that is not running.
    """
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(DIR_PREFIX):
            continue
        pid = name[len(DIR_PREFIX):].split('-', 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(
                int(pid)):
            continue
        path = os.path.join(parent, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def is_data_object(name):
    """True for a name ending in ``-<number>``: a backup's data object."""
    return sealed.is_data_object(name.rpartition('-')[0], name)


def check_directory(path):
    """Raise ValueError unless ``path`` is a directory this process can use."""
    if not os.path.isabs(path):
        raise ValueError('%s is not an absolute path' % path)
    if not os.path.isdir(path):
        raise ValueError('%s is not a directory' % path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError('%s is not writable by this process' % path)


class ReadSpool(object):
    """One restore's spool: object name -> a local copy of its bytes.

    While ``recording``, readers of objects not yet spooled copy what
    they read; a copy counts once its reader reached the end of the
    object.  A spooled object is read from its copy; once recording has
    stopped (the write pass), the copy is removed as it is closed.
    """

    def __init__(self, parent, max_bytes, budget=None):
        self.stale_removed = remove_stale(parent)
        self.directory = tempfile.mkdtemp(
            prefix='%s%d-' % (DIR_PREFIX, os.getpid()), dir=parent)
        self.max_bytes = max_bytes
        self._budget = budget if budget is not None else PROCESS_BUDGET
        self._lock = locks.native_lock()
        self._numbers = itertools.count()
        self._entries = {}      # (container, name) -> (path, size)
        self._wrapper = None    # the SpooledStore of ``wrap``
        self.recording = True
        self.closed = False
        # Counts, for the restore's log line.
        self.spooled = self.spooled_bytes = 0
        self.served = 0
        self.over_budget = 0
        self.write_errors = 0
        self.first_error = None

    # -- the store's side --------------------------------------------------

    def wrap(self, store):
        """``store`` reading through this spool (made once per store)."""
        wrapper = self._wrapper
        if wrapper is None or wrapper.inner is not store:
            wrapper = self._wrapper = SpooledStore(store, self)
        return wrapper

    def open_reader(self, store, container, name, extra_metadata=None):
        if not is_data_object(name):
            # A backup's documents are read once, on the green thread.
            return store.open_reader(container, name,
                                     extra_metadata=extra_metadata)
        key = (container, name)
        with self._lock:
            entry = self._entries.get(key)
            recording = self.recording and not self.closed
            if entry is not None and not recording:
                # The write pass: its copy is read once, then removed.
                del self._entries[key]
        if entry is not None:
            path, size = entry
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                self._forget(path, size, key if recording else None)
            else:
                return _CopyReader(self, fd, path, size,
                                   remove=not recording)
        reader = store.open_reader(container, name,
                                   extra_metadata=extra_metadata)
        if not recording:
            return reader
        return _RecordingReader(self, key, reader)

    # -- the copies ---------------------------------------------------------

    def _new_file(self):
        path = os.path.join(self.directory, 'o%08d' % next(self._numbers))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     getattr(os, 'O_CLOEXEC', 0), 0o600)
        return fd, path

    def _reserve(self, size):
        if self._budget.take(size, self.max_bytes):
            return True
        with self._lock:
            self.over_budget += 1
        return False

    def _failed(self, error):
        with self._lock:
            self.write_errors += 1
            if self.first_error is None:
                self.first_error = error

    def _keep(self, key, path, size):
        """Record a finished copy; False when it is not wanted any more."""
        with self._lock:
            if self.closed or key in self._entries:
                return False
            self._entries[key] = (path, size)
            self.spooled += 1
            self.spooled_bytes += size
            return True

    def _served(self):
        with self._lock:
            self.served += 1

    def _forget(self, path, size, key=None):
        """Drop a copy: its file, its bytes of the budget, its entry."""
        if key is not None:
            with self._lock:
                self._entries.pop(key, None)
        try:
            os.unlink(path)
        except OSError:
            pass
        self._budget.give(size)

    def stop_recording(self):
        with self._lock:
            self.recording = False

    def close(self):
        """Remove every copy and the directory; give the budget back."""
        with self._lock:
            self.closed = True
            entries, self._entries = self._entries, {}
        for _path, size in entries.values():
            self._budget.give(size)
        shutil.rmtree(self.directory, ignore_errors=True)

    def summary(self):
        """A sentence for the restore's log, or None when nothing happened."""
        if not (self.spooled or self.over_budget or self.write_errors):
            return None
        text = ('%d object(s) (%.1f MB) kept in %s by the check pass, %d of '
                'them read from there by the write pass'
                % (self.spooled, self.spooled_bytes / 1e6, self.directory,
                   self.served))
        if self.over_budget:
            text += ('; %d not kept, beyond restore_spool_max_mib (%d MiB '
                     'for the process)' % (self.over_budget,
                                           self.max_bytes // MiB))
        return text


class _RecordingReader(base.ObjectReader):
    """Reads an object from the store and keeps a copy of what it reads."""

    def __init__(self, spool, key, reader):
        self._spool = spool
        self._key = key
        self._reader = reader
        self._fd = self._path = None
        self._size = 0
        self._ended = False
        self._copying = True

    def _drop_copy(self):
        self._copying = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._spool._forget(self._path, self._size)

    def _copy(self, data):
        if not self._spool._reserve(len(data)):
            self._drop_copy()
            return
        self._size += len(data)
        try:
            if self._fd is None:
                self._fd, self._path = self._spool._new_file()
            view = memoryview(data)
            while len(view):
                view = view[os.write(self._fd, view):]
        except OSError as e:
            self._spool._failed('%s (%s)' % (
                os.strerror(e.errno) if e.errno else e,
                errno.errorcode.get(e.errno, 'error')))
            if self._fd is None:
                # Nothing was created: give this piece's bytes back.
                self._copying = False
                self._spool._budget.give(self._size)
                return
            self._drop_copy()

    def read(self, size=-1):
        data = self._reader.read(size)
        if self._copying:
            if data:
                self._copy(data)
            elif size != 0:
                self._ended = True
        return data

    def _at_end(self):
        """True when the object has nothing after what was read.

        A decoder stops reading where its stream ends, without the read
        that would return nothing: one more byte is asked for.
        """
        if not self._ended:
            try:
                self._ended = not self._reader.read(1)
            except Exception:
                return False
        return self._ended

    def close(self):
        try:
            try:
                if self._copying and self._fd is not None:
                    self._at_end()
            finally:
                self._reader.close()
        finally:
            if self._copying and self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if not (self._ended and self._spool._keep(
                        self._key, self._path, self._size)):
                    self._spool._forget(self._path, self._size)


class _CopyReader(base.ObjectReader):
    """Reads a spooled copy; removes it on close in the write pass."""

    def __init__(self, spool, fd, path, size, remove):
        self._spool = spool
        self._file = os.fdopen(fd, 'rb')
        self._path = path
        self._size = size
        self._remove = remove

    def read(self, size=-1):
        return self._file.read(size)

    def close(self):
        self._file.close()
        if self._remove:
            self._spool._served()
            self._spool._forget(self._path, self._size)


class SpooledStore(object):
    """An object store whose readers go through a :class:`ReadSpool`.

    Everything but ``open_reader`` is the wrapped store's.
    """

    def __init__(self, store, spool):
        self._store = store
        self._spool = spool

    @property
    def inner(self):
        return self._store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def open_reader(self, container, name, extra_metadata=None):
        return self._spool.open_reader(self._store, container, name,
                                       extra_metadata=extra_metadata)
