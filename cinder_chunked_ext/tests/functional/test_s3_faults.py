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

"""S3 faults against a real server (SeaweedFS on 127.0.0.1).

Most faults are injected by :mod:`~cinder_chunked_ext.tests.fault_proxy`
between boto3 and the server, so botocore's retries and the reader's
ranged resume run for real; the proxy's counters prove what was
injected.  A server killed in the middle of a restore gets a server of
its own.  In every case the operation succeeds (after retries) or fails
with an error an operator can act on; no backup is left looking
complete that cannot be restored; the source volume of a backup is
never modified; nothing is written outside the backup's prefix (or, for
a restore, outside the target volume).
"""

import collections
import logging
import os
import re
import threading
from unittest import mock

from botocore import exceptions as botocore_exc
import ddt
import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import s3 as s3_driver
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import s3 as s3_store
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests import fault_proxy
from cinder_chunked_ext.tests import s3_server
from cinder_chunked_ext.tool import demo

CONF = cfg.CONF
BLOCK = 32768
MiB = 1024 ** 2
OBJECT_BYTES = 4 * BLOCK


class _Case(tuple):
    """ddt data whose test name is ``__name__``, not the values' repr."""


def case(name, *values):
    data = _Case(values)
    data.__name__ = name
    return data


#: The S3 errors a busy or failing server answers with.
SERVER_ERRORS = (case('500_InternalError', 500, 'InternalError'),
                 case('503_ServiceUnavailable', 503, 'ServiceUnavailable'),
                 case('503_SlowDown', 503, 'SlowDown'))


class S3FaultsBase(testtools.TestCase):
    """A driver for the test server, reached through a fault proxy."""

    dedicated_server = False

    def setUp(self):
        super().setUp()
        self.s3 = self.useFixture(
            s3_server.S3ServerFixture(dedicated=self.dedicated_server))
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.proxy = self.useFixture(fault_proxy.FaultProxyFixture(
            self.s3.endpoint, timeout=15, lifetime=120)).proxy
        self.s3.configure(self.conf,
                          backup_s3_endpoint_url=self.proxy.endpoint,
                          backup_s3_object_size=OBJECT_BYTES,
                          backup_s3_block_size=BLOCK,
                          backup_s3_enable_progress_timer=False,
                          backup_s3_retry_max_attempts=2)
        # Random data does not compress; 'none' keeps object sizes known.
        self.conf.config(backup_compression_algorithm='none')
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.client = self.s3.client()

    # -- helpers -------------------------------------------------------------

    def driver(self):
        return s3_driver.S3BackupDriver(self.context)

    def new_backup(self, **fields):
        backup = self.env.new_backup(**fields)
        self.addCleanup(self._forget, fields.get('container')
                        or self.s3.bucket, 'volume_%s/' % backup.volume_id)
        return backup

    def _forget(self, bucket, prefix):
        """Delete what a test stored (the server is shared)."""
        try:
            self.s3.server.empty_prefix(bucket, prefix)
        except botocore_exc.ClientError:
            pass        # no such bucket: nothing to delete

    def data_path(self, backup):
        """A proxy path pattern for the data objects of ``backup``."""
        return r'_backup_%s-\d{5}$' % re.escape(backup.id)

    def volume_file(self, data):
        path = os.path.join(self.tmp, 'volume-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def everything(self):
        """Every bucket, and every key of every bucket, of the server."""
        found = set()
        for bucket in self.client.list_buckets().get('Buckets') or ():
            name = bucket['Name']
            found.add((name, None))
            paginator = self.client.get_paginator('list_objects_v2')
            for page in paginator.paginate(Bucket=name):
                found.update((name, item['Key'])
                             for item in page.get('Contents') or ())
        return found

    def outside(self, backup):
        """What the server holds outside ``backup``'s prefix."""
        prefix = backup.service_metadata
        container = backup.container or self.s3.bucket
        return {(bucket, key) for bucket, key in self.everything()
                if not (bucket == container and key and prefix
                        and key.startswith(prefix))}

    def run_backup(self, backup, data, raises=None, driver=None,
                   parent=None):
        """Back up ``data``; check the source and the rest of the server.

        Returns the exception when ``raises`` names its type.
        """
        if parent is not None:
            backup.parent_id = parent.id
        path = self.volume_file(data)
        before = demo.file_sha256(path)
        server_before = self.everything()
        driver = driver or self.driver()
        error = None
        with open(path, 'rb') as f:
            if raises is None:
                driver.backup(backup, f)
                backup.status = 'available'
            else:
                error = self.assertRaises(raises, driver.backup, backup, f)
        self.assertEqual(before, demo.file_sha256(path),
                         'the backup modified its source volume')
        self.assertEqual(
            server_before - {(b, k) for b, k in server_before
                             if k and backup.service_metadata
                             and k.startswith(backup.service_metadata)},
            self.outside(backup),
            'the backup wrote outside its prefix')
        return error

    def restore(self, backup, size, raises=None, driver=None):
        """Restore into a new file; its data, or the exception.

        The file stays behind as ``self.target``.
        """
        target = 'restored-%s' % os.urandom(4).hex()
        path = self.target = os.path.join(self.tmp, target)
        with open(path, 'wb') as f:
            f.truncate(size)
        others = sorted(set(os.listdir(self.tmp)) - {target})
        before = {name: demo.file_sha256(os.path.join(self.tmp, name))
                  for name in others}
        backup.status = 'restoring'
        try:
            with open(path, 'r+b') as f:
                driver = driver or self.driver()
                if raises is not None:
                    return self.assertRaises(raises, driver.restore, backup,
                                             backup.volume_id, f, True)
                driver.restore(backup, backup.volume_id, f, True)
        finally:
            backup.status = 'available'
            self.assertEqual(
                before, {name: demo.file_sha256(os.path.join(self.tmp, name))
                         for name in others},
                'the restore wrote outside its target')
        with open(path, 'rb') as f:
            return f.read()

    def keys(self, backup):
        """The keys under ``backup``'s prefix (or its volume's)."""
        paginator = self.client.get_paginator('list_objects_v2')
        names = []
        for page in paginator.paginate(
                Bucket=backup.container or self.s3.bucket,
                Prefix=(backup.service_metadata
                        or 'volume_%s/' % backup.volume_id)):
            names.extend(item['Key'] for item in page.get('Contents') or ())
        return names

    def data_keys(self, backup):
        return [k for k in self.keys(backup)
                if not k.endswith(('_metadata', '_sha256file'))]

    def assertIncomplete(self, backup):
        """The backup has no _metadata, and its restore fails clearly.

        Without _metadata a backup cannot look complete; its restore
        stops before writing anything.
        """
        self.assertFalse([k for k in self.keys(backup)
                          if k.endswith('_metadata')])
        self.proxy.clear_rules()
        error = self.restore(backup, 4 * OBJECT_BYTES,
                             raises=exception.ObjectNotFound)
        self.assertIn('%s_metadata' % backup.service_metadata, str(error))
        with open(self.target, 'rb') as f:
            self.assertEqual(bytes(4 * OBJECT_BYTES), f.read())

    def assertNoSecret(self, text):
        for secret in (self.s3.access_key, self.s3.secret_key):
            self.assertNotIn(secret, text)


@ddt.ddt
class S3FaultsTestCase(S3FaultsBase):
    """Faults injected by the proxy, one shared server per process."""

    # -- (a) transient bursts: retried, then success --------------------------

    @ddt.data(*SERVER_ERRORS)
    @ddt.unpack
    def test_error_burst_backup_and_restore_succeed_after_retries(
            self, status, code):
        # One upload at a time: the first object takes both failures.
        self.conf.config(s3_max_concurrent_uploads=1, group='chunked_backup')
        backup = self.new_backup()
        data = os.urandom(3 * OBJECT_BYTES + BLOCK)
        puts = self.proxy.add_rule(fault_proxy.respond(status, code),
                                   method='PUT', path=self.data_path(backup),
                                   times=2, name='put')
        self.run_backup(backup, data)
        self.assertEqual(2, puts.applied)
        first = '%s-00001' % backup.service_metadata
        self.assertEqual(
            ['respond', 'respond', 'pass'],
            [r.action for r in self.proxy.seen('PUT', re.escape(first))])
        self.assertEqual(4 + 2, len(self.proxy.seen(
            'PUT', self.data_path(backup))))

        gets = self.proxy.add_rule(fault_proxy.respond(status, code),
                                   method='GET', path=self.data_path(backup),
                                   times=2, name='get')
        self.assertEqual(data, self.restore(backup, len(data)))
        self.assertEqual(2, gets.applied)
        self.assertEqual(4 + 2, len(self.proxy.seen(
            'GET', self.data_path(backup))))
        self.assertEqual(4, self.proxy.counters['respond'])

    def test_put_reset_mid_body_once_retried_and_restores(self):
        backup = self.new_backup()
        data = os.urandom(2 * OBJECT_BYTES)
        rule = self.proxy.add_rule(fault_proxy.reset_request(16384),
                                   method='PUT', path=self.data_path(backup),
                                   times=1)
        self.run_backup(backup, data)
        self.assertEqual(1, rule.applied)
        self.assertEqual(16384,
                         self.proxy.counters['request_bytes_before_reset'])
        broken = [r.key for r in self.proxy.requests
                  if r.action == 'reset_request']
        self.assertEqual(2, len(self.proxy.seen('PUT',
                                                re.escape(broken[0]))))
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_multipart_part_reset_mid_body_once_retried_and_restores(self):
        self.conf.config(backup_s3_object_size=6 * MiB)
        self.conf.config(s3_multipart_threshold=MiB,
                         s3_multipart_part_size=5 * MiB,
                         group='chunked_backup')
        backup = self.new_backup()
        data = os.urandom(6 * MiB)
        rule = self.proxy.add_rule(fault_proxy.reset_request(MiB),
                                   method='PUT', query=r'partNumber=1\b',
                                   times=1)
        self.run_backup(backup, data)
        self.assertEqual(1, rule.applied)
        parts = [r.query for r in self.proxy.seen('PUT')
                 if 'partNumber=' in r.query]
        self.assertEqual(3, len(parts))     # part 1 twice, part 2 once
        # One upload, created and completed once: the part was retried
        # inside it, not the whole object.
        posts = [r.query for r in self.proxy.seen(
            'POST', self.data_path(backup))]
        self.assertEqual(2, len(posts))
        self.assertTrue(posts[0].startswith('uploads'), posts)
        self.assertIn('uploadId=', posts[1])
        self.assertEqual(data, self.restore(backup, len(data)))

    # -- (c) a download that breaks off: ranged resume ------------------------

    def test_get_reset_mid_body_resumes_with_range_and_restores(self):
        # One object larger than the engine's 4 MiB reads, broken off
        # after 6 MiB: the second read fails and resumes with a Range.
        self.conf.config(backup_s3_object_size=8 * MiB)
        backup = self.new_backup()
        data = os.urandom(8 * MiB)
        self.run_backup(backup, data)
        cut = 6 * MiB
        rule = self.proxy.add_rule(fault_proxy.reset_response(cut),
                                   method='GET', path=self.data_path(backup),
                                   times=1)
        self.assertEqual(data, self.restore(backup, len(data)))
        self.assertEqual(1, rule.applied)
        self.assertEqual(cut,
                         self.proxy.counters['response_bytes_before_reset'])
        gets = self.proxy.seen('GET', self.data_path(backup))
        self.assertEqual(2, len(gets))
        self.assertNotIn('range', gets[0].headers)
        match = re.match(r'bytes=(\d+)-$', gets[1].headers.get('range', ''))
        self.assertIsNotNone(match, gets[1].headers)
        self.assertTrue(0 < int(match.group(1)) <= cut, match.group(0))
        self.assertIn('if-match', gets[1].headers)

    def test_get_reset_every_time_fails_naming_object_and_offset(self):
        backup = self.new_backup()
        data = os.urandom(2 * OBJECT_BYTES)
        self.run_backup(backup, data)
        self.proxy.add_rule(fault_proxy.reset_response(0), method='GET',
                            path=self.data_path(backup))
        logger = self.useFixture(fixtures.FakeLogger(level=logging.ERROR))
        error = self.restore(backup, len(data),
                             raises=exception.TransientStoreError)
        self.assertRegex(str(error), r'cannot read object %s-\d{5}'
                         % re.escape(backup.service_metadata))
        self.assertIn('broke off at byte 0 3 times', str(error))
        self.assertIn('failed in layer %s after restoring nothing'
                      % backup.id, logger.output)
        # Attempts are bounded: 1 + backup_s3_retry_max_attempts GETs for
        # an object, however often the engine reads from it.
        gets = collections.Counter(
            r.key for r in self.proxy.seen('GET', self.data_path(backup)))
        self.assertIn(3, gets.values())
        self.assertLessEqual(max(gets.values()), 3)
        self.assertEqual(sum(gets.values()),
                         self.proxy.counters['reset_response'])
        # The backup itself is intact.
        self.proxy.clear_rules()
        self.assertEqual(data, self.restore(backup, len(data)))

    # -- (b) persistent failures: clear error, nothing looks complete ---------

    @ddt.data(*SERVER_ERRORS)
    @ddt.unpack
    def test_persistent_put_errors_fail_after_attempts_without_metadata(
            self, status, code):
        self.conf.config(backup_s3_retry_max_attempts=1)
        self.conf.config(s3_max_concurrent_uploads=1, group='chunked_backup')
        backup = self.new_backup()
        rule = self.proxy.add_rule(fault_proxy.respond(status, code),
                                   method='PUT', path=self.data_path(backup))
        error = self.run_backup(backup, os.urandom(3 * OBJECT_BYTES),
                                raises=exception.TransientStoreError)
        self.assertIn('cannot write object %s-00001' %
                      backup.service_metadata, str(error))
        self.assertIn(code, str(error))
        self.assertIn('retry later', str(error))
        self.assertNoSecret(str(error))
        # One object tried 1 + backup_s3_retry_max_attempts times.
        self.assertEqual(2, rule.applied)
        self.assertEqual([], self.keys(backup))
        self.assertIncomplete(backup)

    def test_persistent_metadata_put_error_leaves_backup_incomplete(self):
        self.conf.config(backup_s3_retry_max_attempts=1)
        backup = self.new_backup()
        rule = self.proxy.add_rule(
            fault_proxy.respond(503, 'SlowDown'), method='PUT',
            path=r'_backup_%s_metadata$' % re.escape(backup.id))
        error = self.run_backup(backup, os.urandom(3 * OBJECT_BYTES),
                                raises=exception.TransientStoreError)
        self.assertIn('cannot write object %s_metadata'
                      % backup.service_metadata, str(error))
        self.assertEqual(2, rule.applied)
        self.assertEqual(3, len(self.data_keys(backup)))
        self.assertIn('%s_sha256file' % backup.service_metadata,
                      self.keys(backup))
        self.assertIncomplete(backup)
        self.driver().delete_backup(backup)
        self.assertEqual([], self.keys(backup))

    def test_persistent_put_reset_fails_cleanly_storing_nothing(self):
        self.conf.config(backup_s3_retry_max_attempts=1)
        self.conf.config(s3_max_concurrent_uploads=1, group='chunked_backup')
        backup = self.new_backup()
        rule = self.proxy.add_rule(fault_proxy.reset_request(16384),
                                   method='PUT', path=self.data_path(backup))
        error = self.run_backup(backup, os.urandom(2 * OBJECT_BYTES),
                                raises=exception.TransientStoreError)
        self.assertIn('cannot write object %s-00001'
                      % backup.service_metadata, str(error))
        self.assertIn(self.proxy.endpoint, str(error))
        self.assertEqual(2, rule.applied)
        # The server kept none of the partial uploads.
        self.assertEqual([], self.keys(backup))
        self.assertIncomplete(backup)

    def test_persistent_get_errors_fail_restore_naming_object(self):
        self.conf.config(backup_s3_retry_max_attempts=1)
        backup = self.new_backup()
        data = os.urandom(2 * OBJECT_BYTES)
        self.run_backup(backup, data)
        self.proxy.add_rule(fault_proxy.respond(500, 'InternalError'),
                            method='GET', path=self.data_path(backup))
        error = self.restore(backup, len(data),
                             raises=exception.TransientStoreError)
        self.assertRegex(str(error), r'cannot read object %s-\d{5}.*'
                         r'InternalError' % re.escape(
                             backup.service_metadata))
        self.proxy.clear_rules()
        self.assertEqual(data, self.restore(backup, len(data)))

    # -- configuration faults -------------------------------------------------

    @ddt.data(case('wrong_secret_key', 'backup_s3_store_secret_key',
                   'not-the-secret-key'),
              case('unknown_access_key', 'backup_s3_store_access_key',
                   'AKNOSUCHUSER0001'))
    @ddt.unpack
    def test_wrong_credentials_fail_check_and_backup_clearly(self, option,
                                                             value):
        self.conf.config(**{option: value})
        error = self.assertRaises(exception.StoreConfigurationError,
                                  self.driver().check_for_setup_error)
        self.assertIn('rejected the credentials', str(error))
        self.assertIn(option, str(error))
        self.assertNotIn(value, str(error))
        self.assertNoSecret(str(error))

        backup = self.new_backup()
        error = self.run_backup(backup, os.urandom(2 * OBJECT_BYTES),
                                raises=exception.PermanentStoreError)
        self.assertIn('bucket %s' % self.s3.bucket, str(error))
        self.assertIn(option, str(error))
        self.assertNotIn(value, str(error))
        self.assertNoSecret(str(error))
        self.assertEqual([], self.keys(backup))
        self.assertEqual([], self.proxy.seen('PUT'))

    def test_missing_bucket_without_create_fails_naming_it(self):
        self.conf.config(backup_create_containers=False)
        bucket = self.s3.new_bucket_name()
        backup = self.new_backup(container=bucket)
        error = self.run_backup(backup, os.urandom(2 * OBJECT_BYTES),
                                raises=exception.ObjectNotFound)
        self.assertIn(bucket, str(error))
        self.assertIn('backup_create_containers', str(error))
        e = self.assertRaises(botocore_exc.ClientError,
                              self.client.head_bucket, Bucket=bucket)
        self.assertEqual(404, e.response['ResponseMetadata']['HTTPStatusCode'])
        self.assertEqual([], self.proxy.seen('PUT'))


class S3ServerKilledTestCase(S3FaultsBase):
    """A server of the test's own, killed in the middle of a restore."""

    dedicated_server = True

    def test_server_killed_mid_restore_fails_clearly_backup_survives(self):
        # Straight to the server: its death, not the proxy's, is the fault.
        self.s3.configure(self.conf, backup_s3_retry_max_attempts=1,
                          backup_s3_timeout=5)
        full = self.new_backup()
        data1 = os.urandom(3 * OBJECT_BYTES)
        self.run_backup(full, data1)
        incr = self.new_backup(volume_id=full.volume_id)
        data2 = data1[:OBJECT_BYTES] + os.urandom(OBJECT_BYTES) + \
            data1[2 * OBJECT_BYTES:]
        self.run_backup(incr, data2, parent=full)
        self.assertEqual(1, len(self.data_keys(incr)))

        lock = threading.Lock()
        killed = []
        real_call = s3_store.S3Store.call
        incr_data = re.compile(self.data_path(incr))

        def call(store, operation, *args, **kwargs):
            if (operation == 'get_object'
                    and incr_data.search(kwargs.get('Key', ''))):
                with lock:
                    if not killed:
                        killed.append(kwargs['Key'])
                        self.s3.server.kill()
            return real_call(store, operation, *args, **kwargs)

        logger = self.useFixture(fixtures.FakeLogger(level=logging.ERROR))
        with mock.patch.object(s3_store.S3Store, 'call', autospec=True,
                               side_effect=call):
            error = self.restore(incr, len(data2),
                                 raises=exception.TransientStoreError)
        self.assertIsInstance(error, exception.StoreError)
        self.assertIn('cannot read object %s' % killed[0], str(error))
        self.assertIn(self.s3.endpoint, str(error))
        self.assertIn('failed in layer %s after restoring %s'
                      % (incr.id, full.id), logger.output)
        with open(self.target, 'rb') as f:
            self.assertEqual(data1, f.read())   # the full layer, no more

        # Nothing was lost: after a restart both points restore.
        self.s3.server.restart()
        for backup in (full, incr):
            self.assertIn('%s_metadata' % backup.service_metadata,
                          self.keys(backup))
        self.assertEqual(data2, self.restore(incr, len(data2)))
        self.assertEqual(data1, self.restore(full, len(data1)))
