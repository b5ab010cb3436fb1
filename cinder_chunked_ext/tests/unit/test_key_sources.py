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

"""Key sources: password-wrapped keys, and key payloads kept out of logs."""

import base64
import logging
import os
from unittest import mock

import fixtures
import testtools

from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext.encryption import keys
from cinder_chunked_ext import exception


class PasswordKeysTestCase(testtools.TestCase):

    def test_new_key_opens_with_same_password_only(self):
        data_key, ref = keys.PasswordKeys(b'secret').new_key('b')
        self.assertEqual(data_key,
                         keys.PasswordKeys(b'secret').get_key(ref, 'b'))
        error = self.assertRaises(exception.BackupKeyUnavailable,
                                  keys.PasswordKeys(b'Secret').get_key,
                                  ref, 'b')
        self.assertIn('the password is wrong', str(error))

    def test_reference_holds_no_key_nor_password(self):
        data_key, ref = keys.PasswordKeys(b'hunter2-password').new_key('b')
        text = repr(ref).encode()
        for form in (data_key, data_key.hex().encode(),
                     base64.b64encode(data_key), b'hunter2-password'):
            self.assertNotIn(form, text)
        self.assertEqual(('scrypt', keys.SCRYPT_N, keys.SCRYPT_R,
                          keys.SCRYPT_P),
                         (ref['kdf'], ref['n'], ref['r'], ref['p']))

    def test_wrap_after_opening_reuses_derived_key(self):
        _key, parent_ref = keys.PasswordKeys(b'secret').new_key('parent')
        source = keys.PasswordKeys(b'secret')
        with mock.patch.object(keys, 'derive_password_key',
                               wraps=keys.derive_password_key) as derive:
            source.get_key(parent_ref, 'parent')
            data_key = source.new_unwrapped_key()
            ref = source.wrap(data_key)
        self.assertEqual(1, derive.call_count)
        self.assertEqual(parent_ref['salt'], ref['salt'])
        self.assertEqual(data_key,
                         keys.PasswordKeys(b'secret').get_key(ref, 'b'))

    def test_scrypt_parameters_out_of_range_refused(self):
        _key, ref = keys.PasswordKeys(b'secret').new_key('b')
        for field, value in (('n', 2 ** 30), ('n', 1000), ('r', 0),
                             ('p', 10 ** 6)):
            bad = dict(ref, **{field: value})
            self.assertRaises(exception.BackupKeyUnavailable,
                              keys.PasswordKeys(b'secret').get_key, bad, 'b')

    def test_empty_password_refused(self):
        self.assertRaises(exception.EncryptionError, keys.PasswordKeys, b'')

    def test_reseal_under_new_password_same_document(self):
        old, new = keys.PasswordKeys(b'old'), keys.PasswordKeys(b'new')
        data_key, ref = old.new_key('b')
        raw = b''.join(documents.seal(data_key, 'p_sha256file', 'b', ref,
                                      [b'{"doc": 1}'],
                                      documents.SHA256FILE_FIELDS))
        resealed = b''.join(documents.reseal(raw, 'p_sha256file', data_key,
                                             new.wrap(data_key)))
        new_ref = documents.key_reference(resealed)
        self.assertEqual(b'{"doc": 1}', documents.open_sealed(
            resealed, 'p_sha256file', 'b',
            lambda r: new.get_key(r, 'b')))
        self.assertRaises(exception.BackupKeyUnavailable, old.get_key,
                          new_ref, 'b')
        self.assertIn(b'"sha256s": []', resealed)


class PayloadRedactorTestCase(testtools.TestCase):

    def test_secret_payload_masked_in_client_debug_log(self):
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        payload = base64.b64encode(os.urandom(32)).decode()
        keys.protect_key_manager_logs()
        logging.getLogger('keystoneauth.session').debug(
            'REQ: curl -g -i -X POST http://kms/v1/secrets -d \'{"name": '
            '"n", "payload": "%s", "payload_content_type": '
            '"application/octet-stream"}\'', payload)
        self.assertNotIn(payload, logger.output)
        self.assertIn('"payload": "***"', logger.output)
        self.assertIn('payload_content_type', logger.output)
