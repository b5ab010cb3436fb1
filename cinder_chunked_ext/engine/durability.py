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

"""When a backup's small objects become durable.

A store with a durability barrier (POSIX) does not sync the small
objects of a backup (an incremental's changed runs) one by one: they
are synced, renamed into place and their directories synced together
(:class:`cinder_chunked_ext.store.base.DurabilityBarrier`).  The backup
settles the barrier before it writes its sha256file and metadata, and
every ``GROUP_OBJECTS`` objects or ``GROUP_BYTES`` on the way, so that
what waits (and what a crash leaves for ``repository check``) stays
bounded.  On stores without one (S3, Swift) every commit is durable.
"""

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.store import base as store_base

GROUP_OBJECTS = 2048
GROUP_BYTES = 512 * 1024 * 1024


class SmallObjects(object):
    """The durability of one backup's small objects."""

    def __init__(self, driver, io_pool):
        self._barrier = driver.durability_barrier()
        self._io = io_pool
        self._at_once = max(1, driver.max_concurrent_writes)

    def writer_arguments(self):
        """Keyword arguments of ``get_object_writer`` for a small object."""
        return store_base.barrier_argument(self._barrier)

    def committed(self):
        """After an object's commit: settle when a group is complete."""
        if self._barrier is None:
            return
        objects, size = self._barrier.pending
        if objects >= GROUP_OBJECTS or size >= GROUP_BYTES:
            self.settle()

    def settle(self):
        """Make every small object committed so far durable, together."""
        if self._barrier is None:
            return
        self._barrier.settle(
            lambda func, items: concurrency.run_all(self._io, func, items,
                                                    self._at_once))

    def abandon(self):
        """Drop what was not settled (the backup failed or was cancelled)."""
        if self._barrier is not None:
            self._barrier.abandon()
