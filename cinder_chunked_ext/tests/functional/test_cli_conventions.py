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

"""``cinder-chunked-backup`` as restic and borg users expect it (issue 20).

Environment variables, several IDs at once, a tidy repository after a
delete, times with their zone, a create summary that says where the
backup went and what it stored.
"""

import os
import re
import sqlite3

from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tests.functional.test_cli import overwrite
from cinder_chunked_ext.tests.functional.test_cli import write_volume
from cinder_chunked_ext.tool import session

UTC_TIME = re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC')


class TestConventions(test_cli.CliTestCase):

    def containers(self):
        """Every directory below the repository."""
        return sorted(os.path.relpath(dirpath, self.repo)
                      for dirpath, _dirs, _files in os.walk(self.repo)
                      if dirpath != self.repo)

    def test_environment_repository_and_catalog_used(self):
        write_volume(self.volume)
        self.env[session.REPOSITORY_ENV] = self.repo
        catalog = os.path.join(self.tmp, 'elsewhere.sqlite3')
        self.env[session.CATALOG_ENV] = catalog
        base = ['--config-file', self.conf]
        doc, _err = self.run_json('backup', 'create', self.volume,
                                  base=base)
        self.assertTrue(os.path.isdir(os.path.join(self.repo,
                                                   doc['container'])))
        self.assertTrue(os.path.exists(catalog))
        self.assertFalse(os.path.exists(os.path.join(
            self.repo, session.CATALOG_NAME)))
        listing, _err = self.run_json('backup', 'list', base=base)
        self.assertEqual([doc['id']], [b['id'] for b in listing['backups']])

    def test_backup_create_summary_where_and_stored_size(self):
        write_volume(self.volume)
        out, _err = self.run_cli('backup', 'create', self.volume)
        self.assertIn('in the posix %s repository' % self.repo, out)
        self.assertIn('stored', out)
        self.assertRegex(out, r'\d+\.\d\d:1')
        doc, _err = self.run_json('backup', 'create', self.volume)
        self.assertGreater(doc['stored_bytes'], 0)
        self.assertGreater(doc['compression_ratio'], 1)

    def test_backup_list_and_show_times_utc(self):
        write_volume(self.volume)
        doc = self.create()
        out, _err = self.run_cli('backup', 'list')
        self.assertRegex(out, UTC_TIME)
        out, _err = self.run_cli('backup', 'show', doc['id'])
        self.assertRegex(out, 'created_at: +' + UTC_TIME.pattern)
        self.assertNotIn('+00:00', out)

    def test_backup_delete_several_ids_child_first_dirs_removed(self):
        write_volume(self.volume)
        full = self.create()
        overwrite(self.volume, 0, b'\x05' * 10)
        incr = self.create('--incremental')
        doc, _err = self.run_json('backup', 'delete', full['id'],
                                  incr['id'][:8])
        self.assertEqual([incr['id'], full['id']], doc['deleted'])
        self.assertEqual([], self.repository_files())
        self.assertEqual([], self.containers())
        self.assertTrue(os.path.exists(os.path.join(
            self.repo, session.CATALOG_NAME)))

    def test_backup_delete_one_of_two_in_directory_keeps_other(self):
        write_volume(self.volume)
        first = self.create()
        second = self.create('--container', first['container'])
        self.run_cli('backup', 'delete', first['id'])
        self.assertIn(first['container'], self.containers())
        report, _err = self.run_json('verify', second['id'])
        self.assertTrue(report['ok'])

    def test_repository_check_empty_directory_reported_then_deleted(self):
        leftover = os.path.join(self.repo, 'ab', 'cd', 'abcd-left')
        os.makedirs(leftover)
        doc, _err = self.run_json('repository', 'check')
        self.assertEqual([('empty', 'ab')],
                         [(f['kind'], f['container'])
                          for f in doc['findings']])
        doc, _err = self.run_json('repository', 'check', '--delete',
                                  '--grace', '0')
        self.assertEqual('deleted', doc['findings'][0]['action'])
        self.assertEqual([], self.containers())

    def test_backup_prune_error_backups_explained_then_deleted(self):
        write_volume(self.volume)
        first = self.create()
        failed = self.create()
        kept = self.create()
        conn = sqlite3.connect(os.path.join(self.repo, session.CATALOG_NAME))
        conn.execute("UPDATE backups SET status = 'error' WHERE id = ?",
                     (failed['id'],))
        conn.commit()
        conn.close()
        out, _err = self.run_cli('backup', 'prune', '--keep-last', '1')
        self.assertIn('--delete-errors deletes it', out)
        doc, _err = self.run_json('backup', 'prune', '--keep-last', '1',
                                  '--delete-errors')
        self.assertEqual([failed['id']], doc['deleted'])
        listing, _err = self.run_json('backup', 'list')
        self.assertEqual([kept['id']], [b['id'] for b in listing['backups']])
        self.assertNotIn(first['container'], self.containers())
        self.assertNotIn(failed['container'], self.containers())

    def test_demo_own_directory_removed_says_so(self):
        out, _err = self.run_cli('demo', '--size', '1M', base=[])
        found = re.search(r'Removed the demo directory (\S+) ', out)
        self.assertIsNotNone(found, out)
        self.assertFalse(os.path.exists(found.group(1)))
