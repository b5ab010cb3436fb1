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

"""``cinder-chunked-backup`` on object stores: S3 and Swift test servers.

A backup, a restore and a recovery without the catalog against a real
S3 server (SeaweedFS) and a one-node Swift, both on 127.0.0.1; the
helpers are :mod:`cinder_chunked_ext.tests.functional.test_cli`'s.
"""

import os

from cinder_chunked_ext.tests.functional.test_cli import CHUNK
from cinder_chunked_ext.tests.functional.test_cli import CliTestCase
from cinder_chunked_ext.tests.functional.test_cli import only_catalog
from cinder_chunked_ext.tests.functional.test_cli import overwrite
from cinder_chunked_ext.tests.functional.test_cli import SHA
from cinder_chunked_ext.tests.functional.test_cli import write_volume
from cinder_chunked_ext.tool import demo


class TestS3(CliTestCase):
    """The same tool against a real S3 server (SeaweedFS on 127.0.0.1)."""

    def run_cli(self, *args, **kwargs):
        out, err = super().run_cli(*args, **kwargs)
        self.outputs.append(out + err)
        return out, err

    def test_s3_backup_restore_and_recovery(self):
        self.outputs = []
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
            backup_s3_object_size=CHUNK, backup_s3_block_size=SHA,
            backup_s3_retry_max_attempts=2)
        base = ['--config-file', self.conf, '--driver', 's3',
                '--repository', bucket]
        write_volume(self.volume)
        full, _err = self.run_json('backup', 'create', self.volume,
                                   base=base)
        self.assertEqual(bucket, full['container'])
        self.assertEqual('s3', full['driver'])
        overwrite(self.volume, CHUNK, b'\x09' * SHA)
        expected = demo.file_sha256(self.volume)
        incr, _err = self.run_json('backup', 'create', '--incremental',
                                   self.volume, base=base)
        self.assertEqual(1, incr['object_count'])
        self.run_cli('verify', incr['id'], base=base)
        target = os.path.join(self.tmp, 's3.img')
        self.run_cli('restore', incr['id'], target, base=base)
        self.assertEqual(expected, demo.file_sha256(target))

        os.remove(only_catalog(self.env))
        scan, _err = self.run_json('repository', 'scan', base=base)
        found = {b['id']: b for b in scan['backups']}
        self.assertEqual({full['id'], incr['id']}, set(found))
        entry = found[incr['id']]
        dr_target = os.path.join(self.tmp, 's3-dr.img')
        self.run_cli('restore', '--from-repository', entry['container'],
                     entry['prefix'], dr_target, base=base)
        self.assertEqual(expected, demo.file_sha256(dr_target))

        # No key in any output: --json documents, and DEBUG logs (botocore
        # logs signed headers at DEBUG) of a whole backup and verify.
        debug = base[:-2] + ['--debug'] + base[-2:]
        self.run_json('backup', 'create', self.volume, base=debug)
        self.run_cli('verify', '--all', base=debug)
        self.assertTrue(any('DEBUG' in text for text in self.outputs))
        for text in self.outputs:
            self.assertNotIn(server.secret_key, text)
            self.assertNotIn(server.access_key, text)


class TestSwift(CliTestCase):
    """The same tool against a real Swift server on 127.0.0.1."""

    def run_cli(self, *args, **kwargs):
        out, err = super().run_cli(*args, **kwargs)
        self.outputs.append(out + err)
        return out, err

    def test_swift_backup_restore_and_recovery(self):
        self.outputs = []
        from cinder_chunked_ext.tests import swift_server
        server = self.useFixture(swift_server.SwiftServerFixture()).server
        container = 'cli-%s' % os.urandom(6).hex()
        self.conf = self.write_config(
            'swift.conf', backup_swift_auth='single_user',
            backup_swift_auth_version='1',
            backup_swift_auth_url=server.auth_url,
            backup_swift_user=server.user, backup_swift_key=server.key,
            backup_swift_object_size=CHUNK, backup_swift_block_size=SHA,
            backup_swift_retry_attempts=2, backup_swift_retry_backoff=0)
        base = ['--config-file', self.conf, '--driver', 'swift',
                '--repository', container]
        write_volume(self.volume)
        full, _err = self.run_json('backup', 'create', self.volume,
                                   base=base)
        self.assertEqual(container, full['container'])
        self.assertEqual('swift', full['driver'])
        overwrite(self.volume, CHUNK, b'\x09' * SHA)
        expected = demo.file_sha256(self.volume)
        incr, _err = self.run_json('backup', 'create', '--incremental',
                                   self.volume, base=base)
        self.assertEqual(1, incr['object_count'])
        self.run_cli('verify', incr['id'], base=base)
        target = os.path.join(self.tmp, 'swift.img')
        self.run_cli('restore', incr['id'], target, base=base)
        self.assertEqual(expected, demo.file_sha256(target))

        # The catalog is lost: the repository alone finds both backups.
        os.remove(only_catalog(self.env))
        scan, _err = self.run_json('repository', 'scan', base=base)
        found = {b['id']: b for b in scan['backups']}
        self.assertEqual({full['id'], incr['id']}, set(found))
        entry = found[incr['id']]
        self.assertEqual(container, entry['container'])
        dr_target = os.path.join(self.tmp, 'swift-dr.img')
        self.run_cli('restore', '--from-repository', entry['container'],
                     entry['prefix'], dr_target, base=base)
        self.assertEqual(expected, demo.file_sha256(dr_target))

        # No key or token in any output, DEBUG logs included.
        debug = base[:-2] + ['--debug'] + base[-2:]
        self.run_json('backup', 'create', self.volume, base=debug)
        self.run_cli('verify', '--all', base=debug)
        self.assertTrue(any('swiftclient' in text for text in self.outputs))
        for text in self.outputs:
            self.assertNotIn(server.key, text)
            self.assertNotIn('AUTH_ftk', text)

    def test_swift_per_user_refused_with_a_clear_message(self):
        self.outputs = []
        self.conf = self.write_config(
            'swift.conf', backup_swift_auth='per_user',
            backup_swift_url='http://127.0.0.1:9/v1/AUTH_')
        write_volume(self.volume)
        _out, err = self.run_cli(
            'backup', 'create', self.volume, expect=2,
            base=['--config-file', self.conf, '--driver', 'swift'])
        self.assertIn('backup_swift_auth = single_user', err)
