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

"""Our driver driven by Cinder's own backup manager.

``cinder.backup.manager.BackupManager`` loads the driver from
``backup_driver`` in the configuration and runs create, restore and
delete on real ``objects.Backup`` / ``objects.Volume`` records.  Only the
volume service is replaced (its RPC calls: the backup device, the
connection and export of a volume), and the host's connector properties,
which need root.  A volume is attached by os-brick's real ``local``
connector to a temporary file, so the manager opens, reads and writes
the volume file itself, as it does a block device.
"""

import os
import subprocess
import sys
import textwrap

from cinder_chunked_ext.engine import concurrency
from cinder_chunked_ext.tests.compat import base

KiB = base.KiB
BLOCK = 16 * KiB
CHUNK = 8 * BLOCK
LAYOUT = 'tttttttt' + 'rrrrrrrr' + 'zzzzzzzz' + 'trzttrzt' + 'tzr'
TAIL = 777
FULL_OBJECTS = 5


def _volume_data():
    data = base.volume_data(LAYOUT, BLOCK, 21)
    # Ends with non-zero bytes: the manager opens a device file with 'wb'
    # (a regular file is truncated), so a new volume's restored size is
    # where the last non-zero piece ends.
    return data + base.volume_data('r', BLOCK, 22)[:TAIL]


def _changed(data):
    # Two runs of changed blocks and a zeroed run: three objects.
    data = base.overwrite(data, BLOCK, base.volume_data('rr', BLOCK, 23))
    data = base.overwrite(data, CHUNK + 3 * BLOCK, bytes(2 * BLOCK))
    return base.overwrite(data, 3 * CHUNK, b'changed')


class ManagerTestCase(base.CinderDBTestCase):
    """Cinder's backup manager with our driver; helpers, no tests."""

    def setUp(self):
        super().setUp()
        from cinder.backup import manager  # noqa: F401 - backup_manager
        from cinder.db import api as db_api
        from cinder import exception as cinder_exception
        from cinder import objects
        from oslo_utils import importutils
        self.db_api = db_api
        self.objects = objects
        self.cinder_exception = cinder_exception
        self.conf.config(backup_driver=base.OURS_POSIX,
                         backup_sha_block_size_bytes=BLOCK,
                         backup_file_size=CHUNK,
                         backup_compression_algorithm='zstd')
        self.manager = importutils.import_object(
            self.conf.conf.backup_manager)
        self.manager.host = 'testhost'
        self.manager.is_initialized = True

        # The volume service: its answers are what it would send for a
        # volume exported as a local file.
        self.devices = {}
        volume_api = 'cinder.volume.rpcapi.VolumeAPI.'
        self.get_backup_device = self.patch(volume_api + 'get_backup_device')
        self.patch(volume_api + 'secure_file_operations_enabled',
                   return_value=False)
        self.patch(volume_api + 'initialize_connection',
                   side_effect=self._connection)
        self.terminate = self.patch(volume_api + 'terminate_connection')
        self.patch(volume_api + 'remove_export')
        # Host inspection by os-brick needs root; the local connector
        # needs no properties.
        self.patch('cinder.volume.volume_utils.'
                   'brick_get_connector_properties', return_value={})

    def _connection(self, context, volume, properties):
        return {'driver_volume_type': 'local',
                'data': {'device_path': self.devices[volume.id]}}

    def _create(self, volume, data, parent=None):
        self.db_api.volume_update(self.ctxt, volume.id,
                                  {'status': 'backing-up',
                                   'previous_status': 'available'})
        self.devices[volume.id] = self.write_volume(
            'device-%s' % volume.id, data)
        backup = self.create_backup(volume, parent=parent, service=None)
        self.get_backup_device.reset_mock()

        self.manager.create_backup(self.ctxt, backup)

        # The volume service answers asynchronously with the device.
        volume = self.objects.Volume.get_by_id(self.ctxt, volume.id)
        self.get_backup_device.assert_called_once_with(self.ctxt, backup,
                                                       volume)
        device = self.objects.BackupDeviceInfo.from_primitive(
            {'backup_device': volume, 'secure_enabled': False,
             'is_snapshot': False},
            self.ctxt, ['admin_metadata', 'metadata'])
        self.manager.continue_backup(self.ctxt, backup, device)
        return self.objects.Backup.get_by_id(self.ctxt, backup.id)

    def _restore(self, backup, volume, volume_is_new, device_size):
        self.db_api.volume_update(self.ctxt, volume.id,
                                  {'status': 'restoring-backup'})
        if volume_is_new:
            path = self.new_volume_file('device-%s' % volume.id,
                                        device_size)
        else:
            path = self.existing_volume_file('device-%s' % volume.id,
                                             device_size)
        self.devices[volume.id] = path
        backup.status = 'restoring'
        backup.save()

        self.manager.restore_backup(self.ctxt, backup, volume.id,
                                    volume_is_new)

        return self.read_volume(path)

    def _delete(self, backup):
        backup.status = 'deleting'
        backup.save()
        self.manager.delete_backup(self.ctxt, backup)
        self.assertRaises(self.cinder_exception.BackupNotFound,
                          self.db_api.backup_get, self.ctxt, backup.id)

    def _object_files(self, backup):
        return [name for name in self.repository_files()
                if os.path.basename(name).startswith(
                    backup.service_metadata)]


class ManagerCycleTestCase(ManagerTestCase):
    """create -> incremental -> restore (new and old volume) -> delete."""

    def test_driver_setup_by_manager_initializes(self):
        from oslo_service import loopingcall
        self.manager.is_initialized = False
        self.assertRaises(loopingcall.LoopingCallDone,
                          self.manager._setup_backup_driver, self.ctxt)
        self.assertTrue(self.manager.is_working())
        self.assertTrue(self.manager.check_support_to_force_delete(
            self.ctxt))

    def test_backup_restore_delete_cycle_data_identical(self):
        source = self.create_volume(status='available',
                                    metadata={'origin': 'compat'})
        data0 = _volume_data()
        data1 = _changed(data0)

        # Full backup.
        self.notifier.reset()
        full = self._create(source, data0)
        self.assertEqual('available', full.status, full.fail_reason)
        self.assertEqual(base.OURS_POSIX, full.service)
        self.assertEqual(os.path.join(full.id[0:2], full.id[2:4], full.id),
                         full.container)
        self.assertTrue(full.service_metadata.startswith(
            'volume_%s_' % source.id))
        self.assertEqual(FULL_OBJECTS, full.object_count)
        self.assertEqual(1, full.size)
        self.assertEqual(FULL_OBJECTS + 2, len(self._object_files(full)))
        volume = self.objects.Volume.get_by_id(self.ctxt, source.id)
        self.assertEqual('available', volume.status)
        progress = [n['payload'] for n in self.notifier.notifications
                    if n['event_type'] == 'backup.createprogress']
        self.assertNotEqual([], progress,
                            'no backup.createprogress notification')
        self.assertEqual(100, progress[-1]['backup_percent'])
        self.assertEqual(full.id, progress[-1]['backup_id'])
        events = [n['event_type'] for n in self.notifier.notifications]
        self.assertIn('backup.create.end', events)

        # Incremental backup on top of it.
        incr = self._create(source, data1, parent=full)
        self.assertEqual('available', incr.status, incr.fail_reason)
        self.assertEqual(full.id, incr.parent_id)
        self.assertEqual(3, incr.object_count)
        full = self.objects.Backup.get_by_id(self.ctxt, full.id)
        self.assertEqual(1, full.num_dependent_backups)

        # Restore the incremental onto a new volume.
        new = self.create_volume(status='restoring-backup')
        restored = self._restore(incr, new, True, len(data1))
        self.assertSameBytes(data1, restored, 'incremental, new volume')
        new = self.objects.Volume.get_by_id(self.ctxt, new.id)
        self.assertEqual('available', new.status)
        self.assertEqual(incr.id, new.metadata.get('src_backup_id'))
        self.assertEqual('compat', new.metadata.get('origin'))
        incr.refresh()
        self.assertEqual('available', incr.status)

        # Restore the full backup over the volume it came from.
        restored = self._restore(full, source, False, len(data0))
        self.assertSameBytes(data0, restored, 'full, existing volume')
        volume = self.objects.Volume.get_by_id(self.ctxt, source.id)
        self.assertEqual('available', volume.status)

        # Delete the incremental, then the full backup.
        self._delete(incr)
        self.assertEqual([], self._object_files(incr))
        self.assertEqual(FULL_OBJECTS + 2, len(self._object_files(full)))
        full.refresh()
        self.assertEqual(0, full.num_dependent_backups)
        self._delete(full)
        self.assertEqual([], self.repository_files())

    def test_restore_cancelled_by_status_change_volume_error(self):
        source = self.create_volume(status='available')
        data = _volume_data()
        backup = self._create(source, data)
        target = self.create_volume(status='restoring-backup')
        real_refresh = self.objects.Backup.refresh
        refreshes = []

        def operator_resets_status(obj):
            # The driver re-reads the status before each object; an
            # operator resets it once the first object is restored.
            refreshes.append(obj.id)
            if len(refreshes) == 2:
                self.db_api.backup_update(self.ctxt, backup.id,
                                          {'status': 'available'})
            return real_refresh(obj)

        self.mock_object(self.objects.Backup, 'refresh', autospec=True,
                         side_effect=operator_resets_status)

        restored = self._restore(backup, target, True, len(data))

        target = self.objects.Volume.get_by_id(self.ctxt, target.id)
        self.assertEqual('error', target.status)
        backup = self.objects.Backup.get_by_id(self.ctxt, backup.id)
        self.assertEqual('available', backup.status)
        self.assertEqual(2, len(refreshes))
        # Only the first object was written.
        self.assertSameBytes(data[:CHUNK], restored[:CHUNK], 'first object')
        self.assertEqual(CHUNK, len(restored))


CHILD = textwrap.dedent('''
    import sys
    import unittest

    # First of all: applies the mode chosen by the environment.
    from cinder.tests import unit  # noqa: F401

    from cinder_chunked_ext.engine import concurrency

    mode, names = sys.argv[1], sys.argv[2:]
    if concurrency.eventlet_active() != (mode == 'eventlet'):
        sys.exit('the child does not run with %s' % mode)
    suite = unittest.defaultTestLoader.loadTestsFromNames(names)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(
        suite)
    ok = result.wasSuccessful() and result.testsRun and not result.skipped
    sys.exit(0 if ok else 1)
''')

# What runs again in the other concurrency mode: the manager cycle, a
# chain mixing both drivers, objects of several pieces (our worker pool
# and tpool paths), and the agreement of our concurrency helpers with
# Cinder's.
_POSIX = 'cinder_chunked_ext.tests.compat.test_posix_compat.'
OTHER_MODE_TESTS = [
    __name__ + '.ManagerCycleTestCase',
    _POSIX + 'IncrementalChainTestCase.test_chain_mixed_drivers_'
    'restores_every_layer_2___ours____upstream____ours__',
    _POSIX + 'LargeObjectTestCase.'
    'test_large_objects_both_ways_identical_1_zlib',
    _POSIX + 'LargeObjectTestCase.'
    'test_large_objects_both_ways_identical_3_zstd',
    _POSIX + 'CinderInterfaceTestCase',
    'cinder_chunked_ext.tests.compat.test_swift_compat.'
    'SwiftManagerCycleTestCase',
]


class OtherConcurrencyModeTestCase(base.CompatTestCase):
    """Tests again, with the concurrency mode this process lacks.

    Cinder 29 runs cinder-backup either under eventlet (the default) or
    with native threads (``OS_CINDER_DISABLE_EVENTLET_PATCHING``); the
    mode is fixed once per process, so the other one runs in a child.
    """

    def test_other_concurrency_mode_passes(self):
        other = 'threading' if concurrency.eventlet_active() else 'eventlet'
        env = dict(os.environ)
        env['OS_CINDER_DISABLE_EVENTLET_PATCHING'] = (
            '1' if other == 'threading' else '0')
        env[base.REQUIRE_CINDER_ENV] = '1'
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in [_top_dir(), env.get('PYTHONPATH')] if p)
        child = subprocess.run(
            [sys.executable, '-c', CHILD, other] + OTHER_MODE_TESTS,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=300, check=False)
        output = child.stdout.decode('utf-8', 'replace')
        failures = [line for line in output.splitlines()
                    if line.startswith(('FAIL:', 'ERROR:'))]
        self.assertEqual(0, child.returncode,
                         'tests in %s mode failed: %s\n%s' % (
                             other, failures, output[-6000:]))
        self.assertRegex(output, r'\nRan \d+ tests')
        self.assertRegex(output, r'\nOK\s*$')


def _top_dir():
    import cinder_chunked_ext
    return os.path.dirname(os.path.dirname(
        os.path.abspath(cinder_chunked_ext.__file__)))
