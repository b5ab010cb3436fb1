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

"""The behaviour every object store must have, run against each store.

To run the suite against another store (S3, say), subclass
:class:`StoreContract` and a test case class, and give a method
``store_factory()`` that returns a fresh, empty store (it may use
``self.useFixture`` for its resources, e.g. a server on 127.0.0.1).
``leftovers(store, container)`` may be overridden to report what a store
keeps beside its objects (temporary files, pending multipart uploads) so
that "a failed save leaves nothing behind" is checked in full.

Container and object names are chosen to be valid for every backend: a
lower-case container without "/" or "_" (an S3 bucket name) and object
names without "/" (a POSIX file name).
"""

import concurrent.futures
import os

import fixtures
from swiftclient import exceptions as swiftclient_exc
import testtools

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.store import posix
from cinder_chunked_ext.store import swift as swift_store
from cinder_chunked_ext.tests import swift_server

CONTAINER = 'contract-container'
OTHER_CONTAINER = 'contract-other'


class _Boom(Exception):
    pass


class StoreContract(object):
    """Mixin of contract tests; needs ``store_factory``."""

    store_factory = None

    def leftovers(self, store, container):
        """What the store holds for ``container`` besides its objects."""
        return []

    def setUp(self):
        super().setUp()
        self.store = self.store_factory()
        self.store.put_container(CONTAINER)

    def _put(self, name, *parts, container=CONTAINER):
        with self.store.open_writer(container, name) as writer:
            for part in parts:
                writer.write(part)

    def _get(self, name, container=CONTAINER, step=-1):
        with self.store.open_reader(container, name) as reader:
            if step < 0:
                return reader.read()
            out = []
            while True:
                data = reader.read(step)
                if not data:
                    return b''.join(out)
                self.assertLessEqual(len(data), step)
                out.append(data)

    def _write_and_fail(self, name, *parts):
        def fail():
            with self.store.open_writer(CONTAINER, name) as writer:
                for part in parts:
                    writer.write(part)
                raise _Boom()
        self.assertRaises(_Boom, fail)

    # -- containers --------------------------------------------------------

    def test_put_container_existing_no_error(self):
        self._put('a-00001', b'x')
        self.store.put_container(CONTAINER)
        self.store.put_container(CONTAINER, create=False)
        self.assertEqual(b'x', self._get('a-00001'))

    def test_put_container_missing_without_create_not_found(self):
        exc = self.assertRaises(exception.ObjectNotFound,
                                self.store.put_container, OTHER_CONTAINER,
                                create=False)
        self.assertIn(OTHER_CONTAINER, str(exc))
        self.store.put_container(OTHER_CONTAINER)
        self._put('a-00001', b'y', container=OTHER_CONTAINER)
        self.assertEqual(b'y', self._get('a-00001',
                                         container=OTHER_CONTAINER))

    # -- writing and reading ------------------------------------------------

    def test_writer_several_writes_read_back_equal(self):
        parts = [os.urandom(1000), b'', bytes(range(256)) * 40,
                 os.urandom(70000)]
        self._put('a-00001', *parts)
        self.assertEqual(b''.join(parts), self._get('a-00001'))
        self.assertEqual(b''.join(parts), self._get('a-00001', step=4096))

    def test_writer_empty_object_read_back_empty(self):
        self._put('a-00001')
        self.assertEqual(b'', self._get('a-00001'))
        self.assertEqual(['a-00001'], self.store.list_objects(CONTAINER,
                                                              'a'))

    def test_writer_existing_name_replaced(self):
        self._put('a-00001', b'old contents')
        self._put('a-00001', b'new')
        self.assertEqual(b'new', self._get('a-00001'))

    def test_writer_extra_metadata_accepted(self):
        with self.store.open_writer(CONTAINER, 'a-00001',
                                    extra_metadata={'k': 'v'}) as writer:
            writer.write(b'data')
        with self.store.open_reader(CONTAINER, 'a-00001',
                                    extra_metadata={'k': 'v'}) as reader:
            self.assertEqual(b'data', reader.read())

    def test_writer_open_object_invisible_until_commit(self):
        writer = self.store.open_writer(CONTAINER, 'a-00001')
        with writer:
            writer.write(b'pending')
            self.assertEqual([], self.store.list_objects(CONTAINER, 'a'))
            self.assertRaises(exception.ObjectNotFound,
                              self.store.open_reader, CONTAINER, 'a-00001')
        self.assertEqual(['a-00001'], self.store.list_objects(CONTAINER,
                                                              'a'))

    def test_writer_block_raised_leaves_nothing(self):
        self._write_and_fail('a-00001', os.urandom(5000), b'more')
        self.assertEqual([], self.store.list_objects(CONTAINER, ''))
        self.assertRaises(exception.ObjectNotFound, self.store.open_reader,
                          CONTAINER, 'a-00001')
        self.assertEqual([], self.leftovers(self.store, CONTAINER))

    def test_writer_block_raised_previous_version_kept(self):
        self._put('a-00001', b'committed')
        self._write_and_fail('a-00001', b'half written replacement')
        self.assertEqual(b'committed', self._get('a-00001'))
        self.assertEqual([], self.leftovers(self.store, CONTAINER))

    def test_writer_abort_leaves_nothing(self):
        writer = self.store.open_writer(CONTAINER, 'a-00001')
        writer.write(b'data')
        writer.abort()
        writer.abort()   # idempotent
        self.assertEqual([], self.store.list_objects(CONTAINER, ''))
        self.assertEqual([], self.leftovers(self.store, CONTAINER))

    def test_writer_committed_further_use_value_error(self):
        writer = self.store.open_writer(CONTAINER, 'a-00001')
        with writer:
            writer.write(b'data')
        self.assertRaises(ValueError, writer.write, b'late')
        self.assertRaises(ValueError, writer.commit)
        writer.abort()   # no effect on a committed object
        self.assertEqual(b'data', self._get('a-00001'))

    def test_writer_is_object_writer(self):
        writer = self.store.open_writer(CONTAINER, 'a-00001')
        self.addCleanup(writer.abort)
        self.assertIsInstance(writer, base.ObjectWriter)

    def test_open_reader_missing_object_not_found(self):
        self.assertRaises(exception.ObjectNotFound, self.store.open_reader,
                          CONTAINER, 'missing-00001')

    def test_writers_in_parallel_each_object_intact(self):
        blobs = {'p-%05d' % i: os.urandom(20000 + i) for i in range(8)}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda item: self._put(*item), blobs.items()))
        for name, blob in blobs.items():
            self.assertEqual(blob, self._get(name))

    # -- listing, size, delete ---------------------------------------------

    def test_list_objects_prefix_only_sorted(self):
        for name in ('b-00002', 'b-00001', 'b_metadata', 'bb-00001',
                     'c-00001'):
            self._put(name, b'x')
        self.store.put_container(OTHER_CONTAINER)
        self._put('b-00003', b'x', container=OTHER_CONTAINER)
        self.assertEqual(['b-00001', 'b-00002', 'b_metadata'],
                         self.store.list_objects(CONTAINER, 'b-')
                         + self.store.list_objects(CONTAINER, 'b_'))
        self.assertEqual(['b-00001', 'b-00002', 'b_metadata', 'bb-00001'],
                         self.store.list_objects(CONTAINER, 'b'))
        self.assertEqual(['b-00003'],
                         self.store.list_objects(OTHER_CONTAINER, 'b'))

    def test_object_size_stored_bytes(self):
        self._put('a-00001', b'12345', b'678')
        self.assertEqual(8, self.store.object_size(CONTAINER, 'a-00001'))
        self.assertRaises(exception.ObjectNotFound, self.store.object_size,
                          CONTAINER, 'a-00002')

    def test_delete_object_gone(self):
        self._put('a-00001', b'x')
        self._put('a-00002', b'y')
        self.store.delete_object(CONTAINER, 'a-00001')
        self.assertEqual(['a-00002'], self.store.list_objects(CONTAINER,
                                                              'a'))
        self.assertRaises(exception.ObjectNotFound, self.store.open_reader,
                          CONTAINER, 'a-00001')

    def test_delete_object_missing_no_error(self):
        self.store.delete_object(CONTAINER, 'never-00001')
        self._put('a-00001', b'x')
        self.store.delete_object(CONTAINER, 'a-00001')
        self.store.delete_object(CONTAINER, 'a-00001')
        self.assertEqual([], self.store.list_objects(CONTAINER, ''))

    # -- the store as a whole ------------------------------------------------

    def test_max_concurrent_writes_positive(self):
        self.assertIsInstance(self.store.max_concurrent_writes, int)
        self.assertGreaterEqual(self.store.max_concurrent_writes, 1)

    def test_check_and_describe_usable_store(self):
        self.assertIsNone(self.store.check())
        self.assertIsInstance(self.store.describe(), str)


class MemoryStoreContractTestCase(StoreContract, testtools.TestCase):

    def store_factory(self):
        return memory.MemoryStore()


class PosixStoreContractTestCase(StoreContract, testtools.TestCase):

    def store_factory(self):
        return posix.PosixStore(self.useFixture(fixtures.TempDir()).path)

    def leftovers(self, store, container):
        """Every file in the container directory that is not an object."""
        directory = store.container_path(container)
        objects = set(store.list_objects(container, ''))
        return sorted(set(os.listdir(directory)) - objects)


class SwiftStoreContractTestCase(StoreContract, testtools.TestCase):
    """The contract against a real Swift server on 127.0.0.1.

    The server is shared by the tests of the process: each test removes
    its containers when it ends.
    """

    def store_factory(self):
        server = self.useFixture(swift_server.SwiftServerFixture()).server
        self.addCleanup(self._remove_containers, server)
        return swift_store.SwiftStore(swift_store.SwiftSettings(
            auth_url=server.auth_url, user=server.user, key=server.key,
            retries=1, backoff=0))

    @staticmethod
    def _remove_containers(server):
        conn = server.connection()
        for name in (CONTAINER, OTHER_CONTAINER):
            try:
                for item in conn.get_container(name, full_listing=True)[1]:
                    conn.delete_object(name, item['name'])
                conn.delete_container(name)
            except swiftclient_exc.ClientException as e:
                if e.http_status != 404:
                    raise
