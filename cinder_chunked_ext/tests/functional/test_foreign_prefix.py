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

"""The tool's deletes and imports refuse an empty or foreign prefix.

Backups the tool really made on a POSIX repository; a catalog record
then points at another backup's container with an empty or foreign
``service_metadata``, as a hand-edited or imported record could.
``backup delete``, ``backup prune`` and ``repository import`` must
leave every other backup's objects in place.
"""

import os
import shutil

import ddt

from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tests.functional import test_maintenance


def _contents(paths):
    found = {}
    for path in paths:
        with open(path, 'rb') as f:
            found[path] = f.read()
    return found


@ddt.ddt
class TestForeignPrefix(test_maintenance.MaintenanceTestCase):

    def setUp(self):
        super().setUp()
        test_cli.write_volume(self.volume)
        self.kept = self.create('--name', 'kept')
        self.other = os.path.join(self.tmp, 'other.img')
        test_cli.write_volume(self.other, size=2 * test_cli.CHUNK, seed=3)
        self.victim = self.create('--name', 'victim', volume=self.other)

    def _point_victim_at_kept(self, prefix):
        self.sql('UPDATE backups SET container = ?, service_metadata = ? '
                 'WHERE id = ?', self.kept['container'], prefix,
                 self.victim['id'])

    @ddt.data('empty', 'other_backup')
    def test_backup_delete_foreign_prefix_refused_nothing_deleted(self, kind):
        prefix = '' if kind == 'empty' else self.kept['service_metadata']
        self._point_victim_at_kept(prefix)
        before = _contents(self.repository_files())

        _out, err = self.run_cli('backup', 'delete', self.victim['id'],
                                 expect=1)

        self.assertIn('refused', err)
        self.assertIn('nothing was deleted', err)
        self.assertEqual(before, _contents(self.repository_files()))
        record = self.records()[self.victim['id']]
        self.assertEqual('error', record.status)
        self.assertIn('refused', record.fail_reason)
        report, _err = self.run_json('verify', self.kept['id'])
        self.assertTrue(report['ok'])

    def test_backup_delete_prefix_of_other_objects_refused_own_kept(self):
        # The victim's prefix is its own, but objects of another name
        # start with it: the delete is refused before its own _metadata,
        # the first object the tool deletes, goes.
        directory = os.path.join(self.repo, self.victim['container'])
        own = self.victim['service_metadata']
        stray = os.path.join(directory, own + '_copy_backup_x-00001')
        with open(stray, 'wb') as f:
            f.write(b'another backup')
        before = _contents(self.repository_files())

        _out, err = self.run_cli('backup', 'delete', self.victim['id'],
                                 expect=1)

        self.assertIn(os.path.basename(stray), err)
        self.assertEqual(before, _contents(self.repository_files()))
        self.assertEqual('error', self.records()[self.victim['id']].status)

    def test_prune_foreign_prefix_refused_nothing_deleted(self):
        # The victim is the older of two backups of its volume: the one
        # that --keep-last 1 deletes.
        newer = self.create('--name', 'newer', volume=self.other)
        self._point_victim_at_kept('')
        before = _contents(self.repository_files())

        doc = self.main('backup', 'prune', '--keep-last', '1', expect=1)

        self.assertIn('nothing was deleted', doc['error'])
        self.assertEqual(before, _contents(self.repository_files()))
        self.assertEqual({self.kept['id'], self.victim['id'], newer['id']},
                         set(self.records()))
        report, _err = self.run_json('verify', self.kept['id'])
        self.assertTrue(report['ok'])

    def test_repository_import_empty_prefix_refused_not_recorded(self):
        # A copy of a backup's _metadata named as if its prefix were ''.
        directory = os.path.join(self.repo, self.kept['container'])
        shutil.copy(os.path.join(directory, '%s_metadata'
                                 % self.kept['service_metadata']),
                    os.path.join(directory, '_metadata'))
        os.remove(self.catalog_path())

        doc, _err = self.run_json('repository', 'import')

        refused, = doc['refused']
        self.assertEqual('', refused['prefix'])
        self.assertIn('empty', refused['error'])
        records = self.records()
        self.assertNotIn('', {r.service_metadata for r in records.values()})
        self.assertEqual(self.kept['service_metadata'],
                         records[self.kept['id']].service_metadata)
