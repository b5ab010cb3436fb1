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

"""The Swift driver against a real Swift server on 127.0.0.1.

Every authentication mode reaches the real server: tempauth (v1), a
user's token (per_user, by backup_swift_url and by the catalog), and
Keystone v2/v3, where only Keystone itself is stood in for (no Keystone
can run here): its answer, built with keystoneauth1's token fixtures,
carries a real tempauth token and a catalog that points at the server.
Faults the server cannot produce on demand (5xx answers, connections
reset in the middle of a body) are injected by the fault proxy in front
of it, so swiftclient's retries and resumed downloads run for real.
"""

import logging
import os
import socket
import threading
import time
from unittest import mock
import uuid

import fixtures
from keystoneauth1 import access
from keystoneauth1 import fixture as ks_fixture
from keystoneauth1.identity import v2 as ks_v2
from keystoneauth1.identity import v3 as ks_v3
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext.drivers import swift as swift_driver
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import swift as swift_store
from cinder_chunked_ext.store import swift_errors
from cinder_chunked_ext.store import swift_objects
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests import fault_proxy
from cinder_chunked_ext.tests.functional import spool_checks
from cinder_chunked_ext.tests import swift_server

CONF = cfg.CONF
BLOCK = 32768


def random_blocks(count, extra=0):
    return os.urandom(count * BLOCK + extra)


def replace_block(data, index, new=None):
    new = os.urandom(BLOCK) if new is None else new
    return data[:index * BLOCK] + new + data[(index + 1) * BLOCK:]


class UserContext(fakes.FakeContext):
    """A request's context: a user, a project, a token, a catalog."""

    def __init__(self, env, token=None, project_id=swift_server.ACCOUNT,
                 service_catalog=None):
        super().__init__(env)
        self.user_id = 'user-%s' % uuid.uuid4().hex[:8]
        self.project_id = project_id
        self.auth_token = token
        self.service_catalog = service_catalog or []


class SwiftDriverTestCase(testtools.TestCase):
    """A driver configured for the test server, and helpers."""

    dedicated_server = False

    def setUp(self):
        super().setUp()
        self.swift = self.useFixture(
            swift_server.SwiftServerFixture(dedicated=self.dedicated_server))
        self.server = self.swift.server
        self.conf = self.useFixture(config_fixture.Config(CONF))
        # A container of this test's own: the server is shared.
        self.container = 'test-%s' % uuid.uuid4().hex[:12]
        self.swift.configure(self.conf,
                             backup_swift_container=self.container,
                             backup_swift_object_size=4 * BLOCK,
                             backup_swift_block_size=BLOCK,
                             backup_swift_enable_progress_timer=False)
        self.conf.config(backup_compression_algorithm='zlib')
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.conn = self.server.connection()

    def driver(self, context=None):
        return swift_driver.SwiftBackupDriver(context or self.context)

    def backup(self, data, parent=None, driver=None, **fields):
        path = os.path.join(self.tmp, 'volume-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.write(data)
        if parent is not None:
            fields.update(parent_id=parent.id, volume_id=parent.volume_id)
        backup = self.env.new_backup(**fields)
        with open(path, 'rb') as f:
            (driver or self.driver()).backup(backup, f)
        backup.status = 'available'
        return backup

    def restore(self, backup, size, driver=None):
        path = os.path.join(self.tmp, 'restored-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.truncate(size)
        backup.status = 'restoring'
        try:
            with open(path, 'r+b') as f:
                (driver or self.driver()).restore(backup, backup.volume_id,
                                                  f, True)
        finally:
            backup.status = 'available'
        with open(path, 'rb') as f:
            return f.read()

    def names(self, prefix, container=None):
        try:
            listing = self.conn.get_container(container or self.container,
                                              prefix=prefix,
                                              full_listing=True)[1]
        except swift_errors.swift_exc.ClientException as e:
            if e.http_status == 404:
                return []
            raise
        return [item['name'] for item in listing]

    def data_names(self, backup):
        return [n for n in self.names(backup.service_metadata,
                                      backup.container)
                if not n.endswith(('_metadata', '_sha256file'))]


class BackupRestoreTestCase(spool_checks.ReadOnceMixin, SwiftDriverTestCase):

    store_class = swift_store.SwiftStore

    def test_full_and_incremental_chain_restores_every_point(self):
        data1 = (random_blocks(6) + bytes(4 * BLOCK) + random_blocks(3)
                 + b'tail')
        full = self.backup(data1)
        data2 = replace_block(replace_block(data1, 1), 8)
        data2 = replace_block(data2, 12, bytes(BLOCK))
        incr1 = self.backup(data2, parent=full)
        data3 = replace_block(data2, 5)
        incr2 = self.backup(data3, parent=incr1)

        self.assertEqual(self.container, full.container)
        volume, stamp, name = full.service_metadata.split('/')
        self.assertEqual('volume_%s' % full.volume_id, volume)
        self.assertEqual(14, len(stamp))
        self.assertEqual('az_nova_backup_%s' % full.id, name)
        self.assertEqual(4, len(self.data_names(full)))
        self.assertEqual(3, len(self.data_names(incr1)))
        self.assertEqual(1, len(self.data_names(incr2)))
        self.assertEqual(data3, self.restore(incr2, len(data3)))
        self.assertEqual(data2, self.restore(incr1, len(data2)))
        self.assertEqual(data1, self.restore(full, len(data1)))

    def test_delete_backup_leaves_nothing_under_prefix(self):
        full = self.backup(random_blocks(9))
        self.assertEqual(5, len(self.names(full.service_metadata)))
        driver = self.driver()
        driver.delete_backup(full)
        self.assertEqual([], self.names(full.service_metadata))
        driver.delete_backup(full)   # objects already gone: no error

    def test_backup_new_container_created_with_storage_policy(self):
        self.conf.config(backup_swift_create_storage_policy='silver')
        backup = self.backup(random_blocks(5))
        headers = self.conn.head_container(self.container)
        self.assertEqual('silver', headers['x-storage-policy'])
        self.assertEqual(2, len(self.data_names(backup)))

    def test_backup_unknown_storage_policy_fails_permanently(self):
        self.conf.config(backup_swift_create_storage_policy='no-such')
        e = self.assertRaises(exception.PermanentStoreError, self.backup,
                              random_blocks(2))
        self.assertIn('no-such', str(e))
        self.assertEqual([], self.names(''))

    def test_backup_missing_container_without_create_fails_clearly(self):
        self.conf.config(backup_create_containers=False)
        e = self.assertRaises(exception.ObjectNotFound, self.backup,
                              random_blocks(2))
        self.assertIn(self.container, str(e))
        self.assertIn('backup_create_containers', str(e))

    def test_backup_named_container_used_as_given(self):
        other = 'named-%s' % uuid.uuid4().hex[:8]
        data = random_blocks(3)
        backup = self.backup(data, container=other)
        self.assertEqual(other, backup.container)
        self.assertEqual(1, len(self.data_names(backup)))
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_corrupted_upload_refused_by_etag_backup_incomplete(self):
        # The real server checks the ETag; only the corruption is staged:
        # the MD5 sent no longer matches the data.
        real_write = swift_objects.SwiftWriter._write

        def write(writer, data):
            real_write(writer, data)
            writer._md5.update(b'altered in transit')
        backup = self.env.new_backup()
        with mock.patch.object(swift_objects.SwiftWriter, '_write',
                               autospec=True, side_effect=write):
            e = self.assertRaises(exception.PermanentStoreError,
                                  self.driver().backup, backup,
                                  _BytesFile(random_blocks(5)))
        self.assertIn('ETag', str(e))
        self.assertIn('422', str(e))
        self.assertEqual([], self.names(backup.service_metadata or 'none'))

    def test_many_objects_paginated_listing_restores(self):
        self.conf.config(swift_listing_page_size=3, group='chunked_backup')
        data = random_blocks(40)
        backup = self.backup(data)
        self.assertEqual(10, len(self.data_names(backup)))
        gets = []
        real = swift_errors.swiftclient.Connection.get_container

        def get_container(conn, *args, **kwargs):
            gets.append(kwargs.get('marker'))
            return real(conn, *args, **kwargs)
        with mock.patch.object(swift_errors.swiftclient.Connection,
                               'get_container', autospec=True,
                               side_effect=get_container):
            self.assertEqual(data, self.restore(backup, len(data)))
        # 12 names in pages of 3, then an empty page.
        self.assertEqual(5, len(gets))
        self.assertEqual('', gets[0])
        self.assertEqual(4, len(set(gets[1:])))

    def test_parallel_uploads_within_memory_bound(self):
        self.conf.config(swift_max_concurrent_uploads=8,
                         max_bytes_in_flight=16 * 1024 ** 2,
                         group='chunked_backup')
        self.conf.config(backup_swift_object_size=4 * 1024 ** 2)
        self.assertEqual(4, self.driver().max_concurrent_writes)
        self.conf.config(backup_swift_object_size=4 * BLOCK)
        self.assertEqual(8, self.driver().max_concurrent_writes)
        data = random_blocks(64)
        backup = self.backup(data)
        self.assertEqual(16, len(self.data_names(backup)))
        self.assertEqual(data, self.restore(backup, len(data)))


class _BytesFile(object):
    """A volume file in memory with fileno-less reads."""

    def __init__(self, data):
        import io
        self._f = io.BytesIO(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


class AuthModesTestCase(SwiftDriverTestCase):

    def _round_trip(self, context):
        data = random_blocks(6, extra=100)
        driver = self.driver(context)
        backup = self.backup(data, driver=driver)
        self.assertEqual(2, len(self.data_names(backup)))
        self.assertEqual(data, self.restore(backup, len(data),
                                            driver=self.driver(context)))
        return driver

    def test_per_user_backup_swift_url_plus_project_round_trip(self):
        token, _url = self.server.authenticate()
        self.conf.config(backup_swift_auth='per_user',
                         backup_swift_user=None, backup_swift_key=None,
                         backup_swift_auth_url=None)
        driver = self._round_trip(UserContext(self.env, token=token))
        self.assertEqual(self.server.storage_url,
                         driver.store.settings.storage_url)

    def test_per_user_catalog_endpoint_of_region_round_trip(self):
        token, _url = self.server.authenticate()
        catalog = [
            {'type': 'identity', 'endpoints': [
                {'publicURL': 'http://127.0.0.1:9/v3', 'region': 'R2'}]},
            {'type': 'object-store', 'endpoints': [
                {'publicURL': 'http://127.0.0.1:9/v1/AUTH_test',
                 'region': 'R1'},
                {'publicURL': self.server.storage_url, 'region': 'R2'}]}]
        self.conf.config(backup_swift_auth='per_user', backup_swift_url=None,
                         backup_swift_region_name='R2')
        driver = self._round_trip(UserContext(self.env, token=token,
                                              service_catalog=catalog))
        self.assertEqual(self.server.storage_url,
                         driver.store.settings.storage_url)

    def test_per_user_invalid_token_permanent_error(self):
        self.conf.config(backup_swift_auth='per_user')
        # A token of tempauth's form that its Fernet keys do not open.
        context = UserContext(self.env, token='AUTH_ftk' + 'A' * 100)
        e = self.assertRaises(exception.PermanentStoreError, self.backup,
                              random_blocks(2), driver=self.driver(context))
        self.assertIn('401', str(e))

    def test_per_user_no_endpoint_configuration_error(self):
        self.conf.config(backup_swift_auth='per_user', backup_swift_url=None)
        e = self.assertRaises(exception.StoreConfigurationError, self.driver,
                              UserContext(self.env, token='AUTH_tk-unused'))
        self.assertIn('backup_swift_url', str(e))

    def _keystone_reply(self, version):
        """What Keystone would answer: a real Swift token and catalog."""
        token, _url = self.server.authenticate()
        body = (ks_fixture.V3Token() if version == 3
                else ks_fixture.V2Token())
        if version == 3:
            body.set_project_scope()
        service = body.add_service('object-store', name='swift')
        if version == 3:
            service.add_standard_endpoints(
                public=self.server.storage_url,
                internal='http://127.0.0.1:9/internal', region='RegionOne')
        else:
            service.add_endpoint(
                public=self.server.storage_url,
                internal='http://127.0.0.1:9/internal', region='RegionOne')
        return access.create(body=body, auth_token=token)

    def _keystone_round_trip(self, version, plugin_class, **options):
        self.conf.config(backup_swift_auth_version=str(version),
                         backup_swift_auth_url='http://keystone.invalid:5000',
                         backup_swift_user='backup',
                         backup_swift_key='keystone-password', **options)
        seen = []
        reply = self._keystone_reply(version)

        def get_auth_ref(plugin, session, **kwargs):
            seen.append(plugin)
            return reply
        with mock.patch.object(plugin_class, 'get_auth_ref', autospec=True,
                               side_effect=get_auth_ref):
            self._round_trip(self.context)
        self.assertTrue(seen)
        return seen[0]

    def test_single_user_keystone_v3_session_catalog_round_trip(self):
        plugin = self._keystone_round_trip(
            3, ks_v3.Password, backup_swift_project='backups',
            backup_swift_user_domain='Users',
            backup_swift_project_domain='Projects')
        self.assertEqual('http://keystone.invalid:5000/v3', plugin.auth_url)
        method = plugin.auth_methods[0]
        self.assertEqual('backup', method.username)
        self.assertEqual('keystone-password', method.password)
        self.assertEqual('Users', method.user_domain_name)
        self.assertEqual('backups', plugin.project_name)
        self.assertEqual('Projects', plugin.project_domain_name)

    def test_single_user_keystone_v2_session_catalog_round_trip(self):
        plugin = self._keystone_round_trip(
            2, ks_v2.Password, backup_swift_tenant='backups')
        self.assertEqual('http://keystone.invalid:5000/v2.0',
                         plugin.auth_url)
        self.assertEqual('backup', plugin.username)
        self.assertEqual('keystone-password', plugin.password)
        self.assertEqual('backups', plugin.tenant_name)

    def test_single_user_wrong_key_check_is_configuration_error(self):
        self.conf.config(backup_swift_key='not-the-key')
        e = self.assertRaises(exception.StoreConfigurationError,
                              self.driver().check_for_setup_error)
        self.assertIn('backup_swift_key', str(e))
        self.assertNotIn('not-the-key', str(e))

    def test_single_user_account_not_opened_to_user_permanent(self):
        self.conf.config(backup_swift_user=self.server.reader,
                         backup_swift_key=self.server.reader_key)
        e = self.assertRaises(exception.PermanentStoreError, self.backup,
                              random_blocks(2))
        self.assertIn('403', str(e))

    def test_check_for_setup_error_valid_configuration_passes(self):
        driver = self.driver()
        self.assertIsNone(driver.check_for_setup_error())
        self.assertEqual(1, driver.store.pool.created)

    def test_check_for_setup_error_service_context_asks_info(self):
        self.conf.config(backup_swift_auth='per_user',
                         backup_swift_url=self.server.swift_url_base)
        service_context = mock.Mock(user_id=None, project_id=None,
                                    auth_token=None, service_catalog=[],
                                    chunked_environment=None)
        driver = swift_driver.SwiftBackupDriver.__new__(
            swift_driver.SwiftBackupDriver)
        store = swift_store.SwiftStore(
            swift_driver.settings_from_conf(service_context))
        driver.store = store
        self.assertIsNone(driver.check_for_setup_error())
        self.conf.config(backup_swift_url='http://127.0.0.1:9/v1/AUTH_')
        self.conf.config(backup_swift_retry_attempts=0)
        e = self.assertRaises(exception.StoreConfigurationError,
                              driver.check_for_setup_error)
        self.assertIn('backup_swift_url', str(e))


class FaultsTestCase(SwiftDriverTestCase):
    """Faults injected by a proxy between the driver and the server."""

    def setUp(self):
        super().setUp()
        self.proxy = self.useFixture(fault_proxy.FaultProxyFixture(
            self.server.endpoint, timeout=10, lifetime=120)).proxy
        # tempauth answers a storage URL on the address it was asked at.
        self.conf.config(backup_swift_auth_url=self.proxy.endpoint +
                         '/auth/v1.0')

    def test_5xx_on_uploads_retried_backup_restores(self):
        rule = self.proxy.add_rule(fault_proxy.respond(503), method='PUT',
                                   path=r'-0000[12]$', times=2)
        data = random_blocks(8)
        backup = self.backup(data)
        self.assertEqual(2, rule.applied)
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_5xx_persisting_transient_error_no_complete_backup(self):
        self.conf.config(backup_swift_retry_attempts=1)
        self.proxy.add_rule(fault_proxy.respond(500), method='PUT',
                            path=r'-00002$')
        backup = self.env.new_backup()
        e = self.assertRaises(exception.TransientStoreError,
                              self.driver().backup, backup,
                              _BytesFile(random_blocks(8)))
        self.assertIn('500', str(e))
        self.assertFalse([n for n in self.names(backup.service_metadata)
                          if n.endswith(('_metadata', '_sha256file'))])

    def test_upload_reset_midway_retried_backup_restores(self):
        rule = self.proxy.add_rule(fault_proxy.reset_request(5000),
                                   method='PUT', path=r'-00001$', times=1)
        data = random_blocks(8)
        backup = self.backup(data)
        self.assertEqual(1, rule.applied)
        self.assertEqual(data, self.restore(backup, len(data)))

    def test_download_reset_midway_resumed_restore_identical(self):
        self.conf.config(backup_compression_algorithm='none')
        data = random_blocks(8)
        backup = self.backup(data)
        rule = self.proxy.add_rule(fault_proxy.reset_response(40000),
                                   method='GET', path=r'-00002$', times=1)
        self.assertEqual(data, self.restore(backup, len(data)))
        self.assertEqual(1, rule.applied)
        ranged = [r for r in self.proxy.seen(method='GET', path=r'-00002$')
                  if 'range' in r.headers]
        self.assertEqual(1, len(ranged))

    def test_service_auth_token_sent_on_every_request_not_logged(self):
        self.conf.config(backup_swift_service_auth=True)
        logger = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, format='%(name)s %(message)s'))
        headers = {'X-Service-Token': 'svc-token-0123456789'}
        with mock.patch.object(swift_driver.cinder_compat,
                               'service_token_headers',
                               return_value=headers) as provider:
            data = random_blocks(5)
            backup = self.backup(data)
            self.assertEqual(data, self.restore(backup, len(data)))
        self.assertTrue(provider.called)
        storage = [r for r in self.proxy.requests
                   if r.path.startswith('/v1/')]
        self.assertTrue(storage)
        self.assertEqual(
            [], [r.path for r in storage
                 if r.headers.get('x-service-token') != headers[
                     'X-Service-Token']])
        self.assertNotIn('svc-token-0123456789', logger.output)

    def test_download_reset_every_time_transient_error(self):
        self.conf.config(backup_compression_algorithm='none',
                         backup_swift_retry_attempts=1)
        data = random_blocks(8)
        backup = self.backup(data)
        self.proxy.add_rule(fault_proxy.reset_response(40000), method='GET',
                            path=r'-00002$')
        self.assertRaises(exception.TransientStoreError, self.restore,
                          backup, len(data))


class ServerFailureTestCase(SwiftDriverTestCase):
    """A server of the test's own, killed in the middle of a backup."""

    dedicated_server = True

    def test_server_killed_mid_backup_fails_cleanly_then_delete_works(self):
        self.conf.config(backup_swift_retry_attempts=1)
        self.conf.config(swift_max_concurrent_uploads=2,
                         group='chunked_backup')
        puts = []
        lock = threading.Lock()
        real_call = swift_store.SwiftStore.call

        def call(store, operation, *args, **kwargs):
            if operation == 'put_object':
                with lock:
                    puts.append(args[1])
                    if len(puts) == 4:
                        self.server.kill()
            return real_call(store, operation, *args, **kwargs)
        backup = self.env.new_backup()
        with mock.patch.object(swift_store.SwiftStore, 'call', autospec=True,
                               side_effect=call):
            e = self.assertRaises(exception.TransientStoreError,
                                  self.driver().backup, backup,
                                  _BytesFile(random_blocks(40)))
        self.assertIn('cannot write object', str(e))
        self.assertIn(self.server.endpoint, str(e))

        self.server.restart()
        names = self.names(backup.service_metadata)
        self.assertTrue(names)
        self.assertLess(len(names), 10)
        self.assertFalse([n for n in names
                          if n.endswith(('_metadata', '_sha256file'))])
        self.driver().delete_backup(backup)
        self.assertEqual([], self.names(backup.service_metadata))


class SilentServerTestCase(testtools.TestCase):
    """A server that accepts connections and never answers.

    No real Swift hangs on demand, and the fault proxy cannot hold an
    answer back: a listening socket that nobody reads stands in.
    """

    def test_server_never_answers_timeout_transient_error(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(('127.0.0.1', 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        conf = self.useFixture(config_fixture.Config(CONF))
        conf.config(backup_swift_auth='per_user',
                    backup_swift_url='http://127.0.0.1:%d/v1/AUTH_' % port,
                    backup_swift_retry_attempts=1,
                    backup_swift_retry_backoff=0)
        conf.config(swift_timeout=0.5, group='chunked_backup')
        env = fakes.FakeEnvironment()
        token = 'AUTH_tk%s' % uuid.uuid4().hex
        driver = swift_driver.SwiftBackupDriver(UserContext(env,
                                                            token=token))
        started = time.monotonic()
        e = self.assertRaises(exception.TransientStoreError,
                              driver.store.put_container, 'volumebackups')
        elapsed = time.monotonic() - started
        self.assertIn('timed out', str(e))
        # Two attempts of half a second each, not an endless wait.
        self.assertGreaterEqual(elapsed, 1.0)
        self.assertLess(elapsed, 10.0)


class SecretsInLogsTestCase(SwiftDriverTestCase):

    def _library_loggers_at_debug(self):
        for name in ('swiftclient', 'keystoneauth', 'urllib3', 'requests',
                     'cinder_chunked_ext'):
            logger = logging.getLogger(name)
            self.addCleanup(setattr, logger, 'level', logger.level)
            self.addCleanup(setattr, logger, 'disabled', logger.disabled)
            logger.setLevel(logging.DEBUG)
            logger.disabled = False

    def test_no_secret_in_any_log_line_over_a_full_cycle(self):
        self._library_loggers_at_debug()
        logger = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG,
            format='%(levelname)s %(name)s %(message)s'))
        driver = self.driver()
        driver.check_for_setup_error()
        data = random_blocks(9)
        full = self.backup(data, driver=driver)
        data2 = replace_block(data, 4)
        incr = self.backup(data2, parent=full, driver=driver)
        self.assertEqual(data2, self.restore(incr, len(data2),
                                             driver=driver))
        single_user_token = driver.store.pool._auth[1]
        # A user's token (per_user) and a refused key, logged at INFO.
        user_token, _url = self.server.authenticate()
        self.conf.config(backup_swift_auth='per_user')
        user_driver = self.driver(UserContext(self.env, token=user_token))
        self.assertEqual(data2, self.restore(incr, len(data2),
                                             driver=user_driver))
        self.conf.config(backup_swift_auth='single_user',
                         backup_swift_key='wrong-key-for-the-log-test')
        error = self.assertRaises(exception.StoreConfigurationError,
                                  self.driver().check_for_setup_error)
        logging.getLogger(__name__).exception('check failed: %s', error)
        driver.delete_backup(incr)
        driver.delete_backup(full)

        output = logger.output
        # The capture saw swiftclient's request logging, and the masks.
        self.assertIn('swiftclient', output)
        self.assertIn('X-Auth-Token: ***', output)
        self.assertIn("'X-Storage-Token': '***'", output)
        secrets = [self.server.key, 'wrong-key-for-the-log-test',
                   single_user_token, user_token]
        for secret in secrets:
            self.assertNotIn(secret, output)
            self.assertNotIn(secret, str(error))
        # Not even swiftclient's 16-character prefix of a token.
        for token in (single_user_token, user_token):
            self.assertNotIn(token[:16] + '...', output)
