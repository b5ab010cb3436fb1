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

"""``cinder-chunked-backup``: right answers and clear messages (issue 20).

A missing repository, a damaged one, a usage error with ``--json``, a
restore onto a file of another size: each gets the status the help
promises and one line an operator can act on.
"""

import json
import os

import ddt

from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tests.functional.test_cli import CHUNK
from cinder_chunked_ext.tests.functional.test_cli import PROG
from cinder_chunked_ext.tests.functional.test_cli import write_volume

#: Every command that reads a repository, with what it needs.
READERS = (
    ('verify', '--all'),
    ('verify', '0123abcd'),
    ('backup', 'list'),
    ('backup', 'show', '0123abcd'),
    ('backup', 'delete', '0123abcd'),
    ('backup', 'prune', '--keep-last', '1'),
    ('restore', '0123abcd', 'target.img'),
    ('restore', '--from-repository', '0123abcd', 'target.img'),
    ('repository', 'scan'),
    ('repository', 'import'),
    ('repository', 'check'),
)


class AnswersTestCase(test_cli.CliTestCase):

    def error_line(self, err):
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertEqual(1, len(lines), err)
        self.assertTrue(lines[0].startswith(PROG + ': error: '), err)
        return lines[0]


@ddt.ddt
class TestMissingRepository(AnswersTestCase):

    @ddt.data(*READERS)
    def test_reader_missing_repository_exit_3(self, args):
        out, err = self.run_cli('--json', *args, expect=3)
        line = self.error_line(err)
        self.assertIn('repository %s does not exist (backup create makes '
                      'a new one)' % self.repo, line)
        self.assertNotIn('Backup object not found', line)
        self.assertEqual(3, json.loads(out)['exit_code'])
        self.assertFalse(os.path.exists(self.repo))

    @ddt.data(*READERS)
    def test_reader_repository_is_a_file_exit_3(self, args):
        with open(self.repo, 'w') as f:
            f.write('not a repository')
        _out, err = self.run_cli(*args, expect=3)
        self.assertIn('repository %s is not a directory' % self.repo,
                      self.error_line(err))

    def test_backup_create_missing_repository_creates_and_says_so(self):
        write_volume(self.volume, size=CHUNK)
        out, _err = self.run_cli('backup', 'create', self.volume)
        self.assertIn('Created the repository %s.' % self.repo, out)
        self.assertTrue(os.path.isdir(self.repo))
        out, _err = self.run_cli('backup', 'create', self.volume)
        self.assertNotIn('Created the repository', out)

    def test_backup_create_repository_is_a_file_exit_3(self):
        write_volume(self.volume, size=CHUNK)
        with open(self.repo, 'w') as f:
            f.write('not a repository')
        _out, err = self.run_cli('backup', 'create', self.volume, expect=3)
        line = self.error_line(err)
        self.assertIn('is not a directory', line)
        self.assertNotIn('File exists', line)


class TestDamagedRepository(AnswersTestCase):

    def test_repository_check_missing_object_exit_1_names_it(self):
        write_volume(self.volume)
        doc = self.create()
        missing = self.object_path(doc, 2)
        os.remove(missing)
        report, err = self.run_json('repository', 'check', expect=1)
        finding, = report['findings']
        self.assertEqual('missing', finding['kind'])
        self.assertEqual([os.path.basename(missing)], finding['objects'])
        self.assertIn('damaged', report['error'])
        self.assertIn(doc['id'], self.error_line(err))

    def test_restore_missing_object_operator_wording(self):
        write_volume(self.volume)
        doc = self.create()
        os.remove(self.object_path(doc, 2))
        _out, err = self.run_cli('restore', doc['id'],
                                 os.path.join(self.tmp, 't.img'), expect=1)
        line = self.error_line(err)
        self.assertIn('backup %s is damaged' % doc['id'], line)
        self.assertIn('-00002', line)
        self.assertNotIn('restore_backup', line)


@ddt.ddt
class TestUsage(AnswersTestCase):

    @ddt.data(('backup', 'list', '--status', 'bogus'),
              ('backup', 'frobnicate'),
              ('restore', '--no-such-flag', 'x', 'y'))
    def test_json_usage_error_prints_error_object(self, args):
        out, err = self.run_cli('--json', *args, expect=2)
        self.assertEqual(2, json.loads(out)['exit_code'])
        self.assertIn('error:', err)

    def test_backup_list_bogus_status_usage_error(self):
        os.makedirs(self.repo)
        _out, err = self.run_cli('backup', 'list', '--status', 'bogus',
                                 expect=2)
        self.assertIn("invalid choice: 'bogus'", err)

    def test_backup_list_unknown_volume_not_found(self):
        write_volume(self.volume, size=CHUNK)
        self.create()
        _out, err = self.run_cli('backup', 'list', '--volume-id', 'nope',
                                 expect=3)
        self.assertIn('no backup of volume nope', self.error_line(err))

    def test_backup_show_short_prefix_says_4_characters(self):
        write_volume(self.volume, size=CHUNK)
        doc = self.create()
        _out, err = self.run_cli('backup', 'show', doc['id'][:3], expect=3)
        self.assertIn('needs at least 4 characters', self.error_line(err))


class TestRestoreExisting(AnswersTestCase):

    def setUp(self):
        super().setUp()
        self.data = write_volume(self.volume)
        self.doc = self.create()
        self.target = os.path.join(self.tmp, 'target.img')

    def fill(self, size):
        with open(self.target, 'wb') as f:
            f.write(b'\xee' * size)

    def test_restore_existing_larger_file_refused_unchanged(self):
        self.fill(len(self.data) + 4096)
        _out, err = self.run_cli('restore', '--existing', self.doc['id'],
                                 self.target, expect=2)
        self.assertIn('--resize', self.error_line(err))
        self.assertEqual(len(self.data) + 4096,
                         os.path.getsize(self.target))

    def test_restore_existing_smaller_file_refused_unchanged(self):
        self.fill(len(self.data) - 4096)
        _out, err = self.run_cli('restore', '--existing', self.doc['id'],
                                 self.target, expect=2)
        self.assertIn('it grows', self.error_line(err))
        self.assertEqual(len(self.data) - 4096,
                         os.path.getsize(self.target))

    def test_restore_existing_resize_larger_file_cut_identical(self):
        self.fill(len(self.data) + 4096)
        out, _err = self.run_cli('restore', '--existing', '--resize',
                                 self.doc['id'], self.target)
        self.assertIn('cut from', out)
        with open(self.target, 'rb') as f:
            self.assertEqual(self.data, f.read())

    def test_restore_from_repository_backup_id_identical(self):
        out, _err = self.run_cli('restore', '--from-repository',
                                 self.doc['id'][:8], self.target)
        self.assertIn(self.doc['id'], out)
        with open(self.target, 'rb') as f:
            self.assertEqual(self.data, f.read())

    def test_restore_from_repository_without_target_usage_error(self):
        _out, err = self.run_cli('restore', '--from-repository',
                                 self.doc['id'], expect=2)
        self.assertIn('and a TARGET', self.error_line(err))


class TestMissingBucket(AnswersTestCase):

    def test_reader_missing_bucket_exit_3_create_makes_it(self):
        try:
            from cinder_chunked_ext.tests import s3_server
        except ImportError as e:
            self.skipTest('the S3 test server helper is missing: %s' % e)
        server = self.useFixture(s3_server.S3ServerFixture())
        bucket = server.new_bucket_name()
        self.conf = self.write_config(
            's3.conf', backup_s3_endpoint_url=server.endpoint,
            backup_s3_store_access_key=server.access_key,
            backup_s3_store_secret_key=server.secret_key,
            backup_s3_object_size=CHUNK, backup_s3_block_size=CHUNK // 4,
            backup_s3_retry_max_attempts=2)
        base = ['--config-file', self.conf, '--driver', 's3',
                '--repository', bucket]
        _out, err = self.run_cli('verify', '--all', base=base, expect=3)
        self.assertIn('bucket %s does not exist' % bucket,
                      self.error_line(err))
        write_volume(self.volume, size=CHUNK)
        self.run_cli('backup', 'create', self.volume, base=base)
        out, _err = self.run_cli('verify', '--all', base=base)
        self.assertIn('OK', out)
