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

import base64
import dataclasses
import hashlib
import logging
import math
import threading
import typing

try:  # pragma: no cover - depends on the environment
    import boto3
    from botocore import config as botocore_config
    from botocore import exceptions as botocore_exc
    from urllib3 import exceptions as urllib3_exc
except ImportError:  # pragma: no cover
    boto3 = None

from oslo_log import log as oslo_logging

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base

LOG = oslo_logging.getLogger(__name__)

MiB = 1024 ** 2
GiB = 1024 ** 3
#: S3's smallest part (all parts but the last) and largest part.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
#: S3's largest number of parts in one multipart upload.
MAX_PARTS = 10000
#: The part size doubles after this many parts, so an object larger than
#: expected still fits in MAX_PARTS parts.
PARTS_PER_SIZE_STEP = 500

ADDRESSING_STYLES = ('path', 'virtual', 'auto')
CHECKSUM_MODES = ('when_required', 'when_supported')
RETRY_MODES = ('legacy', 'standard', 'adaptive')

_NOT_FOUND_CODES = frozenset([
    'NoSuchBucket', 'NoSuchKey', 'NoSuchUpload', 'NotFound', '404'])
_CREDENTIAL_CODES = frozenset([
    'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken',
    'ExpiredToken', 'InvalidSecurity', 'AuthorizationHeaderMalformed',
    'MissingSecurityHeader'])
_DENIED_CODES = frozenset([
    'AccessDenied', 'AllAccessDisabled', 'AccountProblem', 'Forbidden',
    '403'])
_DIGEST_CODES = frozenset([
    'BadDigest', 'InvalidDigest', 'XAmzContentSHA256Mismatch'])
_TRANSIENT_CODES = frozenset([
    'SlowDown', 'Throttling', 'ThrottlingException', 'RequestThrottled',
    'TooManyRequests', 'RequestLimitExceeded', 'RequestTimeout',
    'InternalError', 'ServiceUnavailable', 'OperationAborted'])

_LOGGER_PREFIXES = ('botocore', 'boto3', 's3transfer', 'urllib3')

if boto3 is not None:  # pragma: no branch
    # Failures of an established connection while a body streams in.
    _STREAM_ERRORS = (
        botocore_exc.IncompleteReadError,
        botocore_exc.ResponseStreamingError,
        botocore_exc.ReadTimeoutError,
        botocore_exc.ConnectionClosedError,
        urllib3_exc.HTTPError,
        OSError,
    )
else:  # pragma: no cover
    _STREAM_ERRORS = (OSError,)


# -- secrets out of logs -----------------------------------------------------

class _SecretRedactor(logging.Filter):
    """Replaces known secret strings in log records with ``***``.

    botocore logs request headers and canonical requests at DEBUG level,
    which carry the access key id and the SSE-C key.  This filter is
    attached to every botocore, boto3, s3transfer and urllib3 logger.
    """

    MASK = '***'

    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()
        self._secrets = ()

    def add(self, *secrets):
        forms = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            raw = secret.encode('utf-8')
            forms.add(base64.b64encode(raw).decode('ascii'))
        with self._lock:
            merged = set(self._secrets) | forms
            # Longest first, so that no part of a longer one survives.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text):
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, self.MASK)
        return text

    def filter(self, record):
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa - a broken record is not ours to fix
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            clean = self.redact(text)
            if clean != text:
                record.exc_text = clean
        return True


REDACTOR = _SecretRedactor()


def protect_library_logs():
    """Attach the redactor to every library logger that exists now."""
    manager = logging.Logger.manager
    for name, logger in list(manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if not name.split('.', 1)[0] in _LOGGER_PREFIXES:
            continue
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)


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


def _content_md5(data):
    """The base64 MD5 digest sent as Content-MD5."""
    return base64.b64encode(
        hashlib.md5(data, usedforsecurity=False).digest()).decode('ascii')


# -- error classification ----------------------------------------------------

def _reason_of(error):
    """The ``reason`` a store error was built with."""
    return getattr(error, 'kwargs', {}).get('reason') or str(error)


def _error_code(err):
    error = err.response.get('Error') or {}
    code = str(error.get('Code') or '')
    status = (err.response.get('ResponseMetadata') or {}).get(
        'HTTPStatusCode')
    return code, status, str(error.get('Message') or '')


class _Classifier(object):
    """Turns boto exceptions into store errors with actionable reasons."""

    def __init__(self, settings):
        self._settings = settings

    def _reason(self, what, detail, hint=None):
        reason = '%s: %s' % (what, detail)
        if hint:
            reason = '%s (%s)' % (reason, hint)
        return REDACTOR.redact(reason)

    def client_error(self, err, what, reading=False):
        code, status, message = _error_code(err)
        detail = '%s %s (HTTP %s)' % (code or 'error', message, status)
        detail = detail.replace('  ', ' ')
        if code in _NOT_FOUND_CODES or (status == 404 and not code):
            return exception.ObjectNotFound(reason=self._reason(what, detail))
        if code in _CREDENTIAL_CODES:
            return exception.PermanentStoreError(reason=self._reason(
                what, detail,
                'the S3 server rejected the credentials: check '
                'backup_s3_store_access_key and backup_s3_store_secret_key'))
        if code in _DENIED_CODES or status == 403:
            hint = ('access denied: check that the user of '
                    'backup_s3_store_access_key may use this bucket')
            if code in ('', '403'):
                # A HEAD answer has no body, so no reason: refused
                # credentials look the same as a denied bucket.
                hint = ('access denied: check backup_s3_store_access_key '
                        'and backup_s3_store_secret_key, and that this '
                        'user may use this bucket')
            if reading and self._settings.sse_enabled:
                hint += (', and that backup_s3_sse_customer_key is the key '
                         'the object was written with')
            return exception.PermanentStoreError(
                reason=self._reason(what, detail, hint))
        if code in _DIGEST_CODES:
            return exception.PermanentStoreError(reason=self._reason(
                what, detail,
                'the server received data that does not match the '
                'Content-MD5 sent; the data was altered in transit'))
        if code == 'PreconditionFailed' or status == 412:
            return exception.PermanentStoreError(reason=self._reason(
                what, detail, 'the object changed while it was read'))
        if (code in _TRANSIENT_CODES or status in (429, 503)
                or (status or 0) >= 500):
            return exception.TransientStoreError(reason=self._reason(
                what, detail, 'the S3 server is busy or failing; retry later'))
        return exception.PermanentStoreError(reason=self._reason(what, detail))

    def __call__(self, err, what, reading=False):
        """The store error for ``err``, or None when it is not boto's."""
        if isinstance(err, botocore_exc.ClientError):
            return self.client_error(err, what, reading=reading)
        if isinstance(err, botocore_exc.SSLError):
            return exception.PermanentStoreError(reason=self._reason(
                what, 'TLS failure talking to %s: %s'
                % (self._settings.endpoint_url, err),
                'check backup_s3_verify_ssl and backup_s3_ca_cert_file'))
        if isinstance(err, (botocore_exc.NoCredentialsError,
                            botocore_exc.PartialCredentialsError)):
            return exception.StoreConfigurationError(reason=self._reason(
                what, 'no usable S3 credentials',
                'set backup_s3_store_access_key and '
                'backup_s3_store_secret_key'))
        if isinstance(err, botocore_exc.ParamValidationError):
            return exception.PermanentStoreError(
                reason=self._reason(what, err))
        if isinstance(err, (botocore_exc.ConnectionError,
                            botocore_exc.HTTPClientError,
                            botocore_exc.IncompleteReadError)):
            return exception.TransientStoreError(reason=self._reason(
                what, 'cannot talk to the S3 endpoint %s: %s'
                % (self._settings.endpoint_url, err)))
        if isinstance(err, botocore_exc.BotoCoreError):
            return exception.StoreError(reason=self._reason(what, err))
        if isinstance(err, _STREAM_ERRORS):
            return exception.TransientStoreError(reason=self._reason(
                what, 'connection to %s failed: %s'
                % (self._settings.endpoint_url, err)))
        return None


# -- writer and reader -------------------------------------------------------

class _S3Writer(base.ObjectWriter):
    """One PUT up to the threshold, a multipart upload beyond it."""

    def __init__(self, store, bucket, key):
        super().__init__()
        self._store = store
        self._bucket = bucket
        self._key = key
        self._buffer = bytearray()
        self._upload_id = None
        self._parts = []

    def _what(self):
        return 'cannot write object %s to bucket %s' % (self._key,
                                                        self._bucket)

    def _write(self, data):
        self._buffer += data
        if self._upload_id is None:
            if len(self._buffer) <= self._store.settings.multipart_threshold:
                return
            self._start_multipart()
        self._send_full_parts()

    def _start_multipart(self):
        response = self._store.call(
            'create_multipart_upload', self._what(),
            Bucket=self._bucket, Key=self._key,
            **self._store.settings.sse_args())
        self._upload_id = response['UploadId']

    def _next_part_size(self):
        return self._store.settings.part_size(len(self._parts) + 1)

    def _send_full_parts(self):
        while len(self._buffer) >= self._next_part_size():
            size = self._next_part_size()
            with memoryview(self._buffer) as view:
                part = bytes(view[:size])
            del self._buffer[:size]
            self._send_part(part)

    def _send_part(self, data):
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise exception.PermanentStoreError(
                reason='%s: more than %d parts' % (self._what(), MAX_PARTS))
        args = dict(Bucket=self._bucket, Key=self._key,
                    UploadId=self._upload_id, PartNumber=number,
                    Body=data, ContentLength=len(data),
                    **self._store.settings.sse_args())
        if self._store.settings.md5_validation:
            args['ContentMD5'] = _content_md5(data)
        response = self._store.call('upload_part', self._what(), **args)
        self._parts.append({'PartNumber': number, 'ETag': response['ETag']})

    def _commit(self):
        if self._upload_id is None:
            self._put_whole()
        else:
            if self._buffer or not self._parts:
                part = bytes(self._buffer)
                self._buffer = bytearray()
                self._send_part(part)
            self._store.call(
                'complete_multipart_upload', self._what(),
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={'Parts': self._parts})
            self._upload_id = None
        self._buffer = bytearray()

    def _put_whole(self):
        # bytes, which every HTTP stack (and moto) accepts as a body.
        data = bytes(self._buffer)
        self._buffer = bytearray()
        args = dict(Bucket=self._bucket, Key=self._key, Body=data,
                    ContentLength=len(data),
                    **self._store.settings.sse_args())
        if self._store.settings.md5_validation:
            args['ContentMD5'] = _content_md5(data)
        self._store.call('put_object', self._what(), **args)

    def _abort(self):
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        try:
            self._store.call('abort_multipart_upload', self._what(),
                             Bucket=self._bucket, Key=self._key,
                             UploadId=upload_id)
        except exception.StoreError:
            # Writers must not log (they run on native threads); parts of
            # an unfinished upload are invisible, and a bucket lifecycle
            # rule for incomplete uploads removes them.
            pass


class _S3Reader(base.ObjectReader):
    """Streams an object; resumes a broken stream with a ranged GET."""

    def __init__(self, store, bucket, key):
        self._store = store
        self._bucket = bucket
        self._key = key
        self._offset = 0
        self._size = None
        self._etag = None
        self._body = None
        # Why the reader gave up: later reads fail at once rather than
        # spend another round of attempts each.
        self._gave_up = None
        self._open()

    def _what(self):
        return 'cannot read object %s from bucket %s' % (self._key,
                                                         self._bucket)

    def _open(self):
        args = dict(Bucket=self._bucket, Key=self._key,
                    **self._store.settings.sse_args())
        if self._offset:
            args['Range'] = 'bytes=%d-' % self._offset
            if self._etag:
                args['IfMatch'] = self._etag
        response = self._store.call('get_object', self._what(),
                                    reading=True, **args)
        if self._size is None:
            self._size = response.get('ContentLength')
            self._etag = response.get('ETag')
        self._body = response['Body']

    def _drop_body(self):
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except _STREAM_ERRORS:
                pass

    def _read_some(self, size):
        if self._gave_up is not None:
            raise exception.TransientStoreError(reason=self._gave_up)
        attempts = max(1, self._store.settings.retry_max_attempts)
        failures = 0
        while True:
            try:
                if self._body is None:
                    self._open()
                data = self._body.read(size)
            except _STREAM_ERRORS as e:
                self._drop_body()
                failures += 1
                if failures > attempts:
                    self._gave_up = REDACTOR.redact(
                        '%s: the download broke off at byte %d %d times '
                        '(last error: %s)'
                        % (self._what(), self._offset, failures, e))
                    raise exception.TransientStoreError(
                        reason=self._gave_up)
                continue
            self._offset += len(data)
            return data

    def read(self, size=-1):
        if self._size is not None and self._offset >= self._size:
            return b''
        if size is None or size < 0:
            parts = []
            while True:
                data = self._read_some(MiB * 8)
                if not data:
                    return b''.join(parts)
                parts.append(data)
        if size == 0:
            return b''
        return self._read_some(size)

    def close(self):
        self._drop_body()


# -- the store --------------------------------------------------------------

_SESSION_LOCK = threading.Lock()
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


class S3Store(base.ObjectStore):
    """Buckets and keys of an S3-compatible server."""

    def __init__(self, settings):
        self.settings = settings
        self.max_concurrent_writes = max(1, settings.max_concurrent_uploads)
        self._classify = _Classifier(settings)
        self._client_lock = threading.Lock()
        self._client = None
        REDACTOR.add(*settings.secrets())

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
        what = 'cannot list bucket %s' % container
        names = []
        try:
            paginator = self.client.get_paginator('list_objects_v2')
            for page in paginator.paginate(Bucket=container, Prefix=prefix):
                names.extend(item['Key'] for item in page.get('Contents')
                             or ())
        except Exception as e:  # noqa - classified below
            error = self._classify(e, what)
            if error is None:
                raise
            raise error from None
        return names

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

    def open_writer(self, container, name, extra_metadata=None):
        return _S3Writer(self, container, name)

    def open_reader(self, container, name, extra_metadata=None):
        return _S3Reader(self, container, name)

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
                    reason=_reason_of(error)) from None
            if isinstance(error, exception.TransientStoreError):
                raise exception.TransientStoreError(
                    reason='%s; check backup_s3_endpoint_url, the proxy '
                           'options and that the server is running'
                           % _reason_of(error)) from None
            raise error from None
        LOG.debug('S3 endpoint %(endpoint)s answers; bucket %(bucket)s '
                  'exists.', {'endpoint': s.endpoint_url, 'bucket': s.bucket})
