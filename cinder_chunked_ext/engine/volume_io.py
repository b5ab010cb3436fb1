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

"""Reading the volume being backed up and writing the one being restored.

The backup manager hands the driver a file-like object (a device, a
file, an RBD wrapper, often behind an eventlet tpool proxy).  Upstream
only calls ``read`` and ``tell`` on it and reads until EOF.  We also need
to know where an object ends before compressing it (a zstd frame carries
its size) and to read a region twice when compression did not pay, so
:class:`VolumeSource` finds the size by seeking to the end when it can,
and otherwise keeps the current chunk in memory as upstream does.

Under eventlet every call on a ``tpool`` proxy is a hand-off to a native
thread and back.  When the volume is a regular file or a block device,
:class:`VolumeSource` therefore opens a descriptor of its own on it and
reads with ``pread`` on the worker that analyses the data
(:meth:`VolumeSource.load`), never through the proxy.  On a regular file
it also asks the file system where the holes are (``SEEK_DATA`` /
``SEEK_HOLE``) and does not read them: they are zeros.  A block device's
holes are never trusted (a device reports none, or the answer would be
its driver's), so it is read in full.
"""

import errno
import io
import os
import stat
import sys

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import pipeline
from cinder_chunked_ext import exception

ONE_MIB = 1024 * 1024


class VolumeSource(object):
    """Positioned reads over the volume file being backed up."""

    def __init__(self, volume_file):
        self._file = volume_file
        self._pos = None
        self.size = None
        self._buffer = None      # (offset, bytes) for unseekable files
        self.seekable = False
        try:
            start = volume_file.tell()
            end = volume_file.seek(0, os.SEEK_END)
            if end is None:  # some wrappers return nothing
                end = volume_file.tell()
            volume_file.seek(start)
            self.start = start
            self.size = end
            self._pos = start
            self.seekable = True
        except (AttributeError, OSError, io.UnsupportedOperation,
                TypeError, ValueError):
            self.start = self._tell_or_zero()
            self._pos = self.start
        self._fd = None
        self.holes_known = False
        if self.seekable:
            self._fd, self.holes_known = own_descriptor(volume_file)

    @property
    def direct(self):
        """True when pieces are read with :meth:`load`, on any thread."""
        return self._fd is not None

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def is_hole(self, offset, size):
        """True when ``[offset, offset + size)`` is one hole of the file.

        Always False where holes are not known (block devices, wrappers).
        """
        if not self.holes_known or size <= 0:
            return False
        try:
            data = os.lseek(self._fd, offset, os.SEEK_DATA)
        except OSError as e:
            # ENXIO: no data at or after ``offset``, the rest is a hole.
            return e.errno == errno.ENXIO
        return data >= offset + size

    def holes(self, offset, end, align, smallest):
        """``[(start, stop)]`` of the holes in ``[offset, end)``.

        Only holes of at least ``smallest`` bytes once shrunk to whole
        ``align`` units (counted from the start of the volume); empty
        when holes are not known.
        """
        if not self.holes_known:
            return []
        found = []
        pos = offset
        while pos < end:
            try:
                hole = os.lseek(self._fd, pos, os.SEEK_HOLE)
            except OSError:
                break
            if hole >= end:
                break
            try:
                data = os.lseek(self._fd, hole, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    break
                data = end          # a hole to the end of the file
            stop = min(data, end)
            first = self.start + -(-(hole - self.start) // align) * align
            last = (stop if stop == end else
                    self.start + (stop - self.start) // align * align)
            if last - first >= smallest:
                found.append((first, last))
            pos = stop
        return found

    def load(self, offset, size):
        """``size`` bytes at ``offset``, or None for a hole (direct only).

        Meant for a worker thread: one ``pread`` per piece, nothing
        through the volume file object.
        """
        if self.is_hole(offset, size):
            return None
        parts = []
        left = size
        while left > 0:
            data = os.pread(self._fd, left, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def load_into(self, offset, size, buffer):
        """Read ``size`` bytes at ``offset`` into ``buffer`` (direct only).

        Returns False, leaving ``buffer`` as it is, for a hole.  A worker
        that reads piece after piece into the same buffer spares the
        allocator and the kernel a fresh buffer (and its page faults)
        per piece.
        """
        if self.is_hole(offset, size):
            return False
        got = 0
        with memoryview(buffer) as view:
            while got < size:
                count = os.preadv(self._fd, [view[got:size]], offset + got)
                if not count:
                    break
                got += count
        if got != size:
            raise exception.InvalidVolume(
                reason='the volume ended at offset %d while reading %d '
                       'bytes at %d' % (offset + got, size, offset))
        return True

    def read_exactly(self, offset, size):
        """``size`` bytes at ``offset``, read through the volume file."""
        data = self.read_at(offset, size)
        check_length(data, offset, size)
        return data

    def load_piece(self, offset, size, buffer=None):
        """``(data, zero)`` of a piece, read on this worker (direct only).

        ``zero`` is True for a hole (the data is then a shared buffer of
        zeros), None when the data has to be tested.  With ``buffer``
        (of ``size`` bytes), the data is read into it and is ``buffer``.
        """
        if buffer is not None:
            if self.load_into(offset, size, buffer):
                return buffer, None
            return pipeline.zeros(size), True
        data = self.load(offset, size)
        if data is None:
            return pipeline.zeros(size), True
        check_length(data, offset, size)
        return data, None

    def _tell_or_zero(self):
        try:
            return self._file.tell()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return 0

    def chunk_length(self, offset, chunk_size):
        """Bytes of the chunk at ``offset`` (0 at the end of the volume)."""
        if self.seekable:
            return max(0, min(chunk_size, self.size - offset))
        data = self._read_stream(chunk_size)
        self._buffer = (offset, data)
        return len(data)

    def _read_stream(self, size):
        parts = []
        left = size
        while left > 0:
            data = concurrency.execute(self._file.read, left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
        return b''.join(parts)

    def read_at(self, offset, size):
        """Exactly ``size`` bytes at ``offset`` (fewer only at EOF)."""
        if self._buffer is not None:
            base, data = self._buffer
            start = offset - base
            return data[start:start + size]
        if self._pos != offset:
            concurrency.execute(self._file.seek, offset)
        data = self._read_stream(size)
        self._pos = offset + len(data)
        return data


def check_length(data, start, size):
    """Refuse a read that came back short: the volume ended early."""
    if len(data) != size:
        raise exception.InvalidVolume(
            reason='the volume ended at offset %d while reading %d '
                   'bytes at %d' % (start + len(data), size, start))


def _proxied_object(volume_file):
    """The object behind eventlet's ``tpool.Proxy``, else the object."""
    tpool = sys.modules.get('eventlet.tpool')
    if tpool is not None and isinstance(volume_file, tpool.Proxy):
        # Proxy keeps the object it forwards to in ``_obj``.
        return object.__getattribute__(volume_file, '_obj')
    return volume_file


def own_descriptor(volume_file):
    """``(fd, holes_known)`` for reading ``volume_file`` directly.

    The descriptor is a new open file description of the same file or
    device (through ``/proc/self/fd``), so that its offset, which
    ``SEEK_DATA`` moves, is not the caller's; it is checked to be the
    same inode.  ``(None, False)`` when the volume is anything else (a
    pipe, an RBD image), or not a plain file object: a wrapper with a
    descriptor may still do something on each read (count it, stop at a
    limit), which reading around it would skip.
    """
    target = _proxied_object(volume_file)
    if not isinstance(target, io.IOBase):
        return None, False
    try:
        fileno = target.fileno()
        if not isinstance(fileno, int):
            return None, False
        before = os.fstat(fileno)
    except (AttributeError, OSError, io.UnsupportedOperation, TypeError,
            ValueError):
        return None, False
    is_file = stat.S_ISREG(before.st_mode)
    if not (is_file or stat.S_ISBLK(before.st_mode)):
        return None, False
    try:
        fd = os.open('/proc/self/fd/%d' % fileno,
                     os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    except OSError:
        return None, False
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        return None, False
    return fd, is_file and hasattr(os, 'SEEK_DATA')


# The writes below run on a native worker thread (``concurrency.execute``
# or a lane), one of eventlet's tpool threads.  A call on a
# ``tpool.Proxy`` from there goes through ``tpool.execute`` only to be
# called directly, after a lookup of the current thread under the
# patched ``threading``; they call the object behind the proxy instead,
# which is what the proxy ends up doing.


def write_at(volume_file, offset, data):
    volume_file = _proxied_object(volume_file)
    volume_file.seek(offset)
    volume_file.write(data)


def write_skipping_zeros(volume_file, offset, data, zero_block=ONE_MIB):
    """Write ``data`` at ``offset``, leaving all-zero MiB untouched.

    Only correct on a target that reads as zeros (a new volume, before
    any layer wrote to it): that is how a restore stays sparse.
    """
    volume_file = _proxied_object(volume_file)
    for start in range(0, len(data), zero_block):
        size = min(zero_block, len(data) - start)
        # Tested in place; only what is written is sliced (the volume
        # file gets the type it was given: some, RBD's, take bytes only).
        if not pipeline.zero_at(data, start, size):
            volume_file.seek(offset + start)
            volume_file.write(data[start:start + size])


def flush(volume_file):
    _proxied_object(volume_file).flush()


def flush_and_sync(volume_file):
    """Flush, and fsync when the file has a descriptor."""
    volume_file = _proxied_object(volume_file)
    volume_file.flush()
    try:
        fileno = volume_file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return
    try:
        os.fsync(fileno)
    except OSError as e:
        # Pipes and some character devices cannot be synced; any other
        # failure means the data may not be on disk and must be reported.
        if e.errno != errno.EINVAL:
            raise
