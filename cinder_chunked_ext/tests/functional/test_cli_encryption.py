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

"""The standalone tool with ``--password-file``: encrypted backups."""

import os

from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext.tests.functional import test_cli

CHUNK = test_cli.CHUNK
MARK = b'cinder chunked backup text'


class CliEncryptionTestCase(test_cli.CliTestCase):

    def setUp(self):
        super().setUp()
        self.password = os.path.join(self.tmp, 'password')
        with open(self.password, 'wb') as f:
            f.write(b'correct horse battery staple\n')
        self.wrong = os.path.join(self.tmp, 'wrong')
        with open(self.wrong, 'wb') as f:
            f.write(b'correct horse battery stable\n')
        self.data = test_cli.write_volume(self.volume)

    def base_args(self, password=True):
        args = super().base_args()
        if password:
            args += ['--password-file', self.password]
        return args

    def stored(self):
        out = []
        for path in self.repository_files():
            with open(path, 'rb') as f:
                out.append(f.read())
        return b''.join(out)

    def read(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def test_create_encrypts_restore_and_verify_decrypt(self):
        full = self.create()
        self.assertIn(MARK, self.data)
        self.assertFalse(MARK in self.stored(), 'plaintext in repository')
        self.assertFalse(MARK in self.read(os.path.join(
            self.repo, 'catalog.sqlite3')), 'plaintext in catalog')
        target = os.path.join(self.tmp, 'restored.img')
        self.run_cli('restore', full['id'], target)
        self.assertEqual(self.data, self.read(target))
        doc, _err = self.run_json('verify', full['id'])
        self.assertTrue(doc['ok'])

    def test_incremental_chain_and_from_repository(self):
        full = self.create()
        test_cli.overwrite(self.volume, CHUNK + 5, b'changed')
        incr = self.create('--incremental')
        self.assertEqual(full['id'], incr['parent_id'])
        self.assertEqual(1, incr['object_count'])
        data = self.read(self.volume)
        target = os.path.join(self.tmp, 'from-repo.img')
        self.run_cli('restore', '--from-repository', incr['container'],
                     incr['service_metadata'], target)
        self.assertEqual(data, self.read(target))
        doc, _err = self.run_json('verify', '--from-repository',
                                  incr['container'],
                                  incr['service_metadata'])
        self.assertTrue(doc['ok'])

    def test_incremental_derives_password_key_once(self):
        # scrypt is slow on purpose: an incremental wraps its new key
        # under the key derived for its parent (the same salt), instead
        # of deriving a second one.
        full = self.create()
        test_cli.overwrite(self.volume, 5, b'changed')
        incr = self.create('--incremental')
        refs = []
        for backup in (full, incr):
            path = os.path.join(self.repo, backup['container'],
                                backup['service_metadata'] + '_metadata')
            refs.append(documents.key_reference(self.read(path)))
        self.assertEqual(refs[0]['salt'], refs[1]['salt'])
        self.assertNotEqual(refs[0]['wrapped'], refs[1]['wrapped'])
        target = os.path.join(self.tmp, 'restored.img')
        self.run_cli('restore', incr['id'], target)
        self.assertEqual(self.read(self.volume), self.read(target))

    def test_password_from_environment(self):
        self.env['CINDER_CHUNKED_BACKUP_PASSWORD_FILE'] = self.password
        full = self.create()
        base = self.base_args(password=False)
        target = os.path.join(self.tmp, 'env.img')
        self.run_cli('restore', full['id'], target, base=base)
        self.assertEqual(self.data, self.read(target))

    def test_wrong_password_one_error_no_target(self):
        full = self.create()
        base = self.base_args(password=False) + ['--password-file',
                                                 self.wrong]
        target = os.path.join(self.tmp, 'never.img')
        _out, err = self.run_cli('restore', full['id'], target, base=base,
                                 expect=1)
        self.assertIn('the password is wrong', err)
        self.assertEqual(1, len(err.strip().splitlines()))
        self.assertFalse(os.path.exists(target))
        _out, err = self.run_cli('restore', '--from-repository',
                                 full['container'],
                                 full['service_metadata'], target,
                                 base=base, expect=1)
        self.assertIn('the password is wrong', err)
        self.assertFalse(os.path.exists(target))

    def test_wrong_password_existing_target_untouched(self):
        full = self.create()
        target = os.path.join(self.tmp, 'existing.img')
        with open(target, 'wb') as f:
            f.write(b'\xaa' * len(self.data))
        base = self.base_args(password=False) + ['--password-file',
                                                 self.wrong]
        self.run_cli('restore', full['id'], target, '--existing', base=base,
                     expect=1)
        self.assertEqual(b'\xaa' * len(self.data), self.read(target))

    def test_no_password_for_encrypted_backup_says_so(self):
        full = self.create()
        target = os.path.join(self.tmp, 'never.img')
        _out, err = self.run_cli('restore', full['id'], target,
                                 base=self.base_args(password=False),
                                 expect=1)
        self.assertIn('--password-file', err)
        self.assertFalse(os.path.exists(target))

    def test_missing_password_file_not_found(self):
        base = self.base_args(password=False) + ['--password-file',
                                                 self.password + '.gone']
        _out, err = self.run_cli('backup', 'create', self.volume, base=base,
                                 expect=3)
        self.assertIn('password file', err)

    def test_without_password_backups_stay_plain(self):
        doc, _err = self.run_json('backup', 'create', self.volume,
                                  base=self.base_args(password=False))
        self.assertEqual('available', doc['status'])
        metadata = os.path.join(self.repo, doc['container'],
                                doc['service_metadata'] + '_metadata')
        self.assertIn(b'"version": "1.0.0"', self.read(metadata))

    def test_rekey_changes_password_data_untouched(self):
        full = self.create()
        test_cli.overwrite(self.volume, 5, b'changed')
        incr = self.create('--incremental')
        data = self.read(self.volume)
        objects = {path: self.read(path) for path in self.repository_files()
                   if not path.endswith(('_metadata', '_sha256file'))}
        new = os.path.join(self.tmp, 'new-password')
        with open(new, 'wb') as f:
            f.write(b'a new password\n')
        doc, _err = self.run_json('repository', 'rekey',
                                  '--new-password-file', new)
        self.assertEqual(2, doc['counts']['rekeyed'])
        self.assertEqual(objects, {path: self.read(path) for path in objects})
        new_base = self.base_args(password=False) + ['--password-file', new]
        target = os.path.join(self.tmp, 'rekeyed.img')
        self.run_cli('restore', incr['id'], target, base=new_base)
        self.assertEqual(data, self.read(target))
        out, _err = self.run_cli('verify', full['id'], expect=1)
        self.assertIn('the password is wrong', out)
        # Run again (as after an interruption): nothing left to do.
        doc, _err = self.run_json('repository', 'rekey',
                                  '--new-password-file', new)
        self.assertEqual(2, doc['counts']['already'])
        self.assertEqual(0, doc['counts']['rekeyed'])
