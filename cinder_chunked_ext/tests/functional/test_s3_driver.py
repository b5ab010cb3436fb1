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

"""The S3 driver against a real S3 server (SeaweedFS on 127.0.0.1).

These prove what moto cannot: the server rejects a wrong Content-MD5,
SSE-C really encrypts, a server that dies in the middle of a backup
leaves no backup that looks complete, and no secret reaches any log.
"""

import base64
import hashlib
import logging
import os
import threading
from unittest import mock

from botocore import exceptions as botocore_exc
import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import s3 as s3_driver
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import s3 as s3_store
from cinder_chunked_ext.store import s3_objects
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests.functional import spool_checks
from cinder_chunked_ext.tests import s3_server

CONF = cfg.CONF
BLOCK = 32768
MiB = 1024 ** 2
SSE_KEY = 'functional-sse-c-key-32-bytes!!!'
OTHER_SSE_KEY = 'another-sse-c-key-of-32-bytes!!!'


def random_blocks(count, extra=0):
    return os.urandom(count * BLOCK + extra)


def replace_block(data, index, new=None):
    new = os.urandom(BLOCK) if new is None else new
    return data[:index * BLOCK] + new + data[(index + 1) * BLOCK:]


class S3DriverTestCase(testtools.TestCase):
    """A driver configured for the test server, and helpers."""

    dedicated_server = False

    def setUp(self):
        super().setUp()
        self.s3 = self.useFixture(
            s3_server.S3ServerFixture(dedicated=self.dedicated_server))
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.s3.configure(self.conf,
                          backup_s3_object_size=4 * BLOCK,
                          backup_s3_block_size=BLOCK,
                          backup_s3_enable_progress_timer=False)
        self.conf.config(backup_compression_algorithm='zlib')
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.client = self.s3.client()

    def driver(self):
        return s3_driver.S3BackupDriver(self.context)

    def backup(self, data, parent=None, driver=None, **fields):
        path = os.path.join(self.tmp, 'volume-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.write(data)
        if parent is not None:
            fields.update(parent_id=parent.id, volume_id=parent.volume_id)
        backup = self.env.new_backup(**fields)
        with open(path, 'rb') as f:
            (driver or self.driver()).backup(backup, f)
        backup.status = 'available'
        return backup

    def restore(self, backup, size, driver=None):
        path = os.path.join(self.tmp, 'restored-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.truncate(size)
        backup.status = 'restoring'
        try:
            with open(path, 'r+b') as f:
                (driver or self.driver()).restore(backup, backup.volume_id,
                                                  f, True)
        finally:
            backup.status = 'available'
        with open(path, 'rb') as f:
            return f.read()

    def keys(self, prefix, bucket=None):
        bucket = bucket or self.s3.bucket
        paginator = self.client.get_paginator('list_objects_v2')
        names = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            names.extend(item['Key'] for item in page.get('Contents') or ())
        return names

    def data_keys(self, backup):
        return [k for k in self.keys(backup.service_metadata)
                if not k.endswith(('_metadata', '_sha256file'))]


class BackupRestoreTestCase(spool_checks.ReadOnceMixin, S3DriverTestCase):

    store_class = s3_store.S3Store

    def test_full_and_incremental_chain_restores_every_point(self):
        data1 = (random_blocks(6) + bytes(4 * BLOCK) + random_blocks(3)
                 + b'tail')
        full = self.backup(data1)
        data2 = replace_block(replace_block(data1, 1), 8)
        data2 = replace_block(data2, 12, bytes(BLOCK))
        incr1 = self.backup(data2, parent=full)
        data3 = replace_block(data2, 5)
        incr2 = self.backup(data3, parent=incr1)

        self.assertEqual(
            'volume_%s' % full.volume_id,
            full.service_metadata.split('/')[0])
        self.assertEqual(4, len(self.data_keys(full)))
        self.assertEqual(3, len(self.data_keys(incr1)))
        self.assertEqual(1, len(self.data_keys(incr2)))
        self.assertEqual(data3, self.restore(incr2, len(data3)))
        self.assertEqual(data2, self.restore(incr1, len(data2)))
        self.assertEqual(data1, self.restore(full, len(data1)))

    def test_delete_backup_leaves_nothing_under_prefix(self):
        full = self.backup(random_blocks(9))
        incr = self.backup(replace_block(random_blocks(9), 2), parent=full)
        self.assertNotEqual([], self.keys(incr.service_metadata))
        driver = self.driver()
        driver.delete_backup(incr)
        driver.delete_backup(full)
        self.assertEqual([], self.keys(full.service_metadata))
        self.assertEqual([], self.keys(incr.service_metadata))

    def test_backup_into_new_bucket_creates_it(self):
        bucket = self.s3.new_bucket_name()
        data = random_blocks(5)
        backup = self.backup(data, container=bucket)
        self.assertEqual(bucket, backup.container)
        self.assertEqual(4, len(self.keys(backup.service_metadata,
                                          bucket=bucket)))
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_backup_missing_bucket_without_create_fails_clearly(self):
        self.conf.config(backup_create_containers=False)
        bucket = self.s3.new_bucket_name()
        e = self.assertRaises(exception.ObjectNotFound, self.backup,
                              random_blocks(2), container=bucket)
        self.assertIn(bucket, str(e))
        self.assertIn('backup_create_containers', str(e))

    def test_multipart_objects_restore_identically(self):
        self.conf.config(backup_s3_object_size=12 * MiB)
        self.conf.config(s3_multipart_threshold=MiB,
                         s3_multipart_part_size=5 * MiB,
                         group='chunked_backup')
        self.conf.config(backup_compression_algorithm='none')
        operations = []
        real_call = s3_store.S3Store.call

        def spy(store, operation, *args, **kwargs):
            operations.append(operation)
            return real_call(store, operation, *args, **kwargs)
        data = os.urandom(20 * MiB) + bytes(MiB) + b'end'
        with mock.patch.object(s3_store.S3Store, 'call', autospec=True,
                               side_effect=spy):
            backup = self.backup(data)
        self.assertEqual(2, operations.count('complete_multipart_upload'))
        self.assertEqual(5, operations.count('upload_part'))
        self.assertEqual(data, self.restore(backup, len(data)))


class ServerBehaviourTestCase(S3DriverTestCase):
    """What only a real server does: digests, SSE-C, credentials."""

    def test_wrong_content_md5_rejected_and_backup_incomplete(self):
        # botocore's legacy mode retries BadDigest; once is enough here.
        self.conf.config(backup_s3_retry_max_attempts=0)

        def wrong_md5(data):
            return base64.b64encode(
                hashlib.md5(b'not the data').digest()).decode('ascii')
        backup = self.env.new_backup()
        path = os.path.join(self.tmp, 'volume')
        with open(path, 'wb') as f:
            f.write(random_blocks(6))
        with mock.patch.object(s3_objects, 'content_md5',
                               side_effect=wrong_md5):
            with open(path, 'rb') as f:
                e = self.assertRaises(exception.PermanentStoreError,
                                      self.driver().backup, backup, f)
        self.assertIn('BadDigest', str(e))
        self.assertIn('Content-MD5', str(e))
        names = self.keys(backup.service_metadata)
        self.assertFalse([n for n in names if n.endswith('_metadata')])

    def test_small_puts_sent_without_waiting_for_100_continue(self):
        # botocore asks every PUT to wait for the server's "100 Continue";
        # a small object (an incremental's changed run) is sent at once,
        # a large one still waits.
        store = self.driver().store
        sent = []

        def record(request, **_kwargs):
            sent.append((request.method, dict(request.headers)))
        store.client.meta.events.register('before-send.s3', record)
        small = os.urandom(40 * 1024)
        large = os.urandom(s3_store.EXPECT_CONTINUE_MIN_BYTES)
        for name, data in (('small', small), ('large', large)):
            with store.open_writer(self.s3.bucket, name) as writer:
                writer.write(data)
        puts = [headers for method, headers in sent if method == 'PUT']
        self.assertEqual(2, len(puts))
        self.assertNotIn('Expect', puts[0])
        self.assertEqual(b'100-continue', puts[1].get('Expect'))
        for name, data in (('small', small), ('large', large)):
            self.assertEqual(data, self.client.get_object(
                Bucket=self.s3.bucket, Key=name)['Body'].read())

    def _configure_sse(self, key):
        self.conf.config(backup_s3_sse_customer_key=key,
                         backup_s3_sse_customer_algorithm='AES256')

    def test_sse_c_round_trip_encrypts_on_server(self):
        self._configure_sse(SSE_KEY)
        data = random_blocks(7)
        backup = self.backup(data)
        first = self.data_keys(backup)[0]
        e = self.assertRaises(botocore_exc.ClientError,
                              self.client.get_object, Bucket=self.s3.bucket,
                              Key=first)
        self.assertEqual(400, e.response['ResponseMetadata']['HTTPStatusCode'])
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_sse_c_wrong_key_restore_fails_clearly(self):
        self._configure_sse(SSE_KEY)
        data = random_blocks(3)
        backup = self.backup(data)
        self._configure_sse(OTHER_SSE_KEY)
        e = self.assertRaises(exception.PermanentStoreError, self.restore,
                              backup, len(data))
        self.assertIn('backup_s3_sse_customer_key', str(e))
        self.assertNotIn(SSE_KEY, str(e))
        self.assertNotIn(OTHER_SSE_KEY, str(e))

    def test_check_for_setup_error_valid_configuration_passes(self):
        self.assertIsNone(self.driver().check_for_setup_error())

    def test_check_for_setup_error_wrong_secret_is_configuration_error(self):
        self.conf.config(backup_s3_store_secret_key='not-the-secret-key')
        e = self.assertRaises(exception.StoreConfigurationError,
                              self.driver().check_for_setup_error)
        self.assertIn('rejected the credentials', str(e))
        self.assertIn('backup_s3_store_secret_key', str(e))
        self.assertNotIn('not-the-secret-key', str(e))

    def test_check_for_setup_error_unknown_access_key_is_config_error(self):
        self.conf.config(backup_s3_store_access_key='AKNOSUCHUSER')
        e = self.assertRaises(exception.StoreConfigurationError,
                              self.driver().check_for_setup_error)
        self.assertIn('InvalidAccessKeyId', str(e))
        self.assertNotIn('AKNOSUCHUSER', str(e))

    def _library_loggers_at_debug(self):
        """Undo what another test's logging setup may have quietened."""
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger):
                continue
            if name.split('.')[0] not in ('botocore', 'boto3', 'urllib3',
                                          's3transfer', 'cinder_chunked_ext'):
                continue
            self.addCleanup(setattr, logger, 'level', logger.level)
            self.addCleanup(setattr, logger, 'disabled', logger.disabled)
            logger.setLevel(logging.NOTSET)
            logger.disabled = False

    def test_no_secret_in_any_log_line_over_a_full_cycle(self):
        self._library_loggers_at_debug()
        logger = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG,
            format='%(levelname)s %(name)s %(message)s'))
        self._configure_sse(SSE_KEY)
        driver = self.driver()
        driver.check_for_setup_error()
        data = random_blocks(9)
        full = self.backup(data, driver=driver)
        data2 = replace_block(data, 4)
        incr = self.backup(data2, parent=full, driver=driver)
        self.assertEqual(data2, self.restore(incr, len(data2),
                                             driver=driver))
        self._configure_sse(OTHER_SSE_KEY)
        error = self.assertRaises(exception.PermanentStoreError,
                                  self.restore, incr, len(data2))
        logging.getLogger(__name__).exception('restore failed: %s', error)
        driver.delete_backup(incr)
        driver.delete_backup(full)

        output = logger.output
        # The capture saw botocore's request logging, and the filter at work.
        self.assertIn('botocore', output)
        self.assertIn('x-amz-server-side-encryption-customer-key', output)
        self.assertIn('***', output)
        secrets = [self.s3.access_key, self.s3.secret_key, SSE_KEY,
                   OTHER_SSE_KEY]
        secrets += [base64.b64encode(s.encode()).decode() for s in secrets]
        for secret in secrets:
            self.assertNotIn(secret, output)
            self.assertNotIn(secret, str(error))


class ServerFailureTestCase(S3DriverTestCase):
    """A server of the test's own, killed in the middle of a backup."""

    dedicated_server = True

    def test_server_killed_mid_backup_fails_cleanly_then_delete_works(self):
        self.s3.configure(self.conf, backup_s3_retry_max_attempts=1,
                          backup_s3_timeout=5)
        self.conf.config(s3_max_concurrent_uploads=2, group='chunked_backup')
        puts = []
        lock = threading.Lock()
        real_call = s3_store.S3Store.call

        def call(store, operation, *args, **kwargs):
            if operation == 'put_object':
                with lock:
                    puts.append(operation)
                    if len(puts) == 4:
                        self.s3.server.kill()
            return real_call(store, operation, *args, **kwargs)
        backup = self.env.new_backup()
        path = os.path.join(self.tmp, 'volume')
        with open(path, 'wb') as f:
            f.write(random_blocks(40))
        with mock.patch.object(s3_store.S3Store, 'call', autospec=True,
                               side_effect=call):
            with open(path, 'rb') as f:
                e = self.assertRaises(exception.TransientStoreError,
                                      self.driver().backup, backup, f)
        self.assertIn(self.s3.endpoint, str(e))

        self.s3.server.restart()
        names = self.keys(backup.service_metadata)
        self.assertTrue(names)
        self.assertLess(len(names), 10)
        self.assertFalse([n for n in names
                          if n.endswith(('_metadata', '_sha256file'))])
        self.driver().delete_backup(backup)
        self.assertEqual([], self.keys(backup.service_metadata))
