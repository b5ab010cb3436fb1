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

"""The object store interface every backend implements.

A store knows containers and named objects in them, nothing about backups:
the object-name layout belongs to the engine and the drivers.  It is
deliberately small (restic's save/load/list/remove/stat):

* ``put_container``: make a container exist (or refuse when creation is
  disabled and it does not);
* ``list_objects``: names in a container starting with a prefix;
* ``open_writer``: an :class:`ObjectWriter`, which makes the object
  visible under its name only when ``commit`` is called, and never when
  the ``with`` block around it raised;
* ``durability_barrier``: a :class:`DurabilityBarrier` for the objects
  of one backup, or None when every commit is durable on its own (an
  acknowledged upload).  A writer opened with ``barrier=`` hands its
  object to the barrier at ``commit``; the object is durable, and
  visible under its name, once the barrier's ``settle`` has returned;
* ``open_reader``: an :class:`ObjectReader` with ``read(n)``;
* ``delete_object``: remove an object; a missing one is not an error;
* ``object_size``: the stored size, or :class:`ObjectNotFound`.

For repository maintenance (``repository check``), a store may also say
when its objects were written and what unfinished writes left behind:

* ``list_object_info``: :class:`ObjectInfo` of the objects of a
  container, with their modification time when the store knows it;
* ``list_containers``: every container, for stores that can walk them;
* ``list_unfinished`` and ``delete_unfinished``: what a writer stopped
  before its commit left (a temporary file, an unfinished multipart
  upload).

The defaults are safe for a store that knows none of this: times are
unknown (so nothing is ever old enough to be removed), containers are
those configured, and nothing unfinished is found.

Errors are classified: :class:`ObjectNotFound`,
:class:`PermanentStoreError`, :class:`TransientStoreError` (see
:mod:`cinder_chunked_ext.exception`).  Writers and readers must not log:
they run on native threads under eventlet (eventlet bug 432).
"""

import abc
import dataclasses
import typing

from cinder_chunked_ext import exception  # noqa: F401 - documented above


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one stored object or unfinished write."""

    name: str
    size: typing.Optional[int] = None
    #: Last modification, seconds since the epoch; None when unknown.
    modified: typing.Optional[float] = None
    #: For an unfinished write: what ``delete_unfinished`` needs to find
    #: it (the temporary file's name, a multipart upload's id).
    handle: typing.Optional[str] = None


class ObjectWriter(object, metaclass=abc.ABCMeta):
    """Receives one object's bytes; publishes them only on ``commit``."""

    def __init__(self):
        self._state = 'open'

    @abc.abstractmethod
    def _write(self, data):
        """Store ``data`` after what was written before.

        ``data`` (bytes-like) is the caller's again once this returns:
        the engine reads the next object into the same buffer, so a
        writer that holds data until its commit keeps a copy.
        """

    @abc.abstractmethod
    def _commit(self):
        """Make the object durable and visible under its name."""

    @abc.abstractmethod
    def _abort(self):
        """Drop everything written; leave no object and no leftovers."""

    def write(self, data):
        if self._state != 'open':
            raise ValueError('write to a %s object writer' % self._state)
        if data:
            self._write(data)

    def commit(self):
        if self._state != 'open':
            raise ValueError('commit of a %s object writer' % self._state)
        self._state = 'committing'
        try:
            self._commit()
        except BaseException:
            self._state = 'failed'
            self._abort()
            raise
        self._state = 'committed'

    def abort(self):
        if self._state in ('open', 'committing', 'failed'):
            self._state = 'aborted'
            self._abort()

    def close(self):
        """Commit, as a file's ``close`` would (upstream's writers)."""
        if self._state == 'open':
            self.commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class DurabilityBarrier(object, metaclass=abc.ABCMeta):
    """Objects made durable together, before what lists them is written.

    The promise a backup keeps is that once its metadata exists, every
    object it lists is durable and intact.  Making each object durable
    on its own (an fsync of the file, then of its directory, per object)
    costs a journal commit per object; a backup of scattered changes
    writes thousands of small ones.  Through a barrier, objects are
    written without waiting for the disk, and ``settle`` makes all those
    committed so far durable at once, overlapping their flushes; the
    engine settles before it writes the sha256file and the metadata.

    Until it is settled, a committed object is not under its final name
    (no partial object ever is): after a crash it is a leftover of an
    unfinished write, which deleting the backup or ``repository check``
    removes.  ``abandon`` drops every object not yet settled.
    """

    @property
    @abc.abstractmethod
    def pending(self):
        """``(objects, bytes)`` committed and not yet settled."""

    @abc.abstractmethod
    def settle(self, run_all):
        """Make every object committed so far durable and visible.

        ``run_all(function, items)`` calls ``function`` on every item,
        as many at once as the caller's threads allow, and raises the
        first error once all have finished.  Objects committed while
        ``settle`` runs wait for the next one.
        """

    @abc.abstractmethod
    def abandon(self):
        """Remove every object committed and not settled; never raises."""


def barrier_argument(barrier):
    """``open_writer``'s keyword arguments for ``barrier`` (None: none)."""
    return {} if barrier is None else {'barrier': barrier}


class ObjectReader(object, metaclass=abc.ABCMeta):
    """Streams one stored object."""

    @abc.abstractmethod
    def read(self, size=-1):
        """Up to ``size`` bytes (all that is left when negative)."""

    def close(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class ObjectStore(object, metaclass=abc.ABCMeta):
    """A place that holds named objects in containers."""

    #: How many objects the engine may commit at once on this store.
    max_concurrent_writes = 1
    #: How many objects of one piece or less (an incremental backup's
    #: changed runs) are worth making and committing at once; None: as
    #: many as ``max_concurrent_writes``.
    max_concurrent_small_writes = None
    #: True when a writer passes what it is given on (to a file) rather
    #: than holding the object until its commit (an upload): the engine
    #: then stores a full backup's objects whole, several side by side.
    streams_writes = False

    @abc.abstractmethod
    def put_container(self, container, create=True):
        """Ensure ``container`` exists.

        :param create: when False, a missing container is an error
            (``backup_create_containers = False``).
        """

    @abc.abstractmethod
    def list_objects(self, container, prefix):
        """Names of the objects in ``container`` starting with ``prefix``."""

    @abc.abstractmethod
    def open_writer(self, container, name, extra_metadata=None,
                    barrier=None):
        """An :class:`ObjectWriter` for ``container``/``name``.

        ``barrier``: one this store's ``durability_barrier`` made, or
        None for an object durable and visible once committed.
        """

    def durability_barrier(self):
        """A :class:`DurabilityBarrier`, or None: commits are durable."""
        return None

    @abc.abstractmethod
    def open_reader(self, container, name, extra_metadata=None):
        """An :class:`ObjectReader`; raises ObjectNotFound when missing."""

    @abc.abstractmethod
    def delete_object(self, container, name):
        """Remove an object; succeeds when it does not exist."""

    @abc.abstractmethod
    def object_size(self, container, name):
        """The stored size in bytes; raises ObjectNotFound when missing."""

    def check(self):
        """Verify the store is usable; raise a clear error if not."""
        return None

    # -- repository maintenance --------------------------------------------

    def list_object_info(self, container, prefix=''):
        """:class:`ObjectInfo` of the objects ``list_objects`` names."""
        return [ObjectInfo(name=name)
                for name in self.list_objects(container, prefix)]

    def list_containers(self):
        """Every container, or None when the store cannot list them."""
        return None

    def list_unfinished(self, container):
        """:class:`ObjectInfo` of the writes never committed.

        ``name`` is the object the write was for.
        """
        return []

    def delete_unfinished(self, container, info):
        """Remove one unfinished write found by ``list_unfinished``."""
        raise NotImplementedError()

    def describe(self):
        """A short, secret-free description for logs."""
        return type(self).__name__
