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

"""A chunked driver whose objects live in an :class:`ObjectStore`.

Concrete drivers are the engine plus a store plus their options: this
class maps the engine's upstream-shaped storage methods onto the store.
"""

from cinder_chunked_ext.engine import driver as chunked


class StoreBackedDriver(chunked.ChunkedBackupDriver):
    """Implements the engine's storage methods with ``self.store``."""

    def __init__(self, context, store, chunk_size_bytes,
                 sha_block_size_bytes, backup_default_container,
                 enable_progress_timer):
        super().__init__(context, chunk_size_bytes, sha_block_size_bytes,
                         backup_default_container, enable_progress_timer)
        self.store = store

    @property
    def max_concurrent_writes(self):
        return self.store.max_concurrent_writes

    @property
    def max_concurrent_small_writes(self):
        return self.store.max_concurrent_small_writes

    @property
    def streams_writes(self):
        return self.store.streams_writes

    def put_container(self, container):
        self.store.put_container(container,
                                 create=self.backup_create_containers)

    def get_container_entries(self, container, prefix):
        return self.store.list_objects(container, prefix)

    def get_object_writer(self, container, object_name, extra_metadata=None):
        return self.store.open_writer(container, object_name,
                                      extra_metadata=extra_metadata)

    def get_object_reader(self, container, object_name, extra_metadata=None):
        return self.store.open_reader(container, object_name,
                                      extra_metadata=extra_metadata)

    def delete_object(self, container, object_name):
        self.store.delete_object(container, object_name)

    def check_for_setup_error(self):
        self.store.check()
