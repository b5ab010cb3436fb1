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

"""The S3 store and driver on moto (fast), faults injected with mocks.

What moto cannot prove (Content-MD5 rejection, SSE-C, a server that
dies) is proven against SeaweedFS in tests/functional/test_s3_driver.py.
"""

import base64
import hashlib
import io
import logging
import os
import sys
from unittest import mock

from botocore import exceptions as botocore_exc
import ddt
import fixtures
import moto
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import s3 as s3_driver
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import redaction
from cinder_chunked_ext.store import s3
from cinder_chunked_ext.store import s3_errors
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests import local_servers

CONF = cfg.CONF
MiB = 1024 ** 2
BUCKET = 'unit-bucket'
ACCESS = 'AKUNITACCESS0001'
SECRET = 'unit-secret-key-0001/xyz'
SSE_KEY = 'k' * 16 + 'unitssekey000001'


def client_error(code, status, message='boom', operation='PutObject'):
    return botocore_exc.ClientError(
        {'Error': {'Code': code, 'Message': message},
         'ResponseMetadata': {'HTTPStatusCode': status}}, operation)


class MotoTestCase(testtools.TestCase):
    """A moto S3 per test, and a store on it."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_DEFAULT_REGION', 'us-east-1'))
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_CONFIG_FILE', os.devnull))
        self.useFixture(fixtures.EnvironmentVariable(
            'AWS_SHARED_CREDENTIALS_FILE', os.devnull))
        mock_aws = moto.mock_aws()
        mock_aws.start()
        self.addCleanup(mock_aws.stop)

    def make_store(self, **overrides):
        values = dict(endpoint_url='https://s3.amazonaws.com',
                      access_key=ACCESS, secret_key=SECRET, bucket=BUCKET,
                      retry_max_attempts=1)
        values.update(overrides)
        return s3.S3Store(s3.S3Settings(**values))

    def stored(self, store, name, bucket=BUCKET):
        response = store.client.get_object(Bucket=bucket, Key=name)
        return response['Body'].read()


class SpyCalls(object):
    """Records the operations (and arguments) a store sends."""

    def __init__(self, store):
        self.calls = []
        real = store.call

        def call(operation, what, reading=False, **kwargs):
            self.calls.append((operation, kwargs))
            return real(operation, what, reading=reading, **kwargs)
        store.call = call

    def names(self):
        return [name for name, _kwargs in self.calls]

    def args(self, operation):
        return [kwargs for name, kwargs in self.calls if name == operation]


@ddt.ddt
class S3StoreTestCase(MotoTestCase):

    def setUp(self):
        super().setUp()
        self.store = self.make_store()
        self.store.put_container(BUCKET)

    # -- containers ------------------------------------------------------

    def test_put_container_missing_bucket_creates_it(self):
        self.store.put_container('another-bucket')
        names = [b['Name'] for b in
                 self.store.client.list_buckets()['Buckets']]
        self.assertIn('another-bucket', names)

    def test_put_container_existing_without_create_succeeds(self):
        self.store.put_container(BUCKET, create=False)
        self.assertEqual([], self.store.list_objects(BUCKET, ''))

    def test_put_container_missing_without_create_raises_not_found(self):
        e = self.assertRaises(exception.ObjectNotFound,
                              self.store.put_container, 'absent-bucket',
                              create=False)
        self.assertIn('absent-bucket', str(e))
        self.assertIn('backup_create_containers', str(e))
        names = [b['Name'] for b in
                 self.store.client.list_buckets()['Buckets']]
        self.assertNotIn('absent-bucket', names)

    def test_put_container_denied_raises_permanent(self):
        with mock.patch.object(self.store.client, 'head_bucket',
                               side_effect=client_error('403', 403)):
            self.assertRaises(exception.PermanentStoreError,
                              self.store.put_container, BUCKET)

    # -- writers ---------------------------------------------------------

    def test_writer_clean_exit_stores_object(self):
        with self.store.open_writer(BUCKET, 'volume_1/2/obj-00001') as w:
            w.write(b'hello ')
            w.write(b'world')
        self.assertEqual(b'hello world',
                         self.stored(self.store, 'volume_1/2/obj-00001'))

    def test_writer_block_raised_uploads_nothing(self):
        spy = SpyCalls(self.store)

        def fail():
            with self.store.open_writer(BUCKET, 'broken') as w:
                w.write(b'data')
                raise RuntimeError('engine failure')
        self.assertRaises(RuntimeError, fail)
        self.assertEqual([], spy.names())
        self.assertEqual([], self.store.list_objects(BUCKET, ''))

    def test_writer_single_put_sends_content_md5_and_sse(self):
        store = self.make_store(sse_customer_key=SSE_KEY,
                                sse_customer_algorithm='AES256')
        spy = SpyCalls(store)
        with mock.patch.object(store.client, 'put_object') as put:
            with store.open_writer(BUCKET, 'obj') as w:
                w.write(b'abc')
        kwargs = put.call_args.kwargs
        self.assertEqual(['put_object'], spy.names())
        self.assertEqual(
            base64.b64encode(hashlib.md5(b'abc').digest()).decode(),
            kwargs['ContentMD5'])
        self.assertEqual('AES256', kwargs['SSECustomerAlgorithm'])
        self.assertEqual(SSE_KEY, kwargs['SSECustomerKey'])
        self.assertEqual(3, kwargs['ContentLength'])

    def test_writer_md5_validation_off_sends_no_content_md5(self):
        store = self.make_store(md5_validation=False)
        with mock.patch.object(store.client, 'put_object') as put:
            with store.open_writer(BUCKET, 'obj') as w:
                w.write(b'abc')
        self.assertNotIn('ContentMD5', put.call_args.kwargs)
        self.assertNotIn('SSECustomerKey', put.call_args.kwargs)

    def test_writer_above_threshold_uses_bounded_multipart(self):
        store = self.make_store(multipart_threshold=1 * MiB,
                                multipart_part_size=5 * MiB)
        spy = SpyCalls(store)
        data = os.urandom(11 * MiB + 7)
        largest = 0
        with store.open_writer(BUCKET, 'big') as w:
            for start in range(0, len(data), 256 * 1024):
                w.write(data[start:start + 256 * 1024])
                largest = max(largest, len(w._buffer))
        self.assertEqual(data, self.stored(store, 'big'))
        parts = spy.args('upload_part')
        self.assertEqual([5 * MiB, 5 * MiB, MiB + 7],
                         [len(p['Body']) for p in parts])
        for part in parts:
            self.assertEqual(
                base64.b64encode(hashlib.md5(part['Body']).digest()).decode(),
                part['ContentMD5'])
        self.assertLess(largest, 5 * MiB)
        self.assertEqual(['create_multipart_upload', 'upload_part',
                          'upload_part', 'upload_part',
                          'complete_multipart_upload'], spy.names())

    def test_writer_multipart_block_raised_aborts_upload(self):
        store = self.make_store(multipart_threshold=0)
        spy = SpyCalls(store)

        def fail():
            with store.open_writer(BUCKET, 'half') as w:
                w.write(os.urandom(6 * MiB))
                raise RuntimeError('engine failure')
        self.assertRaises(RuntimeError, fail)
        self.assertIn('abort_multipart_upload', spy.names())
        uploads = store.client.list_multipart_uploads(Bucket=BUCKET)
        self.assertEqual([], uploads.get('Uploads', []))
        self.assertEqual([], store.list_objects(BUCKET, ''))

    def test_writer_multipart_complete_fails_aborts_upload(self):
        store = self.make_store(multipart_threshold=0)
        spy = SpyCalls(store)
        failure = client_error('InternalError', 500)

        def fail():
            with mock.patch.object(store.client, 'complete_multipart_upload',
                                   side_effect=failure):
                with store.open_writer(BUCKET, 'half') as w:
                    w.write(b'x' * 100)
        self.assertRaises(exception.TransientStoreError, fail)
        self.assertEqual('abort_multipart_upload', spy.names()[-1])
        self.assertEqual([], store.list_objects(BUCKET, ''))

    def test_writer_put_rejected_digest_raises_permanent(self):
        with mock.patch.object(self.store.client, 'put_object',
                               side_effect=client_error('BadDigest', 400)):
            def write():
                with self.store.open_writer(BUCKET, 'obj') as w:
                    w.write(b'abc')
            e = self.assertRaises(exception.PermanentStoreError, write)
        self.assertIn('Content-MD5', str(e))
        self.assertIn('obj', str(e))

    # -- readers ---------------------------------------------------------

    def _put(self, name, data):
        self.store.client.put_object(Bucket=BUCKET, Key=name, Body=data)

    def test_reader_reads_in_pieces_then_empty(self):
        data = os.urandom(100000)
        self._put('obj', data)
        with self.store.open_reader(BUCKET, 'obj') as r:
            pieces = [r.read(30000) for _ in range(4)]
            self.assertEqual(b'', r.read(10))
            self.assertEqual(b'', r.read())
        self.assertEqual(data, b''.join(pieces))

    def test_reader_read_without_size_returns_everything(self):
        data = os.urandom(20 * MiB + 3)
        self._put('obj', data)
        with self.store.open_reader(BUCKET, 'obj') as r:
            self.assertEqual(data[:5], r.read(5))
            self.assertEqual(data[5:], r.read())

    @ddt.data('missing-key', None)
    def test_open_reader_missing_raises_not_found(self, key):
        bucket = BUCKET if key else 'no-such-bucket'
        e = self.assertRaises(exception.ObjectNotFound,
                              self.store.open_reader, bucket,
                              key or 'k')
        self.assertIn(bucket, str(e))

    def _break_stream(self, store, failures, after=1000):
        """Make the first ``failures`` bodies break after ``after`` bytes."""
        real_get = store.client.get_object
        state = {'left': failures}
        gets = []

        def get_object(**kwargs):
            gets.append(kwargs)
            response = real_get(**kwargs)
            if state['left'] > 0:
                state['left'] -= 1
                body = response['Body']
                real_read = body.read
                sent = {'n': 0}

                def read(amt=None):
                    if sent['n'] >= after:
                        raise botocore_exc.ResponseStreamingError(
                            error='connection reset by peer')
                    data = real_read(min(amt or after, after - sent['n']))
                    sent['n'] += len(data)
                    return data
                body.read = read
            return response
        store.client.get_object = get_object
        return gets

    def test_reader_broken_stream_resumes_with_ranged_get(self):
        store = self.make_store(retry_max_attempts=3)
        data = os.urandom(50000)
        store.client.put_object(Bucket=BUCKET, Key='obj', Body=data)
        gets = self._break_stream(store, failures=2, after=7000)
        with store.open_reader(BUCKET, 'obj') as r:
            got = r.read()
        self.assertEqual(data, got)
        self.assertEqual(3, len(gets))
        self.assertNotIn('Range', gets[0])
        self.assertEqual('bytes=7000-', gets[1]['Range'])
        self.assertEqual('bytes=14000-', gets[2]['Range'])
        self.assertTrue(gets[1]['IfMatch'])

    def test_reader_stream_keeps_breaking_raises_transient(self):
        store = self.make_store(retry_max_attempts=2)
        store.client.put_object(Bucket=BUCKET, Key='obj',
                                Body=os.urandom(50000))
        gets = self._break_stream(store, failures=100, after=0)
        with store.open_reader(BUCKET, 'obj') as r:
            e = self.assertRaises(exception.TransientStoreError, r.read,
                                  1000)
        self.assertEqual(3, len(gets))
        self.assertIn('obj', str(e))

    def test_reader_object_replaced_mid_read_raises_permanent(self):
        store = self.make_store(retry_max_attempts=3)
        store.client.put_object(Bucket=BUCKET, Key='obj',
                                Body=os.urandom(50000))
        self._break_stream(store, failures=1, after=1000)
        with store.open_reader(BUCKET, 'obj') as r:
            self.assertEqual(1000, len(r.read(1000)))
            store.client.put_object(Bucket=BUCKET, Key='obj',
                                    Body=os.urandom(50000))
            e = self.assertRaises(exception.PermanentStoreError, r.read,
                                  1000)
        self.assertIn('changed', str(e))

    def test_call_unknown_error_propagates_unchanged(self):
        error = ValueError('a programming error')
        with mock.patch.object(self.store.client, 'head_object',
                               side_effect=error):
            raised = self.assertRaises(ValueError, self.store.call,
                                       'head_object', 'x', Bucket=BUCKET,
                                       Key='k')
        self.assertIs(error, raised)

    def test_call_classified_error_raised_without_chaining(self):
        with mock.patch.object(self.store.client, 'head_object',
                               side_effect=client_error('NoSuchKey', 404)):
            raised = self.assertRaises(exception.ObjectNotFound,
                                       self.store.call, 'head_object',
                                       'x', Bucket=BUCKET, Key='k')
        self.assertTrue(raised.__suppress_context__)

    # -- listing, deleting, sizes ----------------------------------------

    def test_list_objects_prefix_with_slashes_returns_names(self):
        for name in ('volume_a/1/x-00001', 'volume_a/1/x-00002',
                     'volume_b/1/x-00001'):
            self._put(name, b'1')
        self.assertEqual(['volume_a/1/x-00001', 'volume_a/1/x-00002'],
                         self.store.list_objects(BUCKET, 'volume_a/'))

    def test_list_objects_nothing_matches_returns_empty(self):
        self._put('other', b'1')
        self.assertEqual([], self.store.list_objects(BUCKET, 'volume_'))

    def test_list_objects_pages_without_contents_tolerated(self):
        pages = [{}, {'Contents': [{'Key': 'p-1'}]}, {'Contents': None},
                 {'Contents': [{'Key': 'p-2'}, {'Key': 'p-3'}]}]
        paginator = mock.Mock()
        paginator.paginate.return_value = iter(pages)
        with mock.patch.object(self.store.client, 'get_paginator',
                               return_value=paginator):
            names = self.store.list_objects(BUCKET, 'p-')
        self.assertEqual(['p-1', 'p-2', 'p-3'], names)
        paginator.paginate.assert_called_once_with(Bucket=BUCKET,
                                                   Prefix='p-')

    def test_list_objects_missing_bucket_raises_not_found(self):
        self.assertRaises(exception.ObjectNotFound,
                          self.store.list_objects, 'no-such-bucket', '')

    def test_delete_object_removes_it_and_missing_is_fine(self):
        self._put('gone', b'1')
        self.store.delete_object(BUCKET, 'gone')
        self.store.delete_object(BUCKET, 'gone')
        self.store.delete_object('no-such-bucket', 'gone')
        self.assertEqual([], self.store.list_objects(BUCKET, ''))

    def test_object_size_existing_and_missing(self):
        self._put('sized', b'12345')
        self.assertEqual(5, self.store.object_size(BUCKET, 'sized'))
        self.assertRaises(exception.ObjectNotFound, self.store.object_size,
                          BUCKET, 'absent')


@ddt.ddt
class ExpectContinueTestCase(testtools.TestCase):

    @ddt.data((0, False), (s3.EXPECT_CONTINUE_MIN_BYTES - 1, False),
              (s3.EXPECT_CONTINUE_MIN_BYTES, True),
              (64 * s3.MiB, True))
    @ddt.unpack
    def test_expect_kept_only_for_large_bodies(self, length, kept):
        params = {'headers': {'Expect': '100-continue',
                              'Content-Length': str(length)}}
        s3._expect_continue_if_large(params)
        self.assertEqual(kept, 'Expect' in params['headers'])

    @ddt.data({}, {'Content-Length': 'unknown'})
    def test_expect_kept_when_length_unknown(self, headers):
        params = {'headers': dict(headers, Expect='100-continue')}
        s3._expect_continue_if_large(params)
        self.assertIn('Expect', params['headers'])


@ddt.ddt
class PartSizeTestCase(testtools.TestCase):

    @ddt.data(
        # (configured part, expected object size, part number, expected)
        (16 * MiB, 50 * MiB, 1, 16 * MiB),
        (1, 0, 1, s3.MIN_PART_SIZE),
        (5 * MiB, 200 * 1024 * MiB, 1, 21474837),
        (5 * MiB, 0, 500, 5 * MiB),
        (5 * MiB, 0, 501, 10 * MiB),
        (5 * MiB, 0, 1001, 20 * MiB),
        (4 * 1024 * MiB, 0, 9999, s3.MAX_PART_SIZE),
    )
    @ddt.unpack
    def test_part_size_rules_expected(self, configured, expected_size,
                                      number, wanted):
        settings = s3.S3Settings(multipart_part_size=configured,
                                 expected_object_size=expected_size)
        self.assertEqual(wanted, settings.part_size(number))

    def test_part_size_doubling_fits_five_tib_in_max_parts(self):
        settings = s3.S3Settings(multipart_part_size=s3.MIN_PART_SIZE)
        total = sum(settings.part_size(n)
                    for n in range(1, s3.MAX_PARTS + 1))
        self.assertGreaterEqual(total, 5 * 1024 ** 4)


@ddt.ddt
class ClassificationTestCase(testtools.TestCase):
    """Errors keep their kind; messages are actionable and secret-free."""

    def setUp(self):
        super().setUp()
        settings = s3.S3Settings(
            endpoint_url='http://127.0.0.1:9', access_key=ACCESS,
            secret_key=SECRET, sse_customer_key=SSE_KEY,
            sse_customer_algorithm='AES256')
        s3.REDACTOR.add(*settings.secrets())
        self.classify = s3_errors.Classifier(settings, s3.REDACTOR)

    def _raise(self, error, reading=False):
        return self.classify(error, 'doing X', reading=reading)

    @ddt.data(
        ('NoSuchBucket', 404, exception.ObjectNotFound, None),
        ('NoSuchKey', 404, exception.ObjectNotFound, None),
        ('404', 404, exception.ObjectNotFound, None),
        ('AccessDenied', 403, exception.PermanentStoreError,
         'access denied'),
        ('InvalidAccessKeyId', 403, exception.PermanentStoreError,
         'backup_s3_store_access_key'),
        ('SignatureDoesNotMatch', 403, exception.PermanentStoreError,
         'backup_s3_store_secret_key'),
        ('BadDigest', 400, exception.PermanentStoreError, 'Content-MD5'),
        ('InvalidDigest', 400, exception.PermanentStoreError,
         'Content-MD5'),
        ('InvalidBucketName', 400, exception.PermanentStoreError,
         'InvalidBucketName'),
        ('SlowDown', 503, exception.TransientStoreError, 'retry later'),
        ('InternalError', 500, exception.TransientStoreError, None),
        ('ServiceUnavailable', 503, exception.TransientStoreError, None),
        ('', 502, exception.TransientStoreError, None),
        ('RequestTimeout', 400, exception.TransientStoreError, None),
    )
    @ddt.unpack
    def test_client_error_classified(self, code, status, kind, words):
        e = self._raise(client_error(code, status))
        self.assertIs(kind, type(e))
        self.assertIn('doing X', str(e))
        if words:
            self.assertIn(words, str(e))

    def test_access_denied_on_read_mentions_sse_key(self):
        e = self._raise(client_error('AccessDenied', 403), reading=True)
        self.assertIsInstance(e, exception.PermanentStoreError)
        self.assertIn('backup_s3_sse_customer_key', str(e))

    @ddt.data(
        (botocore_exc.EndpointConnectionError(endpoint_url='http://h:1'),
         exception.TransientStoreError),
        (botocore_exc.ConnectTimeoutError(endpoint_url='http://h:1'),
         exception.TransientStoreError),
        (botocore_exc.ReadTimeoutError(endpoint_url='http://h:1'),
         exception.TransientStoreError),
        (botocore_exc.ConnectionClosedError(endpoint_url='http://h:1'),
         exception.TransientStoreError),
        (botocore_exc.SSLError(endpoint_url='http://h:1', error='bad'),
         exception.PermanentStoreError),
        (botocore_exc.NoCredentialsError(),
         exception.StoreConfigurationError),
        (botocore_exc.ParamValidationError(report='bad bucket'),
         exception.PermanentStoreError),
        (ConnectionResetError(104, 'reset'), exception.TransientStoreError),
    )
    @ddt.unpack
    def test_transport_error_classified(self, error, kind):
        e = self._raise(error)
        self.assertIs(kind, type(e))

    def test_unknown_error_not_classified(self):
        self.assertIsNone(self._raise(ValueError('a programming error')))

    def test_error_message_with_secret_is_redacted(self):
        error = client_error('AccessDenied', 403,
                             message='key %s and %s refused'
                                     % (ACCESS, SSE_KEY))
        e = self._raise(error)
        self.assertNotIn(ACCESS, str(e))
        self.assertNotIn(SSE_KEY, str(e))
        self.assertIn('***', str(e))


class RedactorTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.redactor = redaction.SecretRedactor()
        self.redactor.add('AKSECRETACCESS', 'sse-key-0123456789abcdef', None)

    def _record(self, msg, args, exc_info=None):
        return logging.LogRecord('botocore.endpoint', logging.DEBUG, __file__,
                                 1, msg, args, exc_info)

    def test_filter_message_and_args_masked(self):
        record = self._record('headers %s %s',
                              ('Credential=AKSECRETACCESS/2026',
                               base64.b64encode(
                                   b'sse-key-0123456789abcdef').decode()))
        self.assertTrue(self.redactor.filter(record))
        self.assertEqual('headers Credential=***/2026 ***',
                         record.getMessage())

    def test_filter_exception_text_masked(self):
        try:
            raise RuntimeError('failed with AKSECRETACCESS')
        except RuntimeError:
            record = self._record('oops', None, sys.exc_info())
        self.redactor.filter(record)
        self.assertNotIn('AKSECRETACCESS', record.exc_text)
        self.assertIn('***', record.exc_text)

    def test_filter_clean_record_untouched(self):
        record = self._record('nothing %d here', (1,))
        self.redactor.filter(record)
        self.assertEqual(('nothing %d here', (1,)),
                         (record.msg, record.args))

    def test_client_creation_protects_library_loggers(self):
        store = s3.S3Store(s3.S3Settings(
            endpoint_url='http://127.0.0.1:9', access_key='AKLOGGERTEST',
            secret_key='logger-test-secret', region_name='us-east-1'))
        store.client
        for name in ('botocore.endpoint', 'botocore.auth', 'urllib3'):
            self.assertIn(s3.REDACTOR, logging.getLogger(name).filters)

    def test_settings_repr_hides_secrets(self):
        settings = s3.S3Settings(access_key='AKREPR', secret_key='SKREPR',
                                 sse_customer_key='SSEREPR')
        text = repr(settings)
        for secret in ('AKREPR', 'SKREPR', 'SSEREPR'):
            self.assertNotIn(secret, text)


@ddt.ddt
class ClientConfigTestCase(testtools.TestCase):

    def test_constructor_does_no_network_io(self):
        with mock.patch.object(s3, '_boto_session') as session:
            s3.S3Store(s3.S3Settings(endpoint_url='http://127.0.0.1:9'))
        session.assert_not_called()

    def test_client_created_once_with_settings(self):
        settings = s3.S3Settings(
            endpoint_url='http://127.0.0.1:9', access_key='AKCONFIGTEST',
            secret_key='config-test-secret', timeout=7, max_pool_connections=3,
            retry_max_attempts=6, retry_mode='standard', verify_ssl=True,
            ca_cert_file='/etc/ca.pem', http_proxy='proxy:3128',
            https_proxy='sproxy:3129', addressing_style='virtual',
            max_concurrent_uploads=8)
        store = s3.S3Store(settings)
        with mock.patch.object(s3, '_boto_session') as session:
            client = store.client
            self.assertIs(client, store.client)
        session.return_value.client.assert_called_once()
        kwargs = session.return_value.client.call_args.kwargs
        config = kwargs['config']
        self.assertEqual('http://127.0.0.1:9', kwargs['endpoint_url'])
        self.assertEqual('/etc/ca.pem', kwargs['verify'])
        self.assertEqual(10, config.max_pool_connections)
        self.assertEqual({'max_attempts': 6, 'mode': 'standard'},
                         config.retries)
        self.assertEqual((7, 7), (config.connect_timeout,
                                  config.read_timeout))
        self.assertEqual({'http': 'proxy:3128', 'https': 'sproxy:3129'},
                         config.proxies)
        self.assertEqual({'addressing_style': 'virtual'}, config.s3)
        self.assertEqual('when_required',
                         config.request_checksum_calculation)
        self.assertEqual('when_required',
                         config.response_checksum_validation)
        self.assertEqual(8, store.max_concurrent_writes)

    @ddt.data((False, None, False), (True, None, None))
    @ddt.unpack
    def test_client_verify_follows_options(self, verify_ssl, ca, expected):
        store = s3.S3Store(s3.S3Settings(endpoint_url='http://127.0.0.1:9',
                                         verify_ssl=verify_ssl,
                                         ca_cert_file=ca))
        with mock.patch.object(s3, '_boto_session') as session:
            store.client
        kwargs = session.return_value.client.call_args.kwargs
        self.assertEqual(expected, kwargs['verify'])
        self.assertIsNone(kwargs['config'].proxies)


@ddt.ddt
class CheckTestCase(MotoTestCase):

    @ddt.data('endpoint_url', 'access_key', 'secret_key')
    def test_check_missing_option_raises_configuration_error(self, field):
        store = self.make_store(**{field: None})
        e = self.assertRaises(exception.StoreConfigurationError, store.check)
        option = {'endpoint_url': 'backup_s3_endpoint_url',
                  'access_key': 'backup_s3_store_access_key',
                  'secret_key': 'backup_s3_store_secret_key'}[field]
        self.assertIn(option, str(e))

    def test_check_existing_bucket_passes(self):
        store = self.make_store()
        store.put_container(BUCKET)
        self.assertIsNone(store.check())

    def test_check_missing_bucket_passes_with_info(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        store = self.make_store(bucket='not-created-yet')
        self.assertIsNone(store.check())
        self.assertIn('not-created-yet', logger.output)

    @ddt.data(('AES256', None), (None, SSE_KEY))
    @ddt.unpack
    def test_check_half_sse_configuration_warns(self, algorithm, key):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        store = self.make_store(sse_customer_algorithm=algorithm,
                                sse_customer_key=key)
        store.put_container(BUCKET)
        store.check()
        self.assertIn('must be set to enable SSE-C', logger.output)
        self.assertFalse(store.settings.sse_enabled)
        self.assertEqual({}, store.settings.sse_args())

    def test_check_sse_key_wrong_length_raises(self):
        store = self.make_store(sse_customer_algorithm='AES256',
                                sse_customer_key='short-secret-key')
        e = self.assertRaises(exception.StoreConfigurationError, store.check)
        self.assertIn('32 bytes', str(e))
        self.assertNotIn('short-secret-key', str(e))

    @ddt.data('InvalidAccessKeyId', 'SignatureDoesNotMatch')
    def test_check_rejected_credentials_raise_configuration_error(self,
                                                                  code):
        store = self.make_store()
        with mock.patch.object(store.client, 'list_objects_v2',
                               side_effect=client_error(code, 403)):
            e = self.assertRaises(exception.StoreConfigurationError,
                                  store.check)
        self.assertIn('rejected the credentials', str(e))
        self.assertNotIn(SECRET, str(e))
        self.assertNotIn(ACCESS, str(e))

    def test_check_unreachable_endpoint_raises_clear_error(self):
        port = local_servers.free_ports(1)[0]
        endpoint = 'http://127.0.0.1:%d' % port
        store = self.make_store(endpoint_url=endpoint, retry_max_attempts=0,
                                timeout=2)
        e = self.assertRaises(exception.TransientStoreError, store.check)
        self.assertIn(endpoint, str(e))
        self.assertIn('backup_s3_endpoint_url', str(e))


class DriverTestCase(MotoTestCase):
    """The driver: options, naming, and one cycle on moto."""

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(CONF))
        self.conf.config(backup_s3_endpoint_url='https://s3.amazonaws.com',
                         backup_s3_store_access_key=ACCESS,
                         backup_s3_store_secret_key=SECRET,
                         backup_s3_store_bucket=BUCKET,
                         backup_s3_object_size=4 * 32768,
                         backup_s3_block_size=32768,
                         backup_s3_enable_progress_timer=False,
                         backup_s3_retry_max_attempts=1)
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)

    def test_options_registered_with_upstream_defaults(self):
        expected = {
            'backup_s3_endpoint_url': None,
            'backup_s3_store_access_key': None,
            'backup_s3_store_secret_key': None,
            'backup_s3_store_bucket': 'volumebackups',
            'backup_s3_object_size': 52428800,
            'backup_s3_block_size': 32768,
            'backup_s3_enable_progress_timer': True,
            'backup_s3_http_proxy': '',
            'backup_s3_https_proxy': '',
            'backup_s3_timeout': 60,
            'backup_s3_max_pool_connections': 10,
            'backup_s3_retry_max_attempts': 4,
            'backup_s3_retry_mode': 'legacy',
            'backup_s3_verify_ssl': True,
            'backup_s3_ca_cert_file': None,
            'backup_s3_md5_validation': True,
            'backup_s3_sse_customer_key': None,
            'backup_s3_sse_customer_algorithm': None,
        }
        self.assertEqual(sorted(expected),
                         sorted(o.name for o in
                                s3_driver.s3backup_service_opts))
        for opt in s3_driver.s3backup_service_opts:
            self.assertEqual(expected[opt.name], opt.default, opt.name)
            self.assertEqual(opt.name in ('backup_s3_store_access_key',
                                          'backup_s3_store_secret_key',
                                          'backup_s3_sse_customer_key'),
                             opt.secret, opt.name)
            self.assertIn(opt.name, CONF)

    def test_chunked_options_registered_in_group(self):
        names = sorted(o.name for o in s3_driver.s3_chunked_opts)
        self.assertEqual(['s3_addressing_style', 's3_max_concurrent_uploads',
                          's3_multipart_part_size', 's3_multipart_threshold',
                          's3_request_checksum'], names)
        group = CONF.chunked_backup
        self.assertEqual('path', group.s3_addressing_style)
        self.assertEqual('when_required', group.s3_request_checksum)
        for opt in s3_driver.s3_chunked_opts:
            self.assertTrue(opt.help.endswith('.'), opt.name)

    def test_driver_constructor_reads_options_without_network(self):
        self.conf.config(s3_max_concurrent_uploads=6,
                         s3_multipart_threshold=7 * MiB,
                         group='chunked_backup')
        with mock.patch.object(s3, '_boto_session') as session:
            driver = s3_driver.S3BackupDriver(self.context)
        session.assert_not_called()
        self.assertEqual(4 * 32768, driver.chunk_size_bytes)
        self.assertEqual(32768, driver.sha_block_size_bytes)
        self.assertEqual(BUCKET, driver.backup_default_container)
        self.assertEqual(6, driver.max_concurrent_writes)
        self.assertEqual(7 * MiB, driver.store.settings.multipart_threshold)
        self.assertEqual(4 * 32768,
                         driver.store.settings.expected_object_size)

    def test_driver_prefix_matches_upstream_layout(self):
        driver = s3_driver.S3BackupDriver(self.context)
        backup = self.env.new_backup()
        prefix = driver._generate_object_name_prefix(backup)
        volume, stamp, name = prefix.split('/')
        self.assertEqual('volume_%s' % backup.volume_id, volume)
        self.assertRegex(stamp, r'^\d{14}$')
        self.assertEqual('az_nova_backup_%s' % backup.id, name)
        self.assertIsNone(driver.update_container_name(backup, 'x'))
        self.assertIsNone(driver.get_extra_metadata(backup, {}))

    def test_driver_backup_restore_delete_cycle(self):
        driver = s3_driver.S3BackupDriver(self.context)
        data = os.urandom(3 * 32768) + bytes(4 * 32768) + b'tail'
        backup = self.env.new_backup()
        driver.backup(backup, io.BytesIO(data))
        self.assertEqual(BUCKET, backup.container)
        names = driver.store.list_objects(BUCKET, backup.service_metadata)
        self.assertIn(backup.service_metadata + '_metadata', names)
        self.assertEqual(4, len(names))
        backup.status = 'restoring'
        target = io.BytesIO()
        driver.restore(backup, backup.volume_id, target, False)
        self.assertEqual(data, target.getvalue())
        driver.delete_backup(backup)
        self.assertEqual([], driver.store.list_objects(
            BUCKET, backup.service_metadata))
