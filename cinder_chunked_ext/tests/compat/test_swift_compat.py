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

"""Upstream Cinder's Swift driver and ours read each other's backups.

Both drivers run against the same real Swift server (a one-node Swift on
127.0.0.1, tempauth), upstream's in single_user mode with auth version
1.  Upstream's driver runs its real data path; only what needs Cinder's
database or message bus is replaced: ``objects.Backup.get_by_id``
(parent lookups), ``db.volume_get`` (the volume size) and the progress
notifier.  The last test class runs our driver under Cinder's own backup
manager.  Skipped when Cinder is not importable, unless
``CINDER_CHUNKED_REQUIRE_CINDER=1``, where that is a failure.
"""

import json
import os
from unittest import mock

import ddt
from testtools import content

from cinder_chunked_ext.tests.compat import base
from cinder_chunked_ext.tests.compat import test_manager_cycle as cycle
from cinder_chunked_ext.tests.functional import test_swift_driver as functional
from cinder_chunked_ext.tests import swift_server

try:
    from cinder.backup.drivers import swift as upstream_swift
    from cinder import objects as cinder_objects
    from cinder.volume import volume_utils
except ImportError as e:  # pragma: no cover - depends on the environment
    upstream_swift = None
    IMPORT_ERROR = str(e)
else:
    cinder_objects.register_all()
    IMPORT_ERROR = None

BLOCK = functional.BLOCK
ALGORITHMS = ('none', 'zlib', 'zstd')
OURS_SWIFT = 'cinder_chunked_ext.drivers.swift.SwiftBackupDriver'


def require_cinder(testcase):
    """Skip without Cinder; fail when the run requires it."""
    if upstream_swift is not None:
        return
    message = 'cinder is not importable: %s' % IMPORT_ERROR
    if base.cinder_required():
        testcase.fail(message)
    testcase.skipTest(message)


class CompatTestCase(functional.SwiftDriverTestCase):
    """Our driver (``self.driver()``) and upstream's (``self.upstream()``)."""

    def setUp(self):
        require_cinder(self)
        super().setUp()
        # Cinder's driver base disposes of the database engine when it
        # is built; an in-memory SQLite one is enough (never queried).
        self.conf.config(connection='sqlite://', group='database')
        # Upstream's driver connects only for a context with a user.
        self.context = functional.UserContext(self.env)
        get_by_id = mock.patch.object(
            cinder_objects.Backup, 'get_by_id',
            side_effect=lambda context, backup_id:
                self.env.get_backup(backup_id))
        self.get_by_id = get_by_id.start()
        self.addCleanup(get_by_id.stop)
        notify = mock.patch.object(volume_utils,
                                   'notify_about_backup_usage')
        self.notify = notify.start()
        self.addCleanup(notify.stop)

    def use_compression(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)

    def upstream(self):
        driver = upstream_swift.SwiftBackupDriver(self.context)
        volume_get = mock.patch.object(
            driver.db, 'volume_get',
            side_effect=lambda context, volume_id:
                {'id': volume_id,
                 'size': self.env.volume_size_gib(volume_id)})
        volume_get.start()
        self.addCleanup(volume_get.stop)
        real_backup = driver.backup

        def backup(backup, volume_file, backup_metadata=False):
            # Volume metadata lives in Cinder's database: not here.
            return real_backup(backup, volume_file,
                               backup_metadata=backup_metadata)
        driver.backup = backup
        return driver

    def volume_data(self):
        """Random, compressible and zero blocks, and a partial block."""
        return (os.urandom(3 * BLOCK) + b'compress me ' * 8192
                + bytes(5 * BLOCK) + os.urandom(2 * BLOCK) + b'tail')

    def both_restore(self, backup, data):
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))
        self.assertEqual(data, self.restore(backup, len(data)))


@ddt.ddt
class CrossRestoreTestCase(CompatTestCase):

    @ddt.data(*ALGORITHMS)
    def test_upstream_backup_restores_with_ours(self, algorithm):
        self.use_compression(algorithm)
        data = self.volume_data()
        backup = self.backup(data, driver=self.upstream())
        self.assertEqual(self.container, backup.container)
        self.assertEqual('volume_%s' % backup.volume_id,
                         backup.service_metadata.split('/')[0])
        self.assertEqual(data, self.restore(backup, len(data)))

    @ddt.data(*ALGORITHMS)
    def test_our_backup_restores_with_upstream(self, algorithm):
        self.use_compression(algorithm)
        data = self.volume_data()
        backup = self.backup(data)
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))

    @ddt.data(*ALGORITHMS)
    def test_same_volume_same_object_layout_both_drivers(self, algorithm):
        self.use_compression(algorithm)
        data = self.volume_data()
        ours = self.backup(data)
        theirs = self.backup(data, driver=self.upstream())
        ours_names = [n.rsplit('/', 1)[1].split('_backup_')[1]
                      .replace(ours.id, 'ID') for n in
                      self.names(ours.service_metadata)]
        theirs_names = [n.rsplit('/', 1)[1].split('_backup_')[1]
                        .replace(theirs.id, 'ID') for n in
                        self.names(theirs.service_metadata)]
        self.assertEqual(theirs_names, ours_names)

    @ddt.data(*ALGORITHMS)
    def test_mixed_chain_upstream_full_our_incremental(self, algorithm):
        self.use_compression(algorithm)
        data1 = self.volume_data()
        full = self.backup(data1, driver=self.upstream())
        data2 = functional.replace_block(data1, 1)
        data2 = functional.replace_block(data2, 4, bytes(BLOCK))
        incr = self.backup(data2, parent=full)
        self.both_restore(incr, data2)
        self.both_restore(full, data1)

    @ddt.data(*ALGORITHMS)
    def test_mixed_chain_our_full_upstream_incremental(self, algorithm):
        self.use_compression(algorithm)
        data1 = self.volume_data()
        full = self.backup(data1)
        data2 = functional.replace_block(data1, 9)
        incr = self.backup(data2, parent=full, driver=self.upstream())
        data3 = functional.replace_block(data2, 0)
        incr2 = self.backup(data3, parent=incr)
        self.both_restore(incr2, data3)
        self.both_restore(incr, data2)
        self.assertTrue(self.get_by_id.called)

    def test_delete_by_upstream_of_our_backup_leaves_nothing(self):
        backup = self.backup(self.volume_data())
        self.upstream().delete_backup(backup)
        self.assertEqual([], self.names(backup.service_metadata))

    def test_delete_by_ours_of_upstream_backup_leaves_nothing(self):
        backup = self.backup(self.volume_data(), driver=self.upstream())
        self.driver().delete_backup(backup)
        self.assertEqual([], self.names(backup.service_metadata))


@ddt.ddt
class NewObjectShapesTestCase(CompatTestCase):
    """Objects of shapes ours writes since issue 17; upstream restores.

    A streamed object (larger than a piece: Swift writers hold what
    they upload) decides at its first piece whether it is compressed,
    so a text start and a random rest give an object recorded as
    compressed whose stored form is larger than the data (upstream
    recorded ``none`` then).
    """

    @ddt.data('zlib', 'zstd')
    def test_compressed_object_larger_than_raw_restored_by_upstream(
            self, algorithm):
        self.use_compression(algorithm)
        self.conf.config(backup_swift_object_size=16 * base.MiB)
        data = base.larger_than_raw(16 * base.MiB)
        backup = self.backup(data)
        (name,) = self.data_names(backup)
        meta = json.loads(self.conn.get_object(
            self.container, backup.service_metadata + '_metadata')[1])
        (fields,) = [f for entry in meta['objects'] for f in entry.values()]
        self.assertEqual((0, len(data), algorithm),
                         (fields['offset'], fields['length'],
                          fields['compression']))
        stored = int(self.conn.head_object(self.container,
                                           name)['content-length'])
        self.assertGreater(stored, len(data))
        self.addDetailUniqueName('sizes', content.text_content(
            '%s: %d bytes stored for %d' % (algorithm, stored, len(data))))
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.upstream()))


class SwiftManagerCycleTestCase(cycle.ManagerCycleTestCase):
    """Cinder's backup manager with ``backup_driver`` = our Swift driver.

    The inherited tests (the manager's driver set-up, a restore
    cancelled by a status change) run on Swift too.
    """

    def setUp(self):
        super().setUp()
        from oslo_utils import importutils
        self.swift = self.useFixture(swift_server.SwiftServerFixture())
        self.container = 'cycle-%s' % os.urandom(6).hex()
        self.swift.configure(self.conf,
                             backup_swift_container=self.container,
                             backup_swift_block_size=cycle.BLOCK,
                             backup_swift_object_size=cycle.CHUNK)
        self.conf.config(backup_driver=OURS_SWIFT)
        self.manager = importutils.import_object(
            self.conf.conf.backup_manager)
        self.manager.host = 'testhost'
        self.manager.is_initialized = True
        self.conn = self.swift.server.connection()

    def _object_files(self, backup):
        return self.swift_names(backup.service_metadata)

    def swift_names(self, prefix=''):
        try:
            listing = self.conn.get_container(self.container, prefix=prefix,
                                              full_listing=True)[1]
        except Exception as e:  # noqa - a container never created
            if getattr(e, 'http_status', None) == 404:
                return []
            raise
        return [item['name'] for item in listing]

    def test_backup_restore_delete_cycle_data_identical(self):
        source = self.create_volume(status='available',
                                    metadata={'origin': 'compat'})
        data0 = cycle._volume_data()
        data1 = cycle._changed(data0)

        full = self._create(source, data0)
        self.assertEqual('available', full.status, full.fail_reason)
        self.assertEqual(OURS_SWIFT, full.service)
        self.assertEqual(self.container, full.container)
        volume, _stamp, name = full.service_metadata.split('/')
        self.assertEqual('volume_%s' % source.id, volume)
        self.assertEqual('az_nova_backup_%s' % full.id, name)
        self.assertEqual(cycle.FULL_OBJECTS, full.object_count)
        self.assertEqual(cycle.FULL_OBJECTS + 2,
                         len(self._object_files(full)))

        incr = self._create(source, data1, parent=full)
        self.assertEqual('available', incr.status, incr.fail_reason)
        self.assertEqual(full.id, incr.parent_id)
        self.assertEqual(3, incr.object_count)

        new = self.create_volume(status='restoring-backup')
        restored = self._restore(incr, new, True, len(data1))
        self.assertSameBytes(data1, restored, 'incremental, new volume')
        new = self.objects.Volume.get_by_id(self.ctxt, new.id)
        self.assertEqual('available', new.status)
        self.assertEqual('compat', new.metadata.get('origin'))

        restored = self._restore(full, source, False, len(data0))
        self.assertSameBytes(data0, restored, 'full, existing volume')

        self._delete(incr)
        self.assertEqual([], self._object_files(incr))
        self.assertEqual(cycle.FULL_OBJECTS + 2,
                         len(self._object_files(full)))
        self._delete(full)
        self.assertEqual([], self.swift_names())
