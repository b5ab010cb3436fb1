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

"""``backup-import`` of a record with an empty prefix, then its delete.

Cinder's own backup manager makes a backup, exports its record, and
imports a copy of it under another id with ``service_metadata: ''``, as
``cinder backup-import`` does; then deletes the imported backup.  The
manager calls the driver's ``import_record`` before it applies the
record's fields, so neither driver can refuse the import.  Upstream
Cinder 29.0.0's POSIX driver then deletes every object of the container,
the real backup's included; ours refuses the delete and keeps them.
"""

import base64
import json
import uuid

from cinder_chunked_ext.tests.compat import base
from cinder_chunked_ext.tests.compat import test_manager_cycle as cycle


class ImportEmptyPrefixTestCase(cycle.ManagerTestCase):

    def _use_driver(self, driver):
        from oslo_utils import importutils
        self.conf.config(backup_driver=driver)
        self.manager = importutils.import_object(
            self.conf.conf.backup_manager)
        self.manager.host = 'testhost'
        self.manager.is_initialized = True

    def _import_with_empty_prefix(self, real):
        """The imported backup: ``real``'s record, new id, prefix ''."""
        exported = self.manager.export_record(self.ctxt, real)
        record = self.objects.Backup.decode_record(exported['backup_url'])
        record.update(id=str(uuid.uuid4()), service_metadata='')
        url = base64.b64encode(json.dumps(record).encode()).decode()
        backup = self.objects.BackupImport(
            context=self.ctxt, id=record['id'], user_id=real.user_id,
            project_id=real.project_id, volume_id=real.volume_id,
            status='creating', deleted=False, metadata={})
        backup.create()
        self.manager.import_record(self.ctxt, backup,
                                   exported['backup_service'], url, [])
        return self.objects.Backup.get_by_id(self.ctxt, backup.id)

    def _run(self, driver):
        self._use_driver(driver)
        volume = self.create_volume(status='available')
        real = self._create(volume, cycle._volume_data())
        self.assertEqual('available', real.status)
        files = self._object_files(real)
        self.assertGreater(len(files), 2)

        imported = self._import_with_empty_prefix(real)
        self.assertEqual('available', imported.status)
        self.assertEqual('', imported.service_metadata)
        self.assertEqual(real.container, imported.container)

        imported.status = 'deleting'
        imported.save()
        try:
            self.manager.delete_backup(self.ctxt, imported)
        except Exception as e:  # noqa - asserted below, per driver
            error = e
        else:
            error = None
        return real, files, imported, error

    def test_upstream_delete_empty_prefix_deletes_other_backup(self):
        real, files, _imported, error = self._run(base.UPSTREAM_POSIX)
        self.assertIsNone(error)
        # The hole upstream has: the real backup's objects are gone.
        self.assertEqual([], self._object_files(real))
        self.assertNotEqual([], files)

    def test_ours_delete_empty_prefix_refused_other_backup_kept(self):
        real, files, imported, error = self._run(base.OURS_POSIX)
        self.assertIsNotNone(error)
        self.assertIn('refused', str(error))
        self.assertEqual(files, self._object_files(real))
        imported = self.objects.Backup.get_by_id(self.ctxt, imported.id)
        self.assertEqual('error', imported.status)
        self.assertIn('nothing was deleted', imported.fail_reason)
        volume = self.create_volume(status='available')
        restored = self._restore(real, volume, True, len(
            cycle._volume_data()))
        self.assertSameBytes(cycle._volume_data(), restored)
