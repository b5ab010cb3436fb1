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

"""Swift failures as the store errors an operator can act on.

swiftclient retries resets, timeouts, 5xx, 408 and 429/498 itself, with
exponential backoff, and authenticates again once on a 401 where it has
credentials.  What is left is classified here: 404 -> ObjectNotFound;
401/403/422 and other 4xx -> PermanentStoreError; 5xx, resets, timeouts
-> TransientStoreError; Keystone's failures likewise.  Every reason goes
through :data:`REDACTOR`, which also keeps secrets out of the logs of
swiftclient, keystoneauth, requests and urllib3.
"""

import socket

try:  # pragma: no cover - depends on the environment
    import requests
    from swiftclient import client as swiftclient
    from swiftclient import exceptions as swift_exc
    from urllib3 import exceptions as urllib3_exc
except ImportError:  # pragma: no cover
    swiftclient = None

try:  # pragma: no cover - depends on the environment
    from keystoneauth1 import exceptions as ks_exc
except ImportError:  # pragma: no cover
    ks_exc = None

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import redaction

#: The libraries whose loggers :data:`REDACTOR` filters.
LOGGER_PREFIXES = ('swiftclient', 'keystoneauth', 'keystoneauth1',
                   'requests', 'urllib3')
#: Statuses swiftclient retries itself: still failing afterwards means
#: the server is failing, not the request.
_TRANSIENT_STATUSES = frozenset([408, 429, 498, 499])

REDACTOR = redaction.SecretRedactor()

if swiftclient is not None:  # pragma: no branch
    NETWORK_ERRORS = (socket.error, requests.exceptions.RequestException,
                      urllib3_exc.HTTPError)
else:  # pragma: no cover
    NETWORK_ERRORS = (OSError,)


def reason_of(error):
    return getattr(error, 'kwargs', {}).get('reason') or str(error)


def redacted(what, detail, hint=None):
    reason = '%s: %s' % (what, detail)
    if hint:
        reason = '%s (%s)' % (reason, hint)
    return REDACTOR.redact(reason)


def classify(err, what, where=''):
    """The store error for ``err``, or None when it is not a known kind."""
    if swiftclient is not None and isinstance(err, swift_exc.ClientException):
        return _classify_http(err, what)
    if ks_exc is not None and isinstance(err, ks_exc.ClientException):
        return _classify_keystone(err, what)
    if swiftclient is not None and isinstance(
            err, requests.exceptions.SSLError):
        return exception.PermanentStoreError(reason=redacted(
            what, 'TLS failure: %s' % err,
            'check backup_swift_ca_cert_file and '
            'backup_swift_auth_insecure'))
    if isinstance(err, NETWORK_ERRORS):
        return exception.TransientStoreError(reason=redacted(
            what, 'cannot talk to Swift%s: %s'
            % (' at %s' % where if where else '', err)))
    return None


def _classify_http(err, what):
    status = err.http_status
    detail = 'HTTP %s %s' % (status, err.http_reason or '')
    if status is None:
        return exception.StoreError(reason=redacted(what, err.msg))
    if status == 404:
        return exception.ObjectNotFound(reason=redacted(what, detail))
    if status == 401:
        return exception.PermanentStoreError(reason=redacted(
            what, detail, 'Swift refused the credentials or the token: '
            'check backup_swift_user and backup_swift_key, or the '
            "user's token (per_user)"))
    if status == 403:
        return exception.PermanentStoreError(reason=redacted(
            what, detail, 'access denied: check that the user may use '
            'this account and container'))
    if status == 422:
        return exception.PermanentStoreError(reason=redacted(
            what, detail, 'Swift received data that does not match the '
            'ETag sent; the data was altered in transit'))
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return exception.TransientStoreError(reason=redacted(
            what, detail, 'Swift is busy or failing; retry later'))
    body = err.http_response_content
    if isinstance(body, bytes):
        body = body[:200].decode('utf-8', 'replace')
    if body:
        detail = '%s: %s' % (detail, body)
    return exception.PermanentStoreError(reason=redacted(what, detail))


def _classify_keystone(err, what):
    if isinstance(err, ks_exc.Unauthorized):
        return exception.PermanentStoreError(reason=redacted(
            what, 'Keystone refused the credentials (%s)' % err,
            'check backup_swift_user, backup_swift_key and the project '
            'and domain options'))
    if isinstance(err, (ks_exc.CatalogException, ks_exc.DiscoveryFailure)):
        return exception.StoreConfigurationError(reason=redacted(
            what, 'no usable Swift endpoint in Keystone (%s)' % err,
            'check backup_swift_auth_url, swift_catalog_info and '
            'backup_swift_region_name'))
    if isinstance(err, ks_exc.SSLError):
        return exception.PermanentStoreError(reason=redacted(
            what, 'TLS failure talking to Keystone: %s' % err,
            'check backup_swift_ca_cert_file and '
            'backup_swift_auth_insecure'))
    if isinstance(err, (ks_exc.ConnectionError,
                        ks_exc.RetriableConnectionFailure)):
        return exception.TransientStoreError(reason=redacted(
            what, 'cannot talk to Keystone: %s' % err))
    if isinstance(err, ks_exc.HttpError) and (err.http_status or 0) >= 500:
        return exception.TransientStoreError(reason=redacted(
            what, 'Keystone failed: %s' % err))
    return exception.PermanentStoreError(reason=redacted(
        what, 'Keystone: %s' % err))
