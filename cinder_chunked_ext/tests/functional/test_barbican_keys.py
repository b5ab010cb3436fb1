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

"""Encrypted backups with their keys in a real Barbican.

Runs when ``CINDER_CHUNKED_BARBICAN_URL`` names a Barbican API without
Keystone (``tools/run_barbican.py`` starts one on 127.0.0.1 from the
``barbican`` package of PyPI, SQLite and the ``simple_crypto`` plugin).
castellan's Barbican backend is loaded from ``[key_manager] backend =
barbican`` as in Cinder; the request context carries an auth plugin
that sends the project in ``X-Project-Id``, as Keystone's middleware
would have set it.
"""

import base64
import io
import logging
import os
import uuid

import fixtures
from keystoneauth1 import plugin
from oslo_config import cfg
from oslo_context import context as oslo_context

from cinder_chunked_ext import exception
from cinder_chunked_ext.tests.unit import test_chunked_backup
from cinder_chunked_ext.tests.unit import test_encrypted_backups as base

URL = os.environ.get('CINDER_CHUNKED_BARBICAN_URL')


class ProjectHeaderAuth(plugin.BaseAuthPlugin):
    """No Keystone: the project in a header, Barbican's URL as endpoint."""

    def __init__(self, project_id):
        super().__init__()
        self.project_id = project_id

    def get_headers(self, session, **kwargs):
        return {'X-Project-Id': self.project_id}

    def get_endpoint(self, session, **kwargs):
        return URL

    def get_project_id(self, session, **kwargs):
        return self.project_id


class BarbicanContext(oslo_context.RequestContext):

    def __init__(self, env, project_id):
        super().__init__(project_id=project_id)
        self.chunked_environment = env

    def get_auth_plugin(self):
        return ProjectHeaderAuth(self.project_id)


class BarbicanKeysTestCase(base.EncryptedDriverTestCase):

    def setUp(self):
        if not URL:
            self.skipTest('CINDER_CHUNKED_BARBICAN_URL is not set')
        super().setUp()
        from castellan import options
        options.set_defaults(cfg.CONF)
        self.conf.config(backend='barbican', group='key_manager')
        self.conf.config(barbican_endpoint=URL, group='barbican')
        self.context = BarbicanContext(self.env, 'project-' + uuid.uuid4().hex)
        self.driver = self.make_driver()

    def key_id(self, backup):
        return self.envelope(backup)['key']['id']

    def secret_exists(self, key_id):
        from castellan.common import exception as castellan_exception
        from castellan import key_manager
        try:
            key_manager.API(cfg.CONF).get(self.context, key_id)
        except castellan_exception.ManagedObjectNotFoundError:
            return False
        return True

    def test_chain_backup_restore_delete_with_barbican(self):
        v1 = base.marked_volume()
        v2 = bytearray(v1)
        v2[base.CHUNK + 10:base.CHUNK + 20] = b'x' * 10
        v2 = bytes(v2)
        full = self.make_backup(v1)
        inc = self.make_backup(v2, parent=full)
        self.assertTrue(uuid.UUID(self.key_id(full)))
        self.assertTrue(self.secret_exists(self.key_id(full)))
        self.assertNotEqual(self.key_id(full), self.key_id(inc))
        self.assertNotIn(base.PATTERN, self.all_stored_bytes())
        self.assertEqual(v2, self.restore_bytes(
            inc, len(v2), driver=self.make_driver())[:len(v2)])
        inc_key = self.key_id(inc)
        self.make_driver().delete_backup(inc)
        self.assertFalse(self.secret_exists(inc_key))
        self.assertTrue(self.secret_exists(self.key_id(full)))

    def test_other_project_cannot_restore(self):
        data = base.marked_volume()
        backup = self.make_backup(data)
        self.context = BarbicanContext(self.env, 'other-' + uuid.uuid4().hex)
        target = test_chunked_backup.VolumeFile(io.BytesIO(bytes(len(data))))
        self.assertRaises(exception.BackupKeyUnavailable, self.restore,
                          backup, target, True, self.make_driver())
        self.assertEqual([], target.writes)

    def test_barbican_unreachable_refused(self):
        data = base.marked_volume()
        backup = self.make_backup(data)
        self.conf.config(barbican_endpoint='http://127.0.0.1:9',
                         group='barbican')
        global URL
        saved, URL = URL, 'http://127.0.0.1:9'
        self.addCleanup(globals().__setitem__, 'URL', saved)
        target = test_chunked_backup.VolumeFile(io.BytesIO(bytes(len(data))))
        self.assertRaises(exception.BackupKeyUnavailable, self.restore,
                          backup, target, True, self.make_driver())
        self.assertEqual([], target.writes)

    def test_no_key_in_debug_logs(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        data = base.marked_volume()
        backup = self.make_backup(data)
        self.restore_bytes(backup, len(data), driver=self.make_driver())
        from castellan import key_manager
        key = key_manager.API(cfg.CONF).get(
            self.context, self.key_id(backup)).get_encoded()
        self.assertIn('POST', logger.output)     # requests were logged
        self.assertNotIn(base64.b64encode(key).decode(), logger.output)
        self.assertNotIn(key.hex(), logger.output)
