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
"""

import errno
import io
import os

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.engine import pipeline

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


def write_at(volume_file, offset, data):
    volume_file.seek(offset)
    volume_file.write(data)


def write_skipping_zeros(volume_file, offset, data, zero_block=ONE_MIB):
    """Write ``data`` at ``offset``, leaving all-zero MiB untouched.

    Only correct on a target that reads as zeros (a new volume, before
    any layer wrote to it): that is how a restore stays sparse.
    """
    for start in range(0, len(data), zero_block):
        part = data[start:start + zero_block]
        if not pipeline.is_zero(part):
            volume_file.seek(offset + start)
            volume_file.write(part)


def flush_and_sync(volume_file):
    """Flush, and fsync when the file has a descriptor."""
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
