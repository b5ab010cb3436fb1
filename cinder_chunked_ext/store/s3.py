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

"""Objects in S3 buckets, through boto3.

A container is a bucket and an object is a key in it (keys may contain
``/``, as upstream's S3 prefixes do).  Behaviour beyond the store
contract:

* Writers hold up to ``multipart_threshold`` bytes and then send one PUT
  (with Content-MD5 and the SSE-C parameters when configured).  A larger
  object switches to a multipart upload with parts of ``part_size``
  bytes, so a writer never holds more than about
  ``max(multipart_threshold, part_size)``; a failed or aborted writer
  aborts its multipart upload, and nothing becomes visible.
* Readers stream the body; a connection lost in the middle of an object
  is resumed with a ranged GET from the current offset (conditional on
  the object's ETag), a bounded number of times.
* botocore retries throttling, 5xx answers and connection errors itself
  (``retry_max_attempts``, ``retry_mode``); what is left is classified:
  missing bucket or key -> ObjectNotFound; refused credentials, denied
  access, rejected digests -> PermanentStoreError; throttling, 5xx,
  timeouts, lost connections -> TransientStoreError.
* The boto3 client is created on first use (no network I/O before), is
  shared by all threads of the store, and keeps at least
  ``max_concurrent_uploads`` connections.
* Secrets (access key, secret key, SSE-C key) never appear in our
  messages, and a logging filter removes them from what botocore,
  boto3, s3transfer and urllib3 log, at every level.
"""

import dataclasses
import math
import typing

try:  # pragma: no cover - depends on the environment
    import boto3
    from botocore import config as botocore_config
except ImportError:  # pragma: no cover
    boto3 = None

from oslo_log import log as oslo_logging

from cinder_chunked_ext import exception
from cinder_chunked_ext import locks
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import redaction
from cinder_chunked_ext.store import s3_errors
from cinder_chunked_ext.store import s3_objects

LOG = oslo_logging.getLogger(__name__)

MiB = 1024 ** 2
GiB = 1024 ** 3
#: S3's smallest part (all parts but the last) and largest part.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
#: S3's largest number of parts in one multipart upload.
MAX_PARTS = s3_objects.MAX_PARTS
#: The part size doubles after this many parts, so an object larger than
#: expected still fits in MAX_PARTS parts.
PARTS_PER_SIZE_STEP = 500

ADDRESSING_STYLES = ('path', 'virtual', 'auto')
CHECKSUM_MODES = ('when_required', 'when_supported')
RETRY_MODES = ('legacy', 'standard', 'adaptive')

#: Bodies from this size are sent after the server's ``100 Continue``
#: (as the AWS SDK for Go does by default); smaller ones at once.
EXPECT_CONTINUE_MIN_BYTES = 2 * MiB

#: Libraries whose loggers may see the credentials.
_LOGGER_PREFIXES = ('botocore', 'boto3', 's3transfer', 'urllib3')
#: Removes the access key, secret key and SSE-C key from their logs.
REDACTOR = redaction.SecretRedactor()


def protect_library_logs():
    """Attach the redactor to every library logger that exists now."""
    redaction.protect_loggers(REDACTOR, _LOGGER_PREFIXES)


# -- settings ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Everything the store reads from configuration, read once."""

    endpoint_url: typing.Optional[str] = None
    access_key: typing.Optional[str] = dataclasses.field(
        default=None, repr=False)
    secret_key: typing.Optional[str] = dataclasses.field(
        default=None, repr=False)
    region_name: typing.Optional[str] = None
    bucket: str = 'volumebackups'
    timeout: float = 60.0
    max_pool_connections: int = 10
    retry_max_attempts: int = 4
    retry_mode: str = 'legacy'
    verify_ssl: bool = True
    ca_cert_file: typing.Optional[str] = None
    http_proxy: str = ''
    https_proxy: str = ''
    md5_validation: bool = True
    sse_customer_key: typing.Optional[str] = dataclasses.field(
        default=None, repr=False)
    sse_customer_algorithm: typing.Optional[str] = None
    addressing_style: str = 'path'
    request_checksum: str = 'when_required'
    multipart_threshold: int = 64 * MiB
    multipart_part_size: int = 16 * MiB
    max_concurrent_uploads: int = 4
    #: The largest object the engine normally writes (its chunk size).
    expected_object_size: int = 0

    @property
    def sse_enabled(self):
        return bool(self.sse_customer_key and self.sse_customer_algorithm)

    def sse_args(self):
        if not self.sse_enabled:
            return {}
        return {'SSECustomerAlgorithm': self.sse_customer_algorithm,
                'SSECustomerKey': self.sse_customer_key}

    def secrets(self):
        return [s for s in (self.access_key, self.secret_key,
                            self.sse_customer_key) if s]

    def base_part_size(self):
        """``max(configured, ceil(expected size / MAX_PARTS))``, in range."""
        wanted = max(self.multipart_part_size,
                     math.ceil(self.expected_object_size / MAX_PARTS))
        return min(MAX_PART_SIZE, max(MIN_PART_SIZE, wanted))

    def part_size(self, part_number):
        """The size of part ``part_number`` (counted from 1)."""
        steps = (part_number - 1) // PARTS_PER_SIZE_STEP
        return min(MAX_PART_SIZE, self.base_part_size() * (2 ** steps))


# -- the store --------------------------------------------------------------

_SESSION_LOCK = locks.native_lock()
_SESSION = []


def _boto_session():
    """One boto3 session per process, used under ``_SESSION_LOCK``.

    A session loads the S3 service model once; cinder-backup makes a
    driver (and so a store) per operation.  Sessions are not thread-safe,
    clients are: clients are created under the lock and used freely.
    """
    if not _SESSION:
        _SESSION.append(boto3.session.Session())
    return _SESSION[0]


def _expect_continue_if_large(params, **_kwargs):
    """Drop ``Expect: 100-continue`` from requests with a small body.

    botocore asks for it on every PUT whose body is a file-like object,
    and turns every body into one: each PUT of a small object (an
    incremental backup's changed run) then waits a round trip for the
    server's ``100 Continue`` before it sends its body.  Waiting is
    worth it where a refused request saves sending megabytes.
    """
    headers = params.get('headers')
    if not headers or 'Expect' not in headers:
        return
    try:
        length = int(headers.get('Content-Length', ''))
    except ValueError:
        return
    if length < EXPECT_CONTINUE_MIN_BYTES:
        del headers['Expect']


class S3Store(base.ObjectStore):
    """Buckets and keys of an S3-compatible server."""

    def __init__(self, settings):
        self.settings = settings
        self.max_concurrent_writes = max(1, settings.max_concurrent_uploads)
        self._classify = s3_errors.Classifier(settings, REDACTOR)
        self._client_lock = locks.native_lock()
        self._client = None
        REDACTOR.add(*settings.secrets())

    @staticmethod
    def redact(text):
        """``text`` with every known secret masked."""
        return REDACTOR.redact(text)

    def describe(self):
        return 'S3 endpoint %s' % (self.settings.endpoint_url or '(default)')

    # -- the client ----------------------------------------------------------

    def _client_config(self):
        s = self.settings
        args = dict(
            connect_timeout=s.timeout,
            read_timeout=s.timeout,
            max_pool_connections=max(s.max_pool_connections,
                                     self.max_concurrent_writes + 2),
            retries={'max_attempts': s.retry_max_attempts,
                     'mode': s.retry_mode},
            s3={'addressing_style': s.addressing_style},
        )
        proxies = {}
        if s.http_proxy:
            proxies['http'] = s.http_proxy
        if s.https_proxy:
            proxies['https'] = s.https_proxy
        if proxies:
            args['proxies'] = proxies
        checksums = dict(request_checksum_calculation=s.request_checksum,
                         response_checksum_validation=s.request_checksum)
        try:
            return botocore_config.Config(**args, **checksums)
        except TypeError:  # pragma: no cover - botocore older than 1.36
            # Such versions never send the new default checksums.
            return botocore_config.Config(**args)

    def _new_client(self):
        if boto3 is None:  # pragma: no cover - depends on the environment
            raise exception.StoreConfigurationError(
                reason='the boto3 library is not installed; the S3 backup '
                       'driver needs it')
        s = self.settings
        verify = (s.ca_cert_file or None) if s.verify_ssl else False
        with _SESSION_LOCK:
            client = _boto_session().client(
                's3', endpoint_url=s.endpoint_url or None,
                aws_access_key_id=s.access_key or None,
                aws_secret_access_key=s.secret_key or None,
                region_name=s.region_name or None,
                verify=verify, config=self._client_config())
            # Last: after botocore's own handler has added the header.
            client.meta.events.register_last('before-call.s3',
                                             _expect_continue_if_large)
        protect_library_logs()
        return client

    @property
    def client(self):
        """The boto3 client, created on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._new_client()
        return self._client

    def call(self, operation, what, reading=False, **kwargs):
        """Call a client operation; raise classified store errors."""
        try:
            return getattr(self.client, operation)(**kwargs)
        except Exception as e:  # noqa - classified below, others re-raised
            error = self._classify(e, what, reading=reading)
            if error is None:
                raise
            raise error from None

    # -- the store interface -------------------------------------------------

    def put_container(self, container, create=True):
        try:
            self.client.head_bucket(Bucket=container)
            return
        except Exception as e:  # noqa - classified below
            error = self._classify(
                e, 'cannot check bucket %s' % container)
            if error is None:
                raise
            if not isinstance(error, exception.ObjectNotFound):
                raise error from None
        if not create:
            raise exception.ObjectNotFound(
                reason='bucket %s does not exist and '
                       'backup_create_containers is False: create the '
                       'bucket or allow the driver to create it'
                       % container)
        args = {'Bucket': container}
        region = self.client.meta.region_name
        if region and region not in ('us-east-1', 'aws-global'):
            args['CreateBucketConfiguration'] = {
                'LocationConstraint': region}
        try:
            self.call('create_bucket', 'cannot create bucket %s' % container,
                      **args)
        except exception.PermanentStoreError as create_error:
            # Another backup service may have created it in the meantime.
            if not self._bucket_exists(container):
                raise create_error

    def _bucket_exists(self, container):
        try:
            self.client.head_bucket(Bucket=container)
        except Exception:  # noqa - the caller has a better error to raise
            return False
        return True

    def list_objects(self, container, prefix):
        infos = self.list_object_info(container, prefix)
        return [info.name for info in infos]

    def list_object_info(self, container, prefix=''):
        what = 'cannot list bucket %s' % container
        found = []
        try:
            paginator = self.client.get_paginator('list_objects_v2')
            for page in paginator.paginate(Bucket=container, Prefix=prefix):
                for item in page.get('Contents') or ():
                    modified = item.get('LastModified')
                    found.append(base.ObjectInfo(
                        name=item['Key'], size=item.get('Size'),
                        modified=modified.timestamp() if modified else None))
        except Exception as e:  # noqa - classified below
            error = self._classify(e, what)
            if error is None:
                raise
            raise error from None
        return found

    def list_unfinished(self, container):
        """Multipart uploads started and never completed nor aborted."""
        what = 'cannot list the multipart uploads of bucket %s' % container
        found = []
        try:
            paginator = self.client.get_paginator('list_multipart_uploads')
            for page in paginator.paginate(Bucket=container):
                for item in page.get('Uploads') or ():
                    started = item.get('Initiated')
                    found.append(base.ObjectInfo(
                        name=item['Key'],
                        modified=started.timestamp() if started else None,
                        handle=item['UploadId']))
        except Exception as e:  # noqa - classified below
            error = self._classify(e, what)
            if error is None:
                raise
            raise error from None
        return found

    def delete_unfinished(self, container, info):
        try:
            self.call('abort_multipart_upload',
                      'cannot abort the upload of %s to bucket %s'
                      % (info.name, container), Bucket=container,
                      Key=info.name, UploadId=info.handle)
        except exception.ObjectNotFound:
            pass

    def open_writer(self, container, name, extra_metadata=None,
                    barrier=None):
        return s3_objects.S3Writer(self, container, name)

    def open_reader(self, container, name, extra_metadata=None):
        return s3_objects.S3Reader(self, container, name)

    def delete_object(self, container, name):
        try:
            self.call('delete_object',
                      'cannot delete object %s from bucket %s'
                      % (name, container), Bucket=container, Key=name)
        except exception.ObjectNotFound:
            pass

    def object_size(self, container, name):
        response = self.call(
            'head_object', 'cannot stat object %s in bucket %s'
            % (name, container), reading=True, Bucket=container, Key=name,
            **self.settings.sse_args())
        return response['ContentLength']

    # -- start-up check ------------------------------------------------------

    def check(self):
        """Validate the configuration, then reach the server once."""
        s = self.settings
        missing = [option for option, value in (
            ('backup_s3_endpoint_url', s.endpoint_url),
            ('backup_s3_store_access_key', s.access_key),
            ('backup_s3_store_secret_key', s.secret_key)) if not value]
        if missing:
            raise exception.StoreConfigurationError(
                reason='%s must be set for the S3 backup driver'
                       % ', '.join(missing))
        if bool(s.sse_customer_key) != bool(s.sse_customer_algorithm):
            LOG.warning('Both backup_s3_sse_customer_algorithm and '
                        'backup_s3_sse_customer_key must be set to enable '
                        'SSE-C; only one is, so backups are not encrypted '
                        'by the server.')
        if (s.sse_enabled and s.sse_customer_algorithm.upper() == 'AES256'
                and len(s.sse_customer_key.encode('utf-8')) != 32):
            raise exception.StoreConfigurationError(
                reason='backup_s3_sse_customer_key must be 32 bytes long '
                       'for SSE-C with AES256')
        self._check_reachable()

    def _check_reachable(self):
        s = self.settings
        try:
            self.client.list_objects_v2(Bucket=s.bucket, MaxKeys=1)
        except Exception as e:  # noqa - classified below
            error = self._classify(e, 'S3 endpoint %s, bucket %s'
                                   % (s.endpoint_url, s.bucket))
            if error is None:
                raise
            if isinstance(error, exception.ObjectNotFound):
                LOG.info('S3 bucket %(bucket)s does not exist yet at '
                         '%(endpoint)s; the first backup creates it unless '
                         'backup_create_containers is False.',
                         {'bucket': s.bucket, 'endpoint': s.endpoint_url})
                return
            if isinstance(error, exception.PermanentStoreError):
                raise exception.StoreConfigurationError(
                    reason=s3_errors.reason_of(error)) from None
            if isinstance(error, exception.TransientStoreError):
                raise exception.TransientStoreError(
                    reason='%s; check backup_s3_endpoint_url, the proxy '
                           'options and that the server is running'
                           % s3_errors.reason_of(error)) from None
            raise error from None
        LOG.debug('S3 endpoint %(endpoint)s answers; bucket %(bucket)s '
                  'exists.', {'endpoint': s.endpoint_url, 'bucket': s.bucket})
