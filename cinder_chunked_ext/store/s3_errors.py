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

"""What an S3 failure means: not found, permanent or transient.

botocore retries throttling, 5xx answers and connection errors itself;
what is left reaches :class:`Classifier`, which names the error class
the engine acts on and a reason an operator can act on (which option to
check), with every secret removed.
"""

try:  # pragma: no cover - depends on the environment
    import boto3
    from botocore import exceptions as botocore_exc
    from urllib3 import exceptions as urllib3_exc
except ImportError:  # pragma: no cover
    boto3 = None

from cinder_chunked_ext import exception

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

if boto3 is not None:  # pragma: no branch
    # Failures of an established connection while a body streams in.
    STREAM_ERRORS = (
        botocore_exc.IncompleteReadError,
        botocore_exc.ResponseStreamingError,
        botocore_exc.ReadTimeoutError,
        botocore_exc.ConnectionClosedError,
        urllib3_exc.HTTPError,
        OSError,
    )
else:  # pragma: no cover
    STREAM_ERRORS = (OSError,)


def reason_of(error):
    """The ``reason`` a store error was built with."""
    return getattr(error, 'kwargs', {}).get('reason') or str(error)


def _error_code(err):
    error = err.response.get('Error') or {}
    code = str(error.get('Code') or '')
    status = (err.response.get('ResponseMetadata') or {}).get(
        'HTTPStatusCode')
    return code, status, str(error.get('Message') or '')


class Classifier(object):
    """Turns boto exceptions into store errors with actionable reasons."""

    def __init__(self, settings, redactor):
        self._settings = settings
        self._redactor = redactor

    def _reason(self, what, detail, hint=None):
        reason = '%s: %s' % (what, detail)
        if hint:
            reason = '%s (%s)' % (reason, hint)
        return self._redactor.redact(reason)

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
        if isinstance(err, STREAM_ERRORS):
            return exception.TransientStoreError(reason=self._reason(
                what, 'connection to %s failed: %s'
                % (self._settings.endpoint_url, err)))
        return None
