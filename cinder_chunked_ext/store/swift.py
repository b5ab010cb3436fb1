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

"""Objects in OpenStack Swift containers, through python-swiftclient.

A container is a Swift container and an object a Swift object (names may
contain ``/``, as upstream's prefixes do).  How the account is reached
(tempauth, Keystone through a keystoneauth1 session, or a user's token
and storage URL) is decided by the driver and handed over in
:class:`SwiftSettings`.  Behaviour beyond the store contract:

* Objects are plain Swift objects, as upstream writes them.  A writer
  holds its object (at most one chunk, ``backup_swift_object_size``)
  and sends it in one PUT on commit, with its MD5 as ``ETag``: the
  server refuses (422) data altered on the way, and nothing is visible
  before the commit.  The ETag the server answers is checked as well.
* Readers stream the body in pieces; swiftclient resumes a download that
  broke off with a ranged GET (``If-Match`` the object's ETag), within
  its retry count; a body that still ends early is an error, never a
  short object.
* swiftclient's own retries (``retries``, ``starting_backoff``) cover
  resets, timeouts, 5xx, 408 and 429/498 with exponential backoff, and
  one re-authentication on 401 where credentials allow it; what is
  left is classified: 404 -> ObjectNotFound; 401/403/422 and other
  4xx -> PermanentStoreError; 5xx, resets, timeouts ->
  TransientStoreError.
* swiftclient's ``Connection`` holds one HTTP connection and is not
  thread-safe, so the store keeps a small pool of them, built on first
  use and reused for the store's life (a driver's life: one
  authentication per driver, shared by every connection of the pool).
* Listings are paginated with ``marker`` until an empty page, so a
  container of any size is listed in full.
* Container creation sends ``X-Storage-Policy`` when a policy is set.
* No key, password or token reaches a log line: a
  :class:`~cinder_chunked_ext.store.redaction.Redactor` is attached to
  swiftclient's, keystoneauth's, requests' and urllib3's loggers.
"""

import dataclasses
import hashlib
import socket
import threading
import typing

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

from oslo_log import log as oslo_logging

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import redaction

LOG = oslo_logging.getLogger(__name__)

MiB = 1024 ** 2
#: Bytes per socket read of a download, and per send of an upload.
IO_CHUNK = MiB
#: Idle connections the pool keeps for reuse.
MAX_IDLE_CONNECTIONS = 16

_LOGGER_PREFIXES = ('swiftclient', 'keystoneauth', 'keystoneauth1',
                    'requests', 'urllib3')
#: Statuses swiftclient retries itself: still failing afterwards means
#: the server is failing, not the request.
_TRANSIENT_STATUSES = frozenset([408, 429, 498, 499])

REDACTOR = redaction.SecretRedactor()

if swiftclient is not None:  # pragma: no branch
    _NETWORK_ERRORS = (socket.error, requests.exceptions.RequestException,
                       urllib3_exc.HTTPError)
else:  # pragma: no cover
    _NETWORK_ERRORS = (OSError,)


# -- settings ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SwiftSettings:
    """How to reach the account, and how to use it; read once.

    Exactly one way to authenticate is used:

    * ``storage_url`` and ``token``: a token someone else obtained
      (upstream's per_user mode: the request's token);
    * ``session``: a keystoneauth1 session (Keystone v2/v3 single_user),
      the storage URL taken from its catalog with ``os_options``
      (``service_type``, ``endpoint_type``, ``region_name``);
    * ``auth_url``, ``user``, ``key``: v1 (tempauth, swauth) single_user.
    """

    auth_url: typing.Optional[str] = None
    auth_version: str = '1'
    user: typing.Optional[str] = None
    key: typing.Optional[str] = dataclasses.field(default=None, repr=False)
    storage_url: typing.Optional[str] = None
    token: typing.Optional[str] = dataclasses.field(default=None,
                                                    repr=False)
    session: typing.Any = dataclasses.field(default=None, repr=False)
    os_options: typing.Dict[str, str] = dataclasses.field(
        default_factory=dict)
    retries: int = 3
    backoff: float = 2
    max_backoff: float = 64
    timeout: typing.Optional[float] = None
    insecure: bool = False
    ca_cert_file: typing.Optional[str] = None
    storage_policy: typing.Optional[str] = None
    container: str = 'volumebackups'
    max_concurrent_uploads: int = 2
    #: Names per listing request; None: the server's page size.
    listing_page_size: typing.Optional[int] = None
    #: Called before each request for extra headers (a service token).
    headers_provider: typing.Optional[typing.Callable[[], dict]] = (
        dataclasses.field(default=None, repr=False))
    #: Shown when the account cannot be reached at all.
    where: str = ''
    #: Why the account cannot be used (found when the driver was made);
    #: raised by the first operation.
    problem: typing.Optional[str] = None

    def secrets(self):
        return [s for s in (self.key, self.token) if s]

    @property
    def describes_account(self):
        """True when credentials, a session or a token are known."""
        return bool(self.session or (self.storage_url and self.token) or
                    (self.auth_url and self.user and self.key))


# -- error classification ----------------------------------------------------

def _reason_of(error):
    return getattr(error, 'kwargs', {}).get('reason') or str(error)


def _redacted(what, detail, hint=None):
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
        return exception.PermanentStoreError(reason=_redacted(
            what, 'TLS failure: %s' % err,
            'check backup_swift_ca_cert_file and '
            'backup_swift_auth_insecure'))
    if isinstance(err, _NETWORK_ERRORS):
        return exception.TransientStoreError(reason=_redacted(
            what, 'cannot talk to Swift%s: %s'
            % (' at %s' % where if where else '', err)))
    return None


def _classify_http(err, what):
    status = err.http_status
    detail = 'HTTP %s %s' % (status, err.http_reason or '')
    if status is None:
        return exception.StoreError(reason=_redacted(what, err.msg))
    if status == 404:
        return exception.ObjectNotFound(reason=_redacted(what, detail))
    if status == 401:
        return exception.PermanentStoreError(reason=_redacted(
            what, detail, 'Swift refused the credentials or the token: '
            'check backup_swift_user and backup_swift_key, or the '
            "user's token (per_user)"))
    if status == 403:
        return exception.PermanentStoreError(reason=_redacted(
            what, detail, 'access denied: check that the user may use '
            'this account and container'))
    if status == 422:
        return exception.PermanentStoreError(reason=_redacted(
            what, detail, 'Swift received data that does not match the '
            'ETag sent; the data was altered in transit'))
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return exception.TransientStoreError(reason=_redacted(
            what, detail, 'Swift is busy or failing; retry later'))
    body = err.http_response_content
    if isinstance(body, bytes):
        body = body[:200].decode('utf-8', 'replace')
    if body:
        detail = '%s: %s' % (detail, body)
    return exception.PermanentStoreError(reason=_redacted(what, detail))


def _classify_keystone(err, what):
    if isinstance(err, ks_exc.Unauthorized):
        return exception.PermanentStoreError(reason=_redacted(
            what, 'Keystone refused the credentials (%s)' % err,
            'check backup_swift_user, backup_swift_key and the project '
            'and domain options'))
    if isinstance(err, (ks_exc.CatalogException, ks_exc.DiscoveryFailure)):
        return exception.StoreConfigurationError(reason=_redacted(
            what, 'no usable Swift endpoint in Keystone (%s)' % err,
            'check backup_swift_auth_url, swift_catalog_info and '
            'backup_swift_region_name'))
    if isinstance(err, ks_exc.SSLError):
        return exception.PermanentStoreError(reason=_redacted(
            what, 'TLS failure talking to Keystone: %s' % err,
            'check backup_swift_ca_cert_file and '
            'backup_swift_auth_insecure'))
    if isinstance(err, (ks_exc.ConnectionError,
                        ks_exc.RetriableConnectionFailure)):
        return exception.TransientStoreError(reason=_redacted(
            what, 'cannot talk to Keystone: %s' % err))
    if isinstance(err, ks_exc.HttpError) and (err.http_status or 0) >= 500:
        return exception.TransientStoreError(reason=_redacted(
            what, 'Keystone failed: %s' % err))
    return exception.PermanentStoreError(reason=_redacted(
        what, 'Keystone: %s' % err))


# -- connections --------------------------------------------------------------

class _ConnectionPool(object):
    """swiftclient connections sharing one authentication.

    The first connection authenticates; the others start from the
    storage URL and token it obtained (and keep the credentials, so any
    of them can authenticate again when the token expires).
    """

    def __init__(self, settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._idle = []
        self._auth = None    # (storage URL, token) last seen
        self.created = 0

    def _new(self):
        s = self._settings
        args = dict(retries=s.retries, starting_backoff=s.backoff,
                    max_backoff=s.max_backoff, insecure=s.insecure,
                    cacert=s.ca_cert_file, timeout=s.timeout,
                    os_options=dict(s.os_options))
        if s.session is not None:
            args['session'] = s.session
        elif s.token:
            args.update(preauthurl=s.storage_url, preauthtoken=s.token)
        else:
            args.update(authurl=s.auth_url, user=s.user, key=s.key,
                        auth_version=s.auth_version)
        conn = swiftclient.Connection(**args)
        self.created += 1
        return conn

    def acquire(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
            auth = self._auth
        conn = self._new()
        if auth is not None and not self._settings.token:
            conn.url, conn.token = auth
        return conn

    def release(self, conn, reusable=True):
        token = getattr(conn, 'token', None)
        if token:
            REDACTOR.add(token)
        with self._lock:
            if token and conn.url:
                self._auth = (conn.url, token)
            if reusable and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn):
    try:
        conn.close()
    except Exception:  # noqa: S110 - closing a broken connection
        pass


# -- writer and reader -------------------------------------------------------

class _BufferReader(object):
    """A seekable file over a bytearray, without copying it whole.

    swiftclient re-sends a PUT after a failure only when it can seek the
    body back to its start.
    """

    def __init__(self, buffer):
        self._view = memoryview(buffer)
        self._pos = 0

    def read(self, size=-1):
        end = (len(self._view) if size is None or size < 0
               else min(len(self._view), self._pos + size))
        data = bytes(self._view[self._pos:end])
        self._pos = end
        return data

    def tell(self):
        return self._pos

    def seek(self, pos, whence=0):
        self._pos = pos if whence == 0 else (
            self._pos + pos if whence == 1 else len(self._view) + pos)
        return self._pos

    def release(self):
        self._view.release()


class _SwiftWriter(base.ObjectWriter):
    """Holds the object; one PUT with its MD5 as ETag on commit."""

    def __init__(self, store, container, name):
        super().__init__()
        self._store = store
        self._container = container
        self._name = name
        self._buffer = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)

    def _what(self):
        return 'cannot write object %s to container %s' % (self._name,
                                                           self._container)

    def _write(self, data):
        self._buffer += data
        self._md5.update(data)

    def _commit(self):
        etag = self._md5.hexdigest()
        body = _BufferReader(self._buffer)
        try:
            answered = self._store.call(
                'put_object', self._what(), self._container, self._name,
                contents=body, content_length=len(self._buffer),
                etag=etag, chunk_size=IO_CHUNK)
        finally:
            body.release()
            self._buffer = bytearray()
        if answered and answered.strip('"') != etag:
            raise exception.PermanentStoreError(
                reason='%s: Swift stored ETag %s for data whose MD5 is %s'
                       % (self._what(), answered, etag))

    def _abort(self):
        self._buffer = bytearray()


class _SwiftReader(base.ObjectReader):
    """Streams an object's body from one connection of the pool."""

    def __init__(self, store, container, name):
        self._store = store
        self._container = container
        self._name = name
        self._received = 0
        self._conn = store.pool.acquire()
        self._body = None
        try:
            headers, self._body = store.call_on(
                self._conn, 'get_object', self._what(), container, name,
                resp_chunk_size=IO_CHUNK)
        except BaseException:
            store.pool.release(self._conn, reusable=False)
            self._conn = None
            raise
        self._size = int(headers.get('content-length', -1))

    def _what(self):
        return 'cannot read object %s from container %s' % (self._name,
                                                            self._container)

    def read(self, size=-1):
        if self._body is None:
            return b''
        if size == 0:
            return b''
        try:
            data = self._body.read(None if size is None or size < 0
                                   else size)
        except Exception as e:  # noqa - classified below
            error = classify(e, self._what(), self._store.settings.where)
            if error is None:
                raise
            raise error from None
        self._received += len(data)
        if not data and 0 <= self._received < self._size:
            raise exception.TransientStoreError(
                reason='%s: the download ended at byte %d of %d'
                       % (self._what(), self._received, self._size))
        return data

    def close(self):
        body, self._body = self._body, None
        conn, self._conn = self._conn, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: S110 - the body is dropped anyway
                pass
        if conn is not None:
            complete = self._received == self._size
            self._store.pool.release(conn, reusable=complete)


# -- the store --------------------------------------------------------------

class SwiftStore(base.ObjectStore):
    """Containers and objects of one Swift account."""

    def __init__(self, settings):
        self.settings = settings
        self.max_concurrent_writes = max(1, settings.max_concurrent_uploads)
        self.pool = _ConnectionPool(settings)
        REDACTOR.add(*settings.secrets())
        redaction.protect_loggers(REDACTOR, _LOGGER_PREFIXES)

    def describe(self):
        s = self.settings
        return 'Swift account %s' % (s.storage_url or s.auth_url or
                                     s.where or '(from the catalog)')

    # -- calls ---------------------------------------------------------------

    def _check_usable(self):
        if swiftclient is None:  # pragma: no cover - depends on environment
            raise exception.StoreConfigurationError(
                reason='the python-swiftclient library is not installed; '
                       'the Swift backup driver needs it')
        if self.settings.problem:
            raise exception.StoreConfigurationError(
                reason=self.settings.problem)
        if not self.settings.describes_account:
            raise exception.StoreConfigurationError(
                reason='no Swift account to use: per_user authentication '
                       "needs a request's token and project, single_user "
                       'needs backup_swift_auth_url (or the Keystone '
                       'catalog), backup_swift_user and backup_swift_key')

    def _headers(self, headers=None):
        provider = self.settings.headers_provider
        extra = provider() if provider is not None else None
        if extra:
            REDACTOR.add(*[v for v in extra.values() if v])
            headers = dict(headers or {}, **extra)
        return headers

    def call_on(self, conn, operation, what, *args, **kwargs):
        """``conn.<operation>``, with errors classified."""
        kwargs['headers'] = self._headers(kwargs.get('headers'))
        try:
            return getattr(conn, operation)(*args, **kwargs)
        except Exception as e:  # noqa - classified below, others re-raised
            error = classify(e, what, self.settings.where)
            if error is None:
                raise
            raise error from None

    def call(self, operation, what, *args, **kwargs):
        """One request on a pooled connection, errors classified."""
        self._check_usable()
        conn = self.pool.acquire()
        reusable = False
        try:
            result = self.call_on(conn, operation, what, *args, **kwargs)
            reusable = True
            return result
        except exception.ObjectNotFound:
            reusable = True
            raise
        finally:
            self.pool.release(conn, reusable=reusable)

    # -- the store interface -------------------------------------------------

    def put_container(self, container, create=True):
        try:
            self.call('head_container', 'cannot check container %s'
                      % container, container)
            return
        except exception.ObjectNotFound:
            pass
        if not create:
            raise exception.ObjectNotFound(
                reason='container %s does not exist and '
                       'backup_create_containers is False: create the '
                       'container or allow the driver to create it'
                       % container)
        headers = None
        if self.settings.storage_policy:
            headers = {'X-Storage-Policy': self.settings.storage_policy}
        self.call('put_container', 'cannot create container %s%s'
                  % (container, ' with storage policy %s'
                     % self.settings.storage_policy if headers else ''),
                  container, headers=headers)

    def list_objects(self, container, prefix):
        what = 'cannot list container %s' % container
        names = []
        marker = ''
        while True:
            _headers, page = self.call(
                'get_container', what, container, prefix=prefix,
                marker=marker, limit=self.settings.listing_page_size)
            if not page:
                return names
            names.extend(item['name'] for item in page)
            marker = names[-1]

    def open_writer(self, container, name, extra_metadata=None):
        return _SwiftWriter(self, container, name)

    def open_reader(self, container, name, extra_metadata=None):
        self._check_usable()
        return _SwiftReader(self, container, name)

    def delete_object(self, container, name):
        try:
            self.call('delete_object', 'cannot delete object %s from '
                      'container %s' % (name, container), container, name)
        except exception.ObjectNotFound:
            pass

    def object_size(self, container, name):
        headers = self.call('head_object', 'cannot stat object %s in '
                            'container %s' % (name, container),
                            container, name)
        return int(headers['content-length'])

    def close(self):
        self.pool.close()

    # -- start-up check ------------------------------------------------------

    def check_info(self, url):
        """Ask ``url``'s server for ``/info`` (no credentials needed)."""
        if swiftclient is None:  # pragma: no cover - depends on environment
            self._check_usable()
        s = self.settings
        conn = swiftclient.Connection(
            preauthurl=url, retries=s.retries, starting_backoff=s.backoff,
            max_backoff=s.max_backoff, insecure=s.insecure,
            cacert=s.ca_cert_file, timeout=s.timeout)
        try:
            info = conn.get_capabilities()
        except Exception as e:  # noqa - classified below, others re-raised
            error = classify(e, 'cannot get the capabilities of Swift at %s'
                             % url, url)
            if error is None:
                raise
            raise exception.StoreConfigurationError(
                reason='%s; check backup_swift_url' % _reason_of(error)
            ) from None
        finally:
            _close_quietly(conn)
        LOG.debug('Swift at %(url)s answers (version %(version)s).',
                  {'url': url,
                   'version': (info.get('swift') or {}).get('version')})
        return info

    def check(self):
        """Reach the account once; a missing container is fine."""
        self._check_usable()
        container = self.settings.container
        try:
            self.call('head_container', 'cannot reach container %s of %s'
                      % (container, self.describe()), container)
        except exception.ObjectNotFound:
            LOG.info('Swift container %(container)s does not exist yet; '
                     'the first backup creates it unless '
                     'backup_create_containers is False.',
                     {'container': container})
            return
        except exception.PermanentStoreError as e:
            raise exception.StoreConfigurationError(
                reason=_reason_of(e)) from None
        LOG.debug('Swift account answers; container %s exists.', container)
