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

"""What ``repository check`` asks of a store, run against each store.

Object information (names, sizes, modification times), containers, and
the unfinished writes a writer stopped before its commit leaves: a POSIX
temporary file, an S3 multipart upload (on moto here; the functional
tests use a real server).  A writer "killed" here is one that is simply
dropped: neither committed nor aborted.
"""

import os
import time

import fixtures
import testtools

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.store import posix
from cinder_chunked_ext.tests.unit import test_s3_store

CONTAINER = 'maintenance-container'
MiB = 1024 * 1024


class MaintenanceContract(object):
    """Mixin; needs ``store_factory`` and ``unfinished_payload``."""

    #: Bytes a dropped writer must have written to leave something.
    unfinished_payload = 10
    #: Whether a dropped writer leaves something the store can list.
    leaves_unfinished = True

    def setUp(self):
        super().setUp()
        self.store = self.store_factory()
        self.store.put_container(CONTAINER)

    def put(self, name, data):
        with self.store.open_writer(CONTAINER, name) as writer:
            writer.write(data)

    def test_list_object_info_committed_objects_sizes_times(self):
        before = time.time()
        self.put('obj-a', b'a' * 10)
        self.put('obj-b', b'')
        self.put('other', b'b' * 3)
        after = time.time()
        infos = self.store.list_object_info(CONTAINER, 'obj-')
        self.assertEqual(['obj-a', 'obj-b'], [i.name for i in infos])
        self.assertEqual([10, 0], [i.size for i in infos])
        for info in infos:
            self.assertIsNotNone(info.modified)
            self.assertGreaterEqual(info.modified, before - 2)
            self.assertLessEqual(info.modified, after + 2)
        self.assertEqual(self.store.list_objects(CONTAINER, ''),
                         [i.name for i in self.store.list_object_info(
                             CONTAINER)])

    def test_list_unfinished_dropped_writer_found_then_deleted(self):
        self.put('done', b'x')
        writer = self.store.open_writer(CONTAINER, 'half-00001')
        writer.write(b'y' * self.unfinished_payload)
        found = self.store.list_unfinished(CONTAINER)
        if not self.leaves_unfinished:
            self.assertEqual([], found)
            return
        info, = found
        self.assertEqual('half-00001', info.name)
        self.assertIsNotNone(info.handle)
        self.assertIsNotNone(info.modified)
        self.assertEqual(['done'], self.store.list_objects(CONTAINER, ''))
        self.store.delete_unfinished(CONTAINER, info)
        self.assertEqual([], self.store.list_unfinished(CONTAINER))
        self.assertEqual(['done'], self.store.list_objects(CONTAINER, ''))
        # Deleting it again is not an error.
        self.store.delete_unfinished(CONTAINER, info)

    def test_list_unfinished_committed_and_aborted_writers_none(self):
        self.put('done', b'x' * self.unfinished_payload)
        writer = self.store.open_writer(CONTAINER, 'aborted')
        writer.write(b'z' * self.unfinished_payload)
        writer.abort()
        self.assertEqual([], self.store.list_unfinished(CONTAINER))


class MemoryMaintenanceTestCase(MaintenanceContract, testtools.TestCase):

    leaves_unfinished = False

    def store_factory(self):
        return memory.MemoryStore()

    def test_list_containers_every_container(self):
        self.store.put_container('second')
        self.assertEqual([CONTAINER, 'second'], self.store.list_containers())


class PosixMaintenanceTestCase(MaintenanceContract, testtools.TestCase):

    def store_factory(self):
        self.root = self.useFixture(fixtures.TempDir()).path
        return posix.PosixStore(self.root)

    def test_list_containers_directories_with_files_not_root_or_dot(self):
        self.store.put_container('ab/cd/abcd')
        with self.store.open_writer('ab/cd/abcd', 'o') as writer:
            writer.write(b'1')
        self.put('o', b'2')
        os.makedirs(os.path.join(self.root, '.hidden'))
        open(os.path.join(self.root, '.hidden', 'f'), 'w').close()
        open(os.path.join(self.root, 'catalog.sqlite3'), 'w').close()
        self.store.put_container('empty')
        self.assertEqual(['ab/cd/abcd', CONTAINER],
                         sorted(self.store.list_containers()))

    def test_list_containers_missing_root_not_found(self):
        store = posix.PosixStore(os.path.join(self.root, 'nope'))
        self.assertRaises(exception.ObjectNotFound, store.list_containers)

    def test_delete_unfinished_not_a_temporary_file_refused(self):
        self.put('obj', b'1')
        for handle in ('obj', '../x', None):
            self.assertRaises(exception.UnsafePath,
                              self.store.delete_unfinished, CONTAINER,
                              base.ObjectInfo(name='obj', handle=handle))
        self.assertEqual(['obj'], self.store.list_objects(CONTAINER, ''))

    def test_unfinished_object_name_long_name_only_uuid(self):
        self.assertEqual('a-00001', self.store.unfinished_object_name(
            '.tmp-0123456789ab-a-00001'))
        self.assertIsNone(self.store.unfinished_object_name(
            '.tmp-0123456789abcdef0123456789abcdef'))
        self.assertIsNone(self.store.unfinished_object_name('a-00001'))


class S3MaintenanceTestCase(MaintenanceContract,
                            test_s3_store.MotoTestCase):

    # A multipart upload starts once a part's worth has been written.
    unfinished_payload = 6 * MiB

    def store_factory(self):
        store = self.make_store(bucket=CONTAINER, multipart_threshold=0,
                                multipart_part_size=5 * MiB)
        return store


class SwiftMaintenanceTestCase(MaintenanceContract, testtools.TestCase):
    """Against a real Swift server on 127.0.0.1."""

    # Writes are single PUTs: a dropped writer leaves nothing.
    leaves_unfinished = False

    def store_factory(self):
        from swiftclient import exceptions as swiftclient_exc

        from cinder_chunked_ext.store import swift as swift_store
        from cinder_chunked_ext.tests import swift_server
        server = self.useFixture(swift_server.SwiftServerFixture()).server

        def remove_container():
            conn = server.connection()
            try:
                for item in conn.get_container(CONTAINER,
                                               full_listing=True)[1]:
                    conn.delete_object(CONTAINER, item['name'])
                conn.delete_container(CONTAINER)
            except swiftclient_exc.ClientException as e:
                if e.http_status != 404:
                    raise
        self.addCleanup(remove_container)
        return swift_store.SwiftStore(swift_store.SwiftSettings(
            auth_url=server.auth_url, user=server.user, key=server.key,
            retries=1, backoff=0))

    def test_list_containers_configured_only(self):
        self.assertIsNone(self.store.list_containers())


class DefaultsTestCase(testtools.TestCase):
    """A store that implements none of it is safe for repository check."""

    class Bare(memory.MemoryStore):
        list_object_info = base.ObjectStore.list_object_info
        list_containers = base.ObjectStore.list_containers
        list_unfinished = base.ObjectStore.list_unfinished
        delete_unfinished = base.ObjectStore.delete_unfinished

    def test_defaults_times_unknown_no_containers_no_unfinished(self):
        store = self.Bare()
        store.put_container('c')
        with store.open_writer('c', 'o') as writer:
            writer.write(b'1')
        info, = store.list_object_info('c')
        self.assertEqual(('o', None), (info.name, info.modified))
        self.assertIsNone(store.list_containers())
        self.assertEqual([], store.list_unfinished('c'))
        self.assertRaises(NotImplementedError, store.delete_unfinished, 'c',
                          info)
