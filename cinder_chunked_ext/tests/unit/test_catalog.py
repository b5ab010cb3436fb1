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

"""Tests of the standalone tool's catalog, its engine environment and the
repository environment used for disaster recovery.

The catalog is a real SQLite file in a temporary directory; the engine
runs through the real POSIX driver with a small geometry (4 KiB hash
blocks, 16 KiB objects).
"""

import io
import os
import random
import sqlite3

import ddt
import fixtures
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import objects
from cinder_chunked_ext import exception
from cinder_chunked_ext.tool import catalog
from cinder_chunked_ext.tool import recovery

KiB = 1024
GiB = 1024 ** 3
SHA = 4 * KiB
CHUNK = 4 * SHA


def volume_bytes(size, seed=0):
    """Random data with a zero hash block every third block."""
    data = bytearray(random.Random(seed).randbytes(size))
    for start in range(0, size, 3 * SHA):
        data[start:start + SHA] = bytes(len(data[start:start + SHA]))
    return bytes(data)


class CatalogTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.path = os.path.join(self.tmp, 'sub', 'catalog.sqlite3')
        self.catalog = catalog.Catalog(self.path)
        self.addCleanup(self.catalog.close)

    def new(self, volume_id='vol-1', **fields):
        fields.setdefault('size', 1)
        return self.catalog.new_backup(volume_id, **fields)


@ddt.ddt
class TestCatalog(CatalogTestCase):

    def test_new_backup_creates_file_and_creating_record(self):
        record = self.new(display_name='n', volume_size_bytes=123)
        self.assertTrue(os.path.isfile(self.path))
        self.assertEqual(catalog.CREATING, record.status)
        self.assertEqual('n', record['display_name'])
        self.assertEqual(123, record.volume_size_bytes)
        self.assertEqual(0, record.object_count)
        self.assertIsNotNone(record.created_at.tzinfo)

    def test_save_persists_every_field_for_another_connection(self):
        record = self.new()
        record.container = 'ab/cd/x'
        record.service_metadata = 'prefix'
        record.object_count = 7
        record.status = catalog.AVAILABLE
        record.save()
        other = catalog.Catalog(self.path)
        self.addCleanup(other.close)
        again = other.get(record.id)
        self.assertEqual(('ab/cd/x', 'prefix', 7, catalog.AVAILABLE),
                         (again.container, again.service_metadata,
                          again.object_count, again.status))
        self.assertEqual(record.created_at, again.created_at)

    def test_refresh_sees_status_set_by_another_connection(self):
        record = self.new()
        other = catalog.Catalog(self.path)
        self.addCleanup(other.close)
        theirs = other.get(record.id)
        theirs.status = catalog.DELETING
        theirs.save()
        with record.as_read_deleted():
            record.refresh()
        self.assertEqual(catalog.DELETING, record.status)

    def test_refresh_of_removed_record_reads_deleted(self):
        record = self.new()
        self.catalog.remove(record.id)
        record.refresh()
        self.assertEqual(catalog.DELETED, record.status)

    def test_save_of_removed_record_does_not_bring_it_back(self):
        record = self.new()
        self.catalog.remove(record.id)
        record.save()
        self.assertRaises(exception.BackupNotFound, self.catalog.get,
                          record.id)

    def test_get_unknown_id_raises_backup_not_found(self):
        self.assertRaises(exception.BackupNotFound, self.catalog.get, 'nope')

    def test_resolve_unique_prefix_returns_record(self):
        record = self.new(backup_id='abcdef01-0000')
        self.new(backup_id='abcxyz02-0000')
        self.assertEqual(record.id, self.catalog.resolve('abcdef').id)
        self.assertEqual(record.id,
                         self.catalog.resolve('abcdef01-0000').id)

    def test_resolve_ambiguous_prefix_names_candidates(self):
        self.new(backup_id='abcdef01')
        self.new(backup_id='abcdef02')
        e = self.assertRaises(catalog.AmbiguousBackupId,
                              self.catalog.resolve, 'abcdef')
        self.assertIn('abcdef01', str(e))
        self.assertIn('abcdef02', str(e))

    @ddt.data('abc', 'ab%_', 'a_c%')
    def test_resolve_short_or_wildcard_prefix_not_found(self, prefix):
        self.new(backup_id='abcdef01')
        self.new(backup_id='abcdef02')
        self.assertRaises(exception.BackupNotFound, self.catalog.resolve,
                          prefix)

    def test_latest_available_skips_other_statuses_and_volumes(self):
        first = self.new()
        first.status = catalog.AVAILABLE
        first.save()
        second = self.new()
        second.status = catalog.AVAILABLE
        second.save()
        failed = self.new()
        failed.status = catalog.ERROR
        failed.save()
        other = self.new(volume_id='vol-2')
        other.status = catalog.AVAILABLE
        other.save()
        self.assertEqual(second.id,
                         self.catalog.latest_available('vol-1').id)
        self.assertIsNone(self.catalog.latest_available('vol-3'))

    def test_children_and_list_filters(self):
        parent = self.new()
        child = self.new(parent_id=parent.id)
        self.new(volume_id='vol-2')
        self.assertEqual([child.id],
                         [c.id for c in self.catalog.children(parent.id)])
        self.assertEqual([parent.id, child.id],
                         [r.id for r in self.catalog.list(volume_id='vol-1')])
        self.assertEqual(3, len(self.catalog.list(status=catalog.CREATING)))
        self.assertEqual([], self.catalog.list(status=catalog.AVAILABLE))

    def test_missing_file_without_create_reads_empty_and_writes_nothing(self):
        path = os.path.join(self.tmp, 'none', 'catalog.sqlite3')
        empty = catalog.Catalog(path, create=False)
        self.assertEqual([], empty.list())
        self.assertFalse(empty.exists)
        self.assertFalse(os.path.exists(os.path.dirname(path)))

    def test_newer_schema_refused(self):
        conn = sqlite3.connect(self.path)
        conn.execute('PRAGMA user_version = %d'
                     % (catalog.SCHEMA_VERSION + 1))
        conn.close()
        e = self.assertRaises(catalog.CatalogError, catalog.Catalog,
                              self.path)
        self.assertIn('newer version', str(e))

    def test_garbage_file_refused_with_catalog_error(self):
        path = os.path.join(self.tmp, 'garbage')
        with open(path, 'wb') as f:
            f.write(b'this is not a database' * 100)
        e = self.assertRaises(catalog.CatalogError, catalog.Catalog, path)
        self.assertIn(path, str(e))

    def test_foreign_sqlite_database_refused(self):
        path = os.path.join(self.tmp, 'other.db')
        conn = sqlite3.connect(path)
        conn.execute('CREATE TABLE things (x)')
        conn.commit()
        conn.close()
        e = self.assertRaises(catalog.CatalogError, catalog.Catalog, path)
        self.assertIn('not a backup catalog', str(e))

    def test_volume_size_and_metadata_round_trip(self):
        self.catalog.put_volume('vol-1', '/dev/x', GiB + 1)
        self.catalog.put_volume_metadata('vol-1', '{"a": 1}')
        self.catalog.put_volume_metadata('vol-9', '{"b": 2}')
        self.assertEqual(2, self.catalog.volume_size_gib('vol-1'))
        self.assertEqual('{"a": 1}', self.catalog.volume_metadata('vol-1'))
        self.assertEqual('{"b": 2}', self.catalog.volume_metadata('vol-9'))
        self.assertIsNone(self.catalog.volume_size_gib('vol-2'))

    @ddt.unpack
    @ddt.data((1, 1), (GiB, 1), (GiB + 1, 2), (10 * GiB, 10), (0, 1))
    def test_size_gib_rounds_up(self, size_bytes, expected):
        self.assertEqual(expected, catalog.size_gib(size_bytes))

    def test_volume_id_for_path_stable_through_symlinks(self):
        target = os.path.join(self.tmp, 'vol.img')
        open(target, 'wb').close()
        link = os.path.join(self.tmp, 'link.img')
        os.symlink(target, link)
        self.assertEqual(catalog.volume_id_for_path(target),
                         catalog.volume_id_for_path(link))
        self.assertNotEqual(catalog.volume_id_for_path(target),
                            catalog.volume_id_for_path(self.path))


class EngineTestCase(CatalogTestCase):
    """The real engine, with the catalog as its environment."""

    def setUp(self):
        super().setUp()
        self.repo = os.path.join(self.tmp, 'repo')
        conf = self.useFixture(config_fixture.Config())
        conf.config(backup_posix_path=self.repo, backup_file_size=CHUNK,
                    backup_sha_block_size_bytes=SHA,
                    backup_compression_algorithm='zlib')
        conf.config(workers=2, group='chunked_backup')
        self.env = catalog.CatalogEnvironment(self.catalog)
        self.driver = posix.PosixBackupDriver(catalog.Context(self.env))

    def backup(self, data, parent=None, volume_id='vol-1'):
        self.catalog.put_volume(volume_id, '/v', len(data))
        record = self.catalog.new_backup(
            volume_id, size=catalog.size_gib(len(data)),
            parent_id=parent.id if parent else None,
            volume_size_bytes=len(data))
        self.driver.backup(record, io.BytesIO(data))
        record.status = catalog.AVAILABLE
        record.save()
        return record

    def restore(self, record, size):
        target = io.BytesIO(bytes(size))
        record.status = catalog.RESTORING
        record.save()
        self.driver.restore(record, 'vol-x', target, True)
        return target.getvalue()


class TestCatalogEnvironment(EngineTestCase):

    def test_backup_records_container_prefix_and_object_count(self):
        data = volume_bytes(5 * CHUNK + 100)
        record = self.backup(data)
        stored = catalog.Catalog(self.path).get(record.id)
        self.assertEqual(6, stored.object_count)
        self.assertEqual(os.path.join(record.id[0:2], record.id[2:4],
                                      record.id), stored.container)
        self.assertIn('_backup_%s' % record.id, stored.service_metadata)

    def test_incremental_chain_restores_through_catalog_parent_links(self):
        data = bytearray(volume_bytes(4 * CHUNK))
        full = self.backup(bytes(data))
        data[SHA:2 * SHA] = b'\x01' * SHA
        incr = self.backup(bytes(data), parent=full)
        self.assertEqual(1, incr.object_count)
        fresh = self.catalog.get(incr.id)
        self.assertEqual(bytes(data), self.restore(fresh, len(data)))

    def test_backup_of_record_removed_meanwhile_is_cancelled(self):
        data = volume_bytes(3 * CHUNK)
        self.catalog.put_volume('vol-1', '/v', len(data))
        record = self.catalog.new_backup('vol-1', size=1)
        self.catalog.remove(record.id)
        self.driver.backup(record, io.BytesIO(data))
        self.assertEqual(catalog.DELETED, record.status)
        leftovers = [name for _d, _s, names in os.walk(self.repo)
                     for name in names]
        self.assertEqual([], leftovers)

    def test_volume_metadata_goes_through_catalog(self):
        self.env.put_volume_metadata('vol-7', '{"k": "v"}')
        self.assertEqual('{"k": "v"}', self.env.get_volume_metadata('vol-7'))
        self.catalog.put_volume('vol-7', '/v', 3 * GiB)
        self.assertEqual(3, self.env.volume_size_gib('vol-7'))


class TestRepositoryEnvironment(EngineTestCase):
    """Backups found and restored without the catalog."""

    def repository_driver(self):
        env = recovery.RepositoryEnvironment()
        driver = posix.PosixBackupDriver(catalog.Context(env))
        env.attach(driver)
        return env, driver

    def test_scan_finds_every_backup_with_parent_links(self):
        data = bytearray(volume_bytes(3 * CHUNK))
        full = self.backup(bytes(data))
        data[0:SHA] = b'\x02' * SHA
        incr = self.backup(bytes(data), parent=full)
        env, _driver = self.repository_driver()
        entries = env.scan()
        self.assertEqual({full.id: None, incr.id: full.id},
                         {e.record.id: e.record.parent_id for e in entries})
        by_id = {e.record.id: e for e in entries}
        self.assertEqual(incr.container, by_id[incr.id].container)
        self.assertEqual(incr.service_metadata, by_id[incr.id].prefix)

    def test_scan_reports_unreadable_metadata_and_goes_on(self):
        full = self.backup(volume_bytes(2 * CHUNK))
        bad_dir = os.path.join(self.repo, 'zz')
        os.makedirs(bad_dir)
        with open(os.path.join(bad_dir, 'x_backup_y_metadata'), 'wb') as f:
            f.write(b'{not json')
        env, _driver = self.repository_driver()
        entries = env.scan()
        self.assertEqual([full.id], [e.record.id for e in entries
                                     if e.record])
        errors = [e for e in entries if e.error]
        self.assertEqual(1, len(errors))
        self.assertEqual('zz', errors[0].container)

    def test_restore_from_repository_finds_parent_by_id(self):
        data = bytearray(volume_bytes(3 * CHUNK + 10))
        full = self.backup(bytes(data))
        data[2 * SHA:3 * SHA] = b'\x03' * SHA
        incr = self.backup(bytes(data), parent=full)
        env, driver = self.repository_driver()
        record = env.load(incr.container, incr.service_metadata)
        chain = objects.backup_chain(env, record)
        self.assertEqual([incr.id, full.id], [b.id for b in chain])
        self.assertEqual(len(data), recovery.volume_size_bytes(chain))
        record.status = catalog.RESTORING
        target = io.BytesIO(bytes(len(data)))
        driver.restore(record, 'vol-x', target, True)
        self.assertEqual(bytes(data), target.getvalue())

    def test_parent_in_another_container_found_by_walking(self):
        data = volume_bytes(2 * CHUNK)
        full = self.backup(bytes(data))
        moved = os.path.join(self.repo, 'elsewhere')
        os.rename(os.path.join(self.repo, full.container), moved)
        env, _driver = self.repository_driver()
        found = env.locate(full.id)
        self.assertEqual('elsewhere', found.container)

    def test_load_missing_prefix_raises_not_in_repository(self):
        env, _driver = self.repository_driver()
        os.makedirs(os.path.join(self.repo, 'c'))
        self.assertRaises(recovery.NotInRepository, env.load, 'c', 'nothing')
        self.assertRaises(recovery.NotInRepository, env.locate, 'no-such-id')
