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

"""Encrypted backups on the S3 and Swift servers of the functional tests.

The same checks on each store: a chain restores, what the server holds
has no plaintext of the volume and no key, a tampered object is refused.
"""

import os

from castellan import key_manager
from oslo_config import cfg

from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import sealed
from cinder_chunked_ext.tests.functional import test_s3_driver
from cinder_chunked_ext.tests.functional import test_swift_driver
from cinder_chunked_ext.tests import key_manager as test_key_manager

PATTERN = b'STORE-PLAINTEXT-MARKER '


def marked(blocks, block):
    """Random blocks, every other one starting with the pattern."""
    data = bytearray(os.urandom(blocks * block))
    for index in range(0, blocks, 2):
        start = index * block
        data[start:start + len(PATTERN)] = PATTERN
    # A compressible, marked run and zeros too.
    return bytes(data) + PATTERN * (block // len(PATTERN)) + bytes(2 * block)


class EncryptedStoreChecks(object):
    """Mixed into each store's test case."""

    block = None

    def set_up_encryption(self):
        cfg.CONF.register_opts(key_manager.key_manager_opts,
                               group='key_manager')
        self.conf.config(backend=test_key_manager.BACKEND,
                         group='key_manager')
        test_key_manager.SharedKeyManager.reset()
        self.addCleanup(test_key_manager.SharedKeyManager.reset)
        self.conf.config(encryption='aes-256-gcm',
                         group=chunked.PIPELINE_GROUP)

    def test_encrypted_chain_restores_and_server_holds_no_plaintext(self):
        for codec in ('none', 'zstd'):
            self.conf.config(backup_compression_algorithm=codec)
            data1 = marked(6, self.block)
            full = self.backup(data1)
            data2 = (data1[:self.block] + os.urandom(self.block) +
                     data1[2 * self.block:])
            incr = self.backup(data2, parent=full)
            self.assertEqual(data1, self.restore(full, len(data1)))
            self.assertEqual(data2, self.restore(incr, len(data2)))
            stored = b''.join(self.stored_objects(full) +
                              self.stored_objects(incr))
            self.assertNotIn(PATTERN, stored)
            for secret in test_key_manager.SharedKeyManager.stored.values():
                self.assertNotIn(secret.get_encoded(), stored)

    def test_encrypted_tampered_object_refused(self):
        data = marked(4, self.block)
        backup = self.backup(data)
        name = self.data_object_names(backup)[0]
        stored = bytearray(self.get_object(backup, name))
        self.assertTrue(stored.startswith(sealed.MAGIC))
        stored[-3] ^= 0x10
        self.put_object(backup, name, bytes(stored))
        self.assertRaises(exception.ObjectAuthenticationFailed,
                          self.restore, backup, len(data))


class EncryptedS3TestCase(EncryptedStoreChecks,
                          test_s3_driver.S3DriverTestCase):

    block = test_s3_driver.BLOCK

    def setUp(self):
        super().setUp()
        self.set_up_encryption()

    def data_object_names(self, backup):
        return self.data_keys(backup)

    def get_object(self, backup, name):
        return self.client.get_object(Bucket=self.s3.bucket,
                                      Key=name)['Body'].read()

    def put_object(self, backup, name, data):
        self.client.put_object(Bucket=self.s3.bucket, Key=name, Body=data)

    def stored_objects(self, backup):
        return [self.get_object(backup, name)
                for name in self.keys(backup.service_metadata)]


class EncryptedSwiftTestCase(EncryptedStoreChecks,
                             test_swift_driver.SwiftDriverTestCase):

    block = test_swift_driver.BLOCK

    def setUp(self):
        super().setUp()
        self.set_up_encryption()

    def data_object_names(self, backup):
        return self.data_names(backup)

    def get_object(self, backup, name):
        return self.conn.get_object(backup.container, name)[1]

    def put_object(self, backup, name, data):
        self.conn.put_object(backup.container, name, data)

    def stored_objects(self, backup):
        return [self.get_object(backup, name)
                for name in self.names(backup.service_metadata,
                                       backup.container)]
