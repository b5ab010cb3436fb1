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

* Objects are plain Swift objects, as upstream writes them, each sent
  in one PUT with its MD5 as ``ETag`` and read as a stream
  (:mod:`~cinder_chunked_ext.store.swift_objects`).
* swiftclient's own retries (``retries``, ``starting_backoff``) cover
  resets, timeouts and 5xx answers; what is left is classified like the
  S3 store's errors (:mod:`~cinder_chunked_ext.store.swift_errors`).
* A small pool of connections, built on first use and reused for the
  store's life (a driver's life), shares one authentication.
* Listings are paginated with ``marker`` until an empty page, so a
  container of any size is listed in full.
* Container creation sends ``X-Storage-Policy`` when a policy is set.
* No key, password or token reaches a log line: a
  :class:`~cinder_chunked_ext.store.redaction.SecretRedactor` is
  attached to swiftclient's, keystoneauth's, requests' and urllib3's
  loggers.
"""

import dataclasses
import datetime
import typing

from oslo_log import log as oslo_logging

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base
from cinder_chunked_ext.store import redaction
from cinder_chunked_ext.store import swift_errors
from cinder_chunked_ext.store import swift_objects

LOG = oslo_logging.getLogger(__name__)

REDACTOR = swift_errors.REDACTOR
classify = swift_errors.classify


def _timestamp(value):
    """Seconds since the epoch of a listing's ``last_modified`` (UTC)."""
    if not value:
        return None
    for layout in ('%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S'):
        try:
            moment = datetime.datetime.strptime(value, layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


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
        """The configured key or password, masked wherever it appears.

        Tokens change with every request (per_user) and every renewal:
        remembering each would grow the redactor for the service's life.
        They only ever travel in credential headers, whose values the
        redactor masks whatever they are.
        """
        return [self.key] if self.key else []

    @property
    def describes_account(self):
        """True when credentials, a session or a token are known."""
        return bool(self.session or (self.storage_url and self.token) or
                    (self.auth_url and self.user and self.key))


# -- the store --------------------------------------------------------------

class SwiftStore(base.ObjectStore):
    """Containers and objects of one Swift account."""

    def __init__(self, settings):
        self.settings = settings
        self.max_concurrent_writes = max(1, settings.max_concurrent_uploads)
        self.pool = swift_objects.ConnectionPool(settings)
        REDACTOR.add(*settings.secrets())
        redaction.protect_loggers(REDACTOR,
                                  swift_errors.LOGGER_PREFIXES)

    def describe(self):
        s = self.settings
        return 'Swift account %s' % (s.storage_url or s.auth_url or
                                     s.where or '(from the catalog)')

    # -- calls ---------------------------------------------------------------

    def _check_usable(self):
        if swift_errors.swiftclient is None:  # pragma: no cover
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

    def _listing(self, container, prefix):
        """Every listing entry under ``prefix``, page by page."""
        what = 'cannot list container %s' % container
        marker = ''
        while True:
            _headers, page = self.call(
                'get_container', what, container, prefix=prefix,
                marker=marker, limit=self.settings.listing_page_size)
            if not page:
                return
            yield from page
            marker = page[-1]['name']

    def list_objects(self, container, prefix):
        return [item['name'] for item in self._listing(container, prefix)]

    def list_object_info(self, container, prefix=''):
        """Names, sizes and modification times, from the listing alone.

        Writes are single PUTs: nothing is stored before a commit, so
        there are no unfinished writes to list (the defaults), and only
        the configured containers are walked, as for S3.
        """
        return [base.ObjectInfo(name=item['name'], size=item.get('bytes'),
                                modified=_timestamp(
                                    item.get('last_modified')))
                for item in self._listing(container, prefix)]

    def open_writer(self, container, name, extra_metadata=None,
                    barrier=None):
        return swift_objects.SwiftWriter(self, container, name)

    def open_reader(self, container, name, extra_metadata=None):
        self._check_usable()
        return swift_objects.SwiftReader(self, container, name)

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
        if swift_errors.swiftclient is None:  # pragma: no cover
            self._check_usable()
        s = self.settings
        conn = swift_errors.swiftclient.Connection(
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
                reason='%s; check backup_swift_url'
                       % swift_errors.reason_of(error)
            ) from None
        finally:
            swift_objects.close_quietly(conn)
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
                reason=swift_errors.reason_of(e)) from None
        LOG.debug('Swift account answers; container %s exists.', container)
