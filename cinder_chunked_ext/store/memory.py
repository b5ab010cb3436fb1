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

"""An object store in a dictionary, for tests and dry runs."""

import io
import time

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base


class _MemoryWriter(base.ObjectWriter):
    def __init__(self, store, container, name):
        super().__init__()
        self._store = store
        self._key = (container, name)
        self._buf = io.BytesIO()

    def _write(self, data):
        self._buf.write(data)

    def _commit(self):
        with self._store._lock:
            self._store.objects[self._key] = self._buf.getvalue()
            self._store.modified[self._key] = time.time()

    def _abort(self):
        self._buf = io.BytesIO()


class _MemoryReader(base.ObjectReader):
    def __init__(self, data):
        self._buf = io.BytesIO(data)

    def read(self, size=-1):
        return self._buf.read(size)


class MemoryStore(base.ObjectStore):
    """Objects in ``self.objects``, keyed by ``(container, name)``."""

    max_concurrent_writes = 2

    def __init__(self):
        self.objects = {}
        #: When each object was committed, seconds since the epoch.
        self.modified = {}
        self.containers = set()
        self._lock = locks.native_lock()

    def put_container(self, container, create=True):
        if container in self.containers:
            return
        if not create:
            raise exception.ObjectNotFound(
                reason='container %s does not exist and creating '
                       'containers is disabled' % container)
        self.containers.add(container)

    def list_objects(self, container, prefix):
        with self._lock:
            return sorted(name for (cont, name) in self.objects
                          if cont == container and name.startswith(prefix))

    def list_object_info(self, container, prefix=''):
        with self._lock:
            return [base.ObjectInfo(
                name=name, size=len(self.objects[(container, name)]),
                modified=self.modified.get((container, name)))
                for name in sorted(n for (c, n) in self.objects
                                   if c == container and n.startswith(prefix))]

    def list_containers(self):
        with self._lock:
            return sorted(self.containers |
                          {c for (c, _n) in self.objects})

    def open_writer(self, container, name, extra_metadata=None,
                    barrier=None):
        return _MemoryWriter(self, container, name)

    def open_reader(self, container, name, extra_metadata=None):
        try:
            return _MemoryReader(self.objects[(container, name)])
        except KeyError:
            raise exception.ObjectNotFound(
                reason='%s/%s' % (container, name))

    def delete_object(self, container, name):
        with self._lock:
            self.objects.pop((container, name), None)
            self.modified.pop((container, name), None)

    def object_size(self, container, name):
        try:
            return len(self.objects[(container, name)])
        except KeyError:
            raise exception.ObjectNotFound(
                reason='%s/%s' % (container, name))
