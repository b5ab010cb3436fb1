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

"""A real one-node OpenStack Swift on 127.0.0.1, for tests and benchmarks.

Four servers of the ``swift`` package (proxy, account, container,
object), each started as ``python -m swift.<kind>.server <conf> -v`` with
``workers = 0`` on a free loopback port (bind-tested first: Swift's
listener silently shares a port another server holds), one replica,
devices as directories in a temporary directory, rings built at start
with ``swift.common.ring.RingBuilder``.  Everything the servers write
(rings, configuration, data, console logs) stays in that directory,
removed at clean-up.

Authentication is tempauth (``/auth/v1.0``).  Its tokens are Fernet
tokens (tempauth's ``fernet_key_*`` / ``active_fernet_key_id``): they
carry their own groups, so no memcached is needed, no Debian package
has to be installed and nothing is shared between servers.  Users (all
of account ``test``):

* ``test:tester``, an admin of the account (the user backups use);
* ``test:reader``, not an admin: every request on the account is
  refused with 403 (an account the credentials do not open).

Two storage policies exist: ``gold`` (index 0, the default) and
``silver`` (index 1), both on the one device, so a test can prove that
a container is created with the policy asked for.

API:

* :func:`shared_server` starts one server per test process, lazily, and
  stops it at exit (stestr runs tests in several processes).
* :class:`SwiftServer` can be started on its own (a benchmark, a test
  that kills it): ``start()``, ``kill()``, ``restart()``, ``cleanup()``;
  attributes ``auth_url``, ``storage_url``, ``user``, ``key``,
  ``account``, and :meth:`SwiftServer.connection` for a swiftclient
  connection that tests assert with.
* :class:`SwiftServerFixture` gives a test the shared server (or one of
  its own with ``dedicated=True``) and ``configure(conf_fixture)``
  points the ``backup_swift_*`` options at it (single_user, auth 1).
* Without the ``swift`` package the tests are skipped, except under CI
  (``CI=true``), where that is a failure.
"""

import atexit
import base64
import contextlib
import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request

import fixtures

from cinder_chunked_ext.tests import local_servers

HOST = '127.0.0.1'
START_TIMEOUT = 60.0
ACCOUNT = 'test'
USER = 'tester'
READER = 'reader'
KINDS = ('account', 'container', 'object', 'proxy')
POLICIES = ('gold', 'silver')
PART_POWER = 6
# No cache filter: tempauth's Fernet tokens need no memcached.
PROXY_PIPELINE = ('catch_errors', 'gatekeeper', 'proxy-logging', 'tempauth',
                  'proxy-logging', 'proxy-server')

_RING_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from swift.common.ring import RingBuilder
    swift_dir, ports, policies = json.loads(sys.argv[1])
    rings = [('account', ports['account']), ('container', ports['container'])]
    rings += [('object' if i == 0 else 'object-%d' % i, ports['object'])
              for i in range(policies)]
    for name, port in rings:
        builder = RingBuilder(PART_POWER, 1, 1)
        builder.add_dev({'id': 0, 'region': 1, 'zone': 1,
                         'ip': '127.0.0.1', 'port': port, 'device': 'd1',
                         'weight': 1.0, 'meta': ''})
        builder.rebalance()
        builder.get_ring().save(os.path.join(swift_dir, name + '.ring.gz'))
''').replace('PART_POWER', str(PART_POWER))


# Swift reads its storage policies from /etc/swift/swift.conf when it is
# imported and does not read them again when a server's swift_dir points
# elsewhere: load them from our swift_dir before the server's main().
_LAUNCHER = textwrap.dedent('''
    import runpy, sys
    from swift.common import storage_policy, utils
    utils.set_swift_dir(sys.argv[1])
    storage_policy.reload_storage_policies()
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
''')


# The temporary directory of the process, taken at import: a test
# framework may point tempfile at a per-test directory (Cinder's tests
# do) and remove it after the test, under a server shared by the tests.
BASE_TMPDIR = tempfile.gettempdir()


class ServerUnavailable(Exception):
    """No Swift server can be had for the tests."""


def swift_installed():
    """True when the ``swift`` package can be imported by the servers."""
    import importlib.util
    try:
        return importlib.util.find_spec('swift.proxy.server') is not None
    except ImportError:
        return False


def _port_is_free(port):
    """True when nobody listens on ``port``.

    Connections that linger after a server was killed do not count:
    Swift binds with SO_REUSEADDR too.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_ports(count):
    """``count`` distinct ports that were free on 127.0.0.1 just now."""
    ports = local_servers.free_ports(count)
    # Bound and released: prove each can be bound again (Swift's own
    # listener would share a port someone else holds without a word).
    for port in ports:
        if not _port_is_free(port):
            raise ServerUnavailable('port %d was taken at once' % port)
    return ports


class SwiftServer(object):
    """Proxy, account, container and object servers in one temp dir."""

    can_stop = True

    def __init__(self, key=None, reader_key=None, python=None,
                 base_dir=None):
        self.python = python or sys.executable
        self.base_dir = base_dir or BASE_TMPDIR
        self.account = ACCOUNT
        self.user = '%s:%s' % (ACCOUNT, USER)
        self.key = key or 'sw-' + secrets.token_urlsafe(18)
        self.reader = '%s:%s' % (ACCOUNT, READER)
        self.reader_key = reader_key or 'rd-' + secrets.token_urlsafe(18)
        self.workdir = None
        self.ports = None
        self.processes = {}
        self._logs = {}

    # -- addresses -----------------------------------------------------------

    @property
    def endpoint(self):
        """``http://127.0.0.1:<proxy port>``."""
        return 'http://%s:%d' % (HOST, self.ports['proxy'])

    @property
    def auth_url(self):
        """The tempauth (v1) URL: ``<endpoint>/auth/v1.0``."""
        return self.endpoint + '/auth/v1.0'

    @property
    def storage_url(self):
        """The account's storage URL: ``<endpoint>/v1/AUTH_test``."""
        return '%s/v1/AUTH_%s' % (self.endpoint, self.account)

    @property
    def swift_url_base(self):
        """``<endpoint>/v1/AUTH_``: per_user's ``backup_swift_url``.

        Upstream appends the project id to it, so with project id
        ``test`` it is the storage URL of the account.
        """
        return '%s/v1/AUTH_' % self.endpoint

    def describe(self):
        return 'Swift at %s (%s)' % (self.endpoint, self.workdir)

    def _path(self, *names):
        return os.path.join(self.workdir, *names)

    # -- set-up --------------------------------------------------------------

    def _prepare(self):
        self.workdir = tempfile.mkdtemp(prefix='cinder-chunked-swift-',
                                        dir=self.base_dir)
        for kind in ('account', 'container', 'object'):
            os.makedirs(self._path('devices', kind, 'd1'))
        fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        with open(self._path('swift.conf'), 'w') as f:
            f.write('[swift-hash]\n'
                    'swift_hash_path_suffix = %s\n'
                    'swift_hash_path_prefix = %s\n\n'
                    % (secrets.token_hex(8), secrets.token_hex(8)))
            for index, name in enumerate(POLICIES):
                f.write('[storage-policy:%d]\nname = %s\n%s\n'
                        % (index, name, 'default = yes\n' if index == 0
                           else ''))
        self._fernet_key = fernet_key

    def _common(self, kind):
        return textwrap.dedent('''\
            [DEFAULT]
            bind_ip = {host}
            bind_port = {port}
            workers = 0
            user = {user}
            swift_dir = {swift_dir}
            devices = {devices}
            mount_check = false
            log_level = INFO
            log_name = {kind}-server
            ''').format(host=HOST, port=self.ports[kind],
                        user=getpass.getuser(), swift_dir=self.workdir,
                        devices=self._path('devices', kind), kind=kind)

    def _write_configs(self):
        backends = {'account': 'account', 'container': 'container',
                    'object': 'object'}
        for kind, egg in backends.items():
            with open(self._path('%s-server.conf' % kind), 'w') as f:
                f.write(self._common(kind))
                f.write('\n[pipeline:main]\npipeline = %s-server\n\n'
                        '[app:%s-server]\nuse = egg:swift#%s\n'
                        % (kind, kind, egg))
                if kind == 'object':
                    f.write('\n[object-updater]\n[object-auditor]\n')
        with open(self._path('proxy-server.conf'), 'w') as f:
            f.write(self._common('proxy'))
            f.write(textwrap.dedent('''
                [pipeline:main]
                pipeline = {pipeline}

                [app:proxy-server]
                use = egg:swift#proxy
                account_autocreate = true

                [filter:tempauth]
                use = egg:swift#tempauth
                user_{account}_{user} = {key} .admin
                user_{account}_{reader} = {reader_key}
                fernet_key_k1 = {fernet}
                active_fernet_key_id = k1

                [filter:catch_errors]
                use = egg:swift#catch_errors

                [filter:gatekeeper]
                use = egg:swift#gatekeeper

                [filter:proxy-logging]
                use = egg:swift#proxy_logging
                ''').format(account=ACCOUNT, user=USER, key=self.key,
                            reader=READER, reader_key=self.reader_key,
                            fernet=self._fernet_key,
                            pipeline=' '.join(PROXY_PIPELINE)))

    def _build_rings(self, timeout):
        args = json.dumps([self.workdir, self.ports, len(POLICIES)])
        try:
            subprocess.run([self.python, '-c', _RING_SCRIPT, args],
                           check=True, capture_output=True, timeout=timeout,
                           env=self._environment())
        except subprocess.CalledProcessError as e:
            raise ServerUnavailable(
                'building the Swift rings failed: %s'
                % e.stderr.decode('utf-8', 'replace')[-2000:])
        except subprocess.TimeoutExpired:
            raise ServerUnavailable('building the Swift rings timed out')

    def _environment(self):
        env = dict(os.environ)
        env['HOME'] = self.workdir
        env['TMPDIR'] = self.workdir
        for name in ('OS_AUTH_URL', 'ST_AUTH', 'ST_USER', 'ST_KEY'):
            env.pop(name, None)
        return env

    # -- life cycle ----------------------------------------------------------

    def start(self, timeout=START_TIMEOUT):
        """Start the four servers on new free ports; wait until usable."""
        if not swift_installed():
            raise ServerUnavailable(
                'the swift package is not installed for %s '
                '(pip install swift)' % self.python)
        if self.workdir is None:
            self._prepare()
        for attempt in range(3):
            self.ports = dict(zip(KINDS, free_ports(len(KINDS))))
            self._write_configs()
            self._build_rings(timeout)
            try:
                self._launch(timeout)
                return self
            except ServerUnavailable:
                self.kill()
                if attempt == 2:
                    raise
        return self

    def restart(self, timeout=START_TIMEOUT):
        """Start again on the same ports and data after :meth:`kill`."""
        self._launch(timeout)
        return self

    def _launch(self, timeout):
        for kind in KINDS:
            if not _port_is_free(self.ports[kind]):
                raise ServerUnavailable('port %d of the %s server is taken'
                                        % (self.ports[kind], kind))
        for kind in KINDS:
            module = ('swift.obj.server' if kind == 'object'
                      else 'swift.%s.server' % kind)
            log = open(self._path('%s.log' % kind), 'ab')
            self._logs[kind] = log
            self.processes[kind] = subprocess.Popen(
                [self.python, '-c', _LAUNCHER, self.workdir, module,
                 self._path('%s-server.conf' % kind), '-v'],
                cwd=self.workdir, env=self._environment(),
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=local_servers.die_with_parent)
        self._wait_until_usable(timeout)

    def _wait_until_usable(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for kind, process in self.processes.items():
                if process.poll() is not None:
                    raise ServerUnavailable(
                        'the Swift %s server exited with status %s: %s'
                        % (kind, process.returncode, self.log_tail(kind)))
            try:
                self._probe()
                return
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    'Swift at %s was not usable within %.0f s (%s): %s'
                    % (self.endpoint, timeout, last,
                       self.log_tail('proxy')))
            time.sleep(0.1)

    def _probe(self):
        """Authenticate, then write, read and delete an object."""
        token, url = self.authenticate()
        container = url + '/.probe'
        for method, target, data in (('PUT', container, b''),
                                     ('PUT', container + '/o', b'ok'),
                                     ('GET', container + '/o', None),
                                     ('DELETE', container + '/o', None)):
            request = urllib.request.Request(
                target, data=data, method=method,
                headers={'X-Auth-Token': token})
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read()
            if method == 'GET' and body != b'ok':
                raise ValueError('probe object read back as %r' % body)

    def authenticate(self, user=None, key=None):
        """``(token, storage URL)`` from tempauth."""
        request = urllib.request.Request(
            self.auth_url, headers={'X-Auth-User': user or self.user,
                                    'X-Auth-Key': key or self.key})
        with urllib.request.urlopen(request, timeout=5) as response:
            return (response.headers['X-Auth-Token'],
                    response.headers['X-Storage-Url'])

    def connection(self, retries=0, **kwargs):
        """A swiftclient connection for test assertions."""
        from swiftclient import client as swiftclient
        return swiftclient.Connection(
            authurl=self.auth_url, user=self.user, key=self.key,
            auth_version='1', retries=retries, **kwargs)

    def log_tail(self, kind='proxy', size=2000):
        try:
            with open(self._path('%s.log' % kind), 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode('utf-8', 'replace')
        except (OSError, TypeError):
            return '(no log)'

    def kill(self):
        """Stop every server at once, as a crash would."""
        processes, self.processes = self.processes, {}
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        logs, self._logs = self._logs, {}
        for log in logs.values():
            log.close()

    def cleanup(self):
        self.kill()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
        return False


_shared_lock = threading.Lock()
_shared = {}


def shared_server():
    """The process's server, started on first use, stopped at exit."""
    with _shared_lock:
        if 'server' in _shared:
            return _shared['server']
        if 'error' in _shared:
            raise _shared['error']
        server = SwiftServer()
        atexit.register(server.cleanup)
        try:
            server.start()
        except ServerUnavailable as e:
            server.cleanup()
            _shared['error'] = e
            raise
        _shared['server'] = server
        return server


def unavailable(reason):
    """Skip, or fail under CI, when no server can be had."""
    local_servers.unavailable('Swift', reason)


def check_available():
    """Skip (or fail under CI) now when no server can be started."""
    if not swift_installed():
        unavailable('the swift package is not installed for %s '
                    '(pip install swift)' % sys.executable)
    try:
        import swiftclient  # noqa: F401
    except ImportError:
        unavailable('python-swiftclient is not installed')


class SwiftServerFixture(fixtures.Fixture):
    """A real Swift server for one test.

    Attributes: ``server``, ``auth_url``, ``storage_url``, ``user``,
    ``key``.  The shared server's account is shared by the tests of the
    process, so tests use containers or prefixes of their own.

    :param dedicated: start a server of this test's own, which the test
        may :meth:`~SwiftServer.kill` and restart.
    """

    def __init__(self, dedicated=False):
        super().__init__()
        self.dedicated = dedicated
        check_available()

    def _setUp(self):
        if self.dedicated:
            server = SwiftServer()
            self.addCleanup(server.cleanup)
            server.start()
        else:
            server = shared_server()
        self.server = server
        self.auth_url = server.auth_url
        self.storage_url = server.storage_url
        self.user = server.user
        self.key = server.key

    def configure(self, conf_fixture, **overrides):
        """Point the ``backup_swift_*`` options at this server."""
        options = dict(backup_swift_auth='single_user',
                       backup_swift_auth_version='1',
                       backup_swift_auth_url=self.auth_url,
                       backup_swift_url=self.server.swift_url_base,
                       backup_swift_user=self.user,
                       backup_swift_key=self.key,
                       backup_swift_retry_attempts=2,
                       backup_swift_retry_backoff=0)
        options.update(overrides)
        conf_fixture.config(**options)
