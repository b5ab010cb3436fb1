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

"""Encrypted backups and upstream Cinder 29.0.0's chunked driver.

Upstream must refuse an encrypted backup cleanly rather than restore
ciphertext: its restore meets a metadata ``version`` it does not know
and raises InvalidBackup before writing anything; its incremental
backup on top of an encrypted one reads a hash block size of 0 and
raises InvalidBackup ("Do a full backup") before writing anything.
With ``encryption = none`` nothing changes (the other compat tests).
"""

import json

import ddt

from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext.tests.compat import test_posix_compat as posix
from cinder_chunked_ext.tests import key_manager as test_key_manager

OURS = posix.OURS
UPSTREAM = posix.UPSTREAM
PATTERN = b'upstream-never-sees-this '


def _volume(seed=1):
    data = bytearray(posix._volume(seed))
    for offset in range(0, len(data) - len(PATTERN), posix.CHUNK):
        data[offset:offset + len(PATTERN)] = PATTERN
    return bytes(data)


@ddt.ddt
class EncryptedUpstreamTestCase(posix.PosixCompatTestCase):

    def setUp(self):
        super().setUp()
        self.conf.config(backend=test_key_manager.BACKEND,
                         group='key_manager')
        test_key_manager.SharedKeyManager.reset()
        self.addCleanup(test_key_manager.SharedKeyManager.reset)
        self.conf.config(encryption='aes-256-gcm',
                         group=chunked.PIPELINE_GROUP)

    def repository_bytes(self):
        out = []
        for name in self.repository_files():
            with open('%s/%s' % (self.repo, name), 'rb') as f:
                out.append(f.read())
        return b''.join(out)

    @ddt.data('none', 'zlib', 'zstd')
    def test_encrypted_restored_by_ours_inside_cinder(self, algorithm):
        self.conf.config(backup_compression_algorithm=algorithm)
        data = _volume()
        backup = self.back_up(OURS, data)
        self.assertEqual(documents.VERSION, self.metadata(backup)['version'])
        self.assertNotIn(PATTERN, self.repository_bytes())
        self.assertRestores(data, backup, 'encrypted,', drivers=[OURS])

    @ddt.data(True, False)
    def test_upstream_restore_refuses_volume_untouched(self, volume_is_new):
        from cinder import exception as cinder_exception
        data = _volume()
        backup = self.back_up(OURS, data)
        target = self.create_volume(status='restoring-backup')
        name = 'target-%s' % target.id
        path = (self.new_volume_file(name, len(data)) if volume_is_new
                else self.existing_volume_file(name, len(data)))
        before = self.read_volume(path)
        backup.status = 'restoring'
        backup.save()
        with open(path, 'r+b') as f:
            error = self.assertRaises(
                cinder_exception.InvalidBackup,
                self.driver(UPSTREAM).restore, backup, target.id,
                self.cinder_utils.tpool_wrap(f), volume_is_new)
        self.assertIn('No support to restore backup version', str(error))
        self.assertIn(documents.VERSION, str(error))
        self.assertEqual(before, self.read_volume(path))

    def test_upstream_incremental_on_encrypted_refuses(self):
        from cinder import exception as cinder_exception
        data = _volume()
        full = self.back_up(OURS, data)
        files_before = self.repository_files()
        error = self.assertRaises(cinder_exception.InvalidBackup,
                                  self.back_up, UPSTREAM, data, parent=full)
        self.assertIn('Do a full backup', str(error))
        self.assertEqual(files_before, self.repository_files())

    def test_upstream_full_then_encrypted_incremental(self):
        self.conf.config(backup_compression_algorithm='zlib')
        v0 = _volume()
        v1 = posix.base.overwrite(v0, posix.CHUNK + 7, b'\x01' * 9)
        full = self.back_up(UPSTREAM, v0)
        incr = self.back_up(OURS, v1, parent=full)
        self.assertEqual(1, incr.object_count)
        self.assertEqual('1.0.0', self.metadata(full)['version'])
        self.assertEqual(documents.VERSION, self.metadata(incr)['version'])
        self.assertRestores(v1, incr, 'mixed chain,', drivers=[OURS])
        self.assertRestores(v0, full, 'plain full,')

    def test_upstream_delete_removes_objects(self):
        backup = self.back_up(OURS, _volume())
        backup.status = 'deleting'
        backup.save()
        self.driver(UPSTREAM).delete_backup(backup)
        self.assertEqual([], self.object_files(backup))

    def test_sha256file_envelope_is_json_upstream_can_read(self):
        backup = self.back_up(OURS, _volume())
        sha = self.read_document(backup, '_sha256file')
        self.assertEqual(0, sha['chunk_size'])
        self.assertEqual([], sha['sha256s'])
        self.assertNotIn('"sha256s": ["', json.dumps(sha))
