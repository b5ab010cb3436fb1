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

"""Error classification, log redaction and account resolution for Swift.

The exceptions classified here are the ones swiftclient, requests and
keystoneauth raise; the behaviour against a real server is proven in
``tests/functional/test_swift_driver.py``.
"""

import logging
import socket

import ddt
from keystoneauth1 import exceptions as ks_exc
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import requests
from swiftclient import client as swiftclient
from swiftclient import exceptions as swift_exc
import testtools

from cinder_chunked_ext.drivers import swift as swift_driver
from cinder_chunked_ext.drivers import swift_auth
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import redaction
from cinder_chunked_ext.store import swift as swift_store
from cinder_chunked_ext.store import swift_errors
from cinder_chunked_ext.store import swift_objects

CONF = cfg.CONF


def http_error(status):
    return swift_exc.ClientException('Object PUT failed', http_status=status,
                                     http_reason='Reason')


@ddt.ddt
class ClassifyTestCase(testtools.TestCase):

    @ddt.data((404, exception.ObjectNotFound),
              (401, exception.PermanentStoreError),
              (403, exception.PermanentStoreError),
              (422, exception.PermanentStoreError),
              (400, exception.PermanentStoreError),
              (409, exception.PermanentStoreError),
              (500, exception.TransientStoreError),
              (503, exception.TransientStoreError),
              (507, exception.TransientStoreError),
              (408, exception.TransientStoreError),
              (429, exception.TransientStoreError),
              (498, exception.TransientStoreError))
    @ddt.unpack
    def test_classify_http_status_expected_kind(self, status, kind):
        error = swift_errors.classify(http_error(status), 'cannot write x')
        self.assertIs(kind, type(error))
        self.assertIn('cannot write x', str(error))
        self.assertIn(str(status), str(error))

    def test_classify_422_names_etag(self):
        error = swift_errors.classify(http_error(422), 'w')
        self.assertIn('ETag', str(error))

    @ddt.data(socket.timeout('timed out'), ConnectionResetError(104, 'rst'),
              requests.exceptions.ConnectionError('refused'),
              requests.exceptions.ReadTimeout('slow'))
    def test_classify_network_error_transient(self, error):
        result = swift_errors.classify(error, 'w', 'http://swift:8080')
        self.assertIsInstance(result, exception.TransientStoreError)
        self.assertIn('http://swift:8080', str(result))

    def test_classify_tls_error_permanent_names_options(self):
        result = swift_errors.classify(
            requests.exceptions.SSLError('bad'), 'w')
        self.assertIsInstance(result, exception.PermanentStoreError)
        self.assertIn('backup_swift_ca_cert_file', str(result))

    def test_classify_status_less_client_exception_store_error(self):
        result = swift_errors.classify(
            swift_exc.ClientException('no ability to reset contents'), 'w')
        self.assertIs(exception.StoreError, type(result))

    @ddt.data((ks_exc.Unauthorized(), exception.PermanentStoreError),
              (ks_exc.EndpointNotFound(), exception.StoreConfigurationError),
              (ks_exc.EmptyCatalog(), exception.StoreConfigurationError),
              (ks_exc.ConnectFailure(), exception.TransientStoreError),
              (ks_exc.ServiceUnavailable(), exception.TransientStoreError),
              (ks_exc.BadRequest(), exception.PermanentStoreError))
    @ddt.unpack
    def test_classify_keystone_error_expected_kind(self, error, kind):
        self.assertIsInstance(swift_errors.classify(error, 'w'), kind)

    def test_classify_unknown_error_none(self):
        self.assertIsNone(swift_errors.classify(ValueError('x'), 'w'))


class RedactorTestCase(testtools.TestCase):

    def test_redact_swiftclient_curl_line_masks_token(self):
        line = ('REQ: curl -i http://s/v1/AUTH_t -X GET -H '
                '"X-Auth-Token: AUTH_tk0123456789abcdef..." -H "ETag: abc"')
        clean = redaction.SecretRedactor().redact(line)
        self.assertIn('X-Auth-Token: ***"', clean)
        self.assertNotIn('AUTH_tk0123', clean)
        self.assertIn('ETag: abc', clean)

    def test_redact_header_dict_masks_every_credential(self):
        text = ("RESP HEADERS: {'X-Auth-Token': 'AUTH_ftkAAA...', "
                "'X-Storage-Token': 'AUTH_ftkAAA...', 'X-Storage-Url': "
                "'http://s/v1/AUTH_test', 'x-service-token': 'svc'}")
        clean = redaction.SecretRedactor().redact(text)
        self.assertEqual(3, clean.count("'***'"))
        self.assertIn('http://s/v1/AUTH_test', clean)

    def test_redact_known_secret_anywhere(self):
        redactor = redaction.SecretRedactor()
        redactor.add('s3cr3t-key', None, '')
        self.assertEqual('key=*** and ***',
                         redactor.redact('key=s3cr3t-key and s3cr3t-key'))

    def test_protect_loggers_children_filtered(self):
        redactor = redaction.SecretRedactor()
        redactor.add('hidden-value-42')
        child = logging.getLogger('swiftclient.test_child_%d' % id(self))
        redaction.protect_loggers(redactor, ('swiftclient',))
        self.assertIn(redactor, child.filters)
        self.assertIn(redactor, logging.getLogger('swiftclient').filters)
        record = logging.LogRecord('swiftclient', logging.DEBUG, __file__, 1,
                                   'token %s', ('hidden-value-42',), None)
        redactor.filter(record)
        self.assertEqual('token ***', record.getMessage())


class FakeContext(object):
    def __init__(self, **attrs):
        self.user_id = 'u'
        self.project_id = 'p1'
        self.auth_token = 'tok'
        self.service_catalog = []
        self.chunked_environment = None
        self.__dict__.update(attrs)


class AccountSettingsTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.conf = self.useFixture(config_fixture.Config(CONF))

    def test_per_user_url_plus_project_id(self):
        self.conf.config(backup_swift_auth='per_user',
                         backup_swift_url='http://s:8080/v1/AUTH_')
        account = swift_auth.account_settings(CONF, FakeContext())
        self.assertEqual('http://s:8080/v1/AUTH_p1', account['storage_url'])
        self.assertEqual('tok', account['token'])

    def test_per_user_catalog_first_endpoint_without_region(self):
        catalog = [{'type': 'object-store', 'endpoints': [
            {'publicURL': 'http://a/v1', 'internalURL': 'http://ai/v1',
             'region': 'R1'},
            {'publicURL': 'http://b/v1', 'region': 'R2'}]}]
        self.conf.config(backup_swift_auth='per_user',
                         swift_catalog_info='object-store:swift:internalURL')
        account = swift_auth.account_settings(
            CONF, FakeContext(service_catalog=catalog))
        self.assertEqual('http://ai/v1', account['storage_url'])

    def test_catalog_info_malformed_configuration_error(self):
        self.conf.config(backup_swift_auth='per_user',
                         swift_catalog_info='object-store')
        e = self.assertRaises(exception.StoreConfigurationError,
                              swift_auth.account_settings, CONF,
                              FakeContext())
        self.assertIn('swift_catalog_info', str(e))

    def test_single_user_without_user_configuration_error(self):
        self.conf.config(backup_swift_auth='single_user',
                         backup_swift_auth_url='http://k/auth/v1.0')
        e = self.assertRaises(exception.StoreConfigurationError,
                              swift_auth.account_settings, CONF,
                              FakeContext())
        self.assertIn('backup_swift_user', str(e))

    def test_single_user_auth_url_from_keystone_catalog(self):
        catalog = [{'type': 'identity', 'endpoints': [
            {'publicURL': 'http://k1/auth/v1.0', 'region': 'R1'},
            {'publicURL': 'http://k2/auth/v1.0', 'region': 'R2'}]}]
        self.conf.config(backup_swift_auth='single_user',
                         backup_swift_user='a:b', backup_swift_key='k',
                         backup_swift_region_name='R2')
        account = swift_auth.account_settings(
            CONF, FakeContext(service_catalog=catalog))
        self.assertEqual('http://k2/auth/v1.0', account['auth_url'])

    def test_single_user_unknown_version_configuration_error(self):
        self.conf.config(backup_swift_auth='single_user',
                         backup_swift_auth_url='http://k/',
                         backup_swift_user='u', backup_swift_key='k',
                         backup_swift_auth_version='4')
        self.assertRaises(exception.StoreConfigurationError,
                          swift_auth.account_settings, CONF, FakeContext())

    def test_versioned_url_kept_or_completed(self):
        self.assertEqual('http://k:5000/v3',
                         swift_auth._versioned('http://k:5000', '/v3'))
        self.assertEqual('http://k:5000/v2.0',
                         swift_auth._versioned('http://k:5000/v2.0', '/v3'))
        self.assertEqual('http://k/identity/v3',
                         swift_auth._versioned('http://k/identity/', '/v3'))

    def test_keystone_tenant_user_form_split(self):
        self.conf.config(backup_swift_auth_version='2',
                         backup_swift_user='proj:alice',
                         backup_swift_key='pw')
        session = swift_auth.keystone_session(CONF, 'http://k:5000')
        self.assertEqual('alice', session.auth.username)
        self.assertEqual('proj', session.auth.tenant_name)

    def test_service_context_defers_problem_to_first_use(self):
        self.conf.config(backup_swift_auth='per_user', backup_swift_url=None)
        context = FakeContext(user_id=None, auth_token=None)
        settings = swift_driver.settings_from_conf(context)
        self.assertIn('backup_swift_url', settings.problem)
        store = swift_store.SwiftStore(settings)
        e = self.assertRaises(exception.StoreConfigurationError,
                              store.list_objects, 'c', 'p')
        self.assertIn('backup_swift_url', str(e))

    def test_concurrent_uploads_bounded_by_memory(self):
        self.conf.config(swift_max_concurrent_uploads=6,
                         max_bytes_in_flight=128 * 1024 ** 2,
                         group='chunked_backup')
        self.conf.config(backup_swift_object_size=52428800)
        self.assertEqual(2, swift_driver.concurrent_uploads(CONF))
        self.conf.config(backup_swift_object_size=1024 ** 3)
        self.assertEqual(1, swift_driver.concurrent_uploads(CONF))


class ConnectionPoolTestCase(testtools.TestCase):

    def test_pool_later_connections_reuse_first_authentication(self):
        settings = swift_store.SwiftSettings(
            auth_url='http://s/auth/v1.0', user='a:b', key='k')
        pool = swift_objects.ConnectionPool(settings)
        first = pool.acquire()
        self.assertIsInstance(first, swiftclient.Connection)
        first.url, first.token = 'http://s/v1/AUTH_a', 'AUTH_tk1'
        second = pool.acquire()
        pool.release(first)
        third = pool.acquire()
        self.assertIs(first, third)
        self.assertIsNone(second.token)   # before first shared its token
        fourth = pool.acquire()
        self.assertEqual(('http://s/v1/AUTH_a', 'AUTH_tk1'),
                         (fourth.url, fourth.token))
        self.assertEqual('k', fourth.key)   # may authenticate again
        self.assertEqual(3, pool.created)
