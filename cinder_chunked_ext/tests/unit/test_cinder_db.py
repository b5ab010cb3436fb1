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

"""``cinder-chunked-backup cinder adopt|release`` on a stand-in database.

Cinder's database is replaced by a list of records behind the three
functions of :mod:`cinder_chunked_ext.cinder_compat` the commands use;
the live test (``tox -e live``) runs them against a real one.
"""

import io
import json
import os
from unittest import mock

import fixtures
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.encryption import documents
from cinder_chunked_ext.tool import cinder_db
from cinder_chunked_ext.tool import cli
from cinder_chunked_ext.tool import session as session_lib

UP = cinder_db.UPSTREAM['posix']
OURS = cinder_db.OURS['posix']


def record(backup_id, service, status='available', parent_id=None):
    return cinder_compat.BackupRecord(
        id=backup_id, service=service, status=status, volume_id='vol',
        container='c', prefix='p-%s' % backup_id, parent_id=parent_id)


class FakeDatabase(object):

    def __init__(self, records):
        self.records = {r.id: r for r in records}

    def list(self, context):
        return [cinder_compat.BackupRecord(
            **{k: getattr(r, k) for k in r.__slots__})
            for r in self.records.values()]

    def set_service(self, context, backup_id, old, new, statuses):
        r = self.records[backup_id]
        if r.service != old or r.status not in statuses:
            return False
        r.service = new
        return True


class FakeDriver(object):
    """Reads ``_metadata`` documents from a dict."""

    documents = {}

    def __init__(self, context):
        self.context = context

    def _read_object_fully(self, container, name):
        if name not in self.documents:
            raise IOError('no object %s' % name)
        return self.documents[name]


def sealed_metadata(backup_id):
    """An encrypted backup's ``_metadata``: the real envelope."""
    name = 'p-%s_metadata' % backup_id
    return b''.join(documents.seal(
        bytes(32), name, backup_id, {'manager': 'castellan', 'id': 'k'},
        [metadata()]))


def metadata(compression='zlib', version='1.0.0'):
    return json.dumps({
        'version': version, 'backup_id': 'x', 'volume_id': 'vol',
        'backup_name': None, 'backup_description': None,
        'created_at': '2026-01-01 00:00:00', 'parent_id': None,
        'volume_meta': None,
        'objects': [{'p-00001': {'offset': 0, 'length': 4,
                                 'compression': compression,
                                 'md5': '0' * 32}}]}).encode()


class CinderCommandTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.useFixture(config_fixture.Config())
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = os.path.join(self.tmp, 'cinder.conf')
        self.configure(OURS)
        self.db = FakeDatabase([
            record('up1', UP), record('up2', UP.rsplit('.', 1)[0]),
            record('busy', UP, 'creating'), record('other', 'x.Y'),
            record('mine', OURS), record('broken', OURS, 'error')])
        for name, fake in (
                ('open_cinder_database', lambda files: 'ctxt'),
                ('cinder_backup_records', self.db.list),
                ('cinder_set_backup_service', self.db.set_service)):
            self.useFixture(fixtures.MockPatchObject(cinder_compat, name,
                                                     side_effect=fake))
        FakeDriver.documents = {'p-mine_metadata': metadata()}
        self.useFixture(fixtures.MockPatchObject(
            session_lib, 'load_driver_class', return_value=FakeDriver))

    def configure(self, driver):
        with open(self.conf, 'w') as f:
            f.write('[DEFAULT]\nbackup_driver = %s\n' % driver)

    def run_cli(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with mock.patch('sys.stdout', out), mock.patch('sys.stderr', err):
            code = cli.main(['cinder'] + list(args) +
                            ['--config-file', self.conf])
        return code, out.getvalue(), err.getvalue()

    def services(self):
        return {i: r.service for i, r in self.db.records.items()}

    def test_adopt_dry_run_changes_nothing(self):
        before = self.services()
        code, out, _err = self.run_cli('adopt', '--dry-run')
        self.assertEqual(before, self.services())
        self.assertIn('would record up1', out)
        self.assertIn('would record up2', out)
        self.assertEqual(1, code)   # the busy backup is left

    def test_adopt_upstream_records_become_ours_busy_left(self):
        code, out, _err = self.run_cli('adopt')
        services = self.services()
        self.assertEqual(OURS, services['up1'])
        self.assertEqual(OURS, services['up2'])
        self.assertEqual(UP, services['busy'])
        self.assertEqual('x.Y', services['other'])
        self.assertIn('busy busy', out)
        self.assertEqual(1, code)

    def test_adopt_twice_changes_nothing_the_second_time(self):
        del self.db.records['busy']
        self.assertEqual(0, self.run_cli('adopt')[0])
        code, out, _err = self.run_cli('adopt')
        self.assertEqual(0, code)
        self.assertIn('adopt: 0 backup(s) changed', out)

    def test_adopt_with_upstream_configured_refused(self):
        self.configure(UP)
        code, _out, err = self.run_cli('adopt')
        self.assertEqual(2, code)
        self.assertIn('set it to %s first' % OURS, err)
        self.assertEqual(UP, self.services()['up1'])

    def test_adopt_with_unrelated_driver_refused(self):
        self.configure('cinder.backup.drivers.ceph.CephBackupDriver')
        code, _out, err = self.run_cli('adopt')
        self.assertEqual(2, code)
        self.assertIn('neither one of ours', err)

    def test_release_readable_backup_released_error_refused(self):
        code, out, _err = self.run_cli('release')
        services = self.services()
        self.assertEqual(UP, services['mine'])
        self.assertEqual(OURS, services['broken'])
        self.assertIn('refused broken', out)
        self.assertEqual(1, code)

    def test_release_unknown_compression_refused(self):
        FakeDriver.documents = {'p-mine_metadata': metadata('lz4')}
        code, out, _err = self.run_cli('release')
        self.assertEqual(OURS, self.services()['mine'])
        self.assertIn("unsupported compression 'lz4'", out)
        self.assertEqual(1, code)

    def test_release_unreadable_metadata_refused(self):
        FakeDriver.documents = {}
        code, out, _err = self.run_cli('release')
        self.assertEqual(OURS, self.services()['mine'])
        self.assertIn('its metadata cannot be read', out)
        self.assertEqual(1, code)

    def test_release_encrypted_backup_refused_says_what_to_do(self):
        FakeDriver.documents = {'p-mine_metadata': sealed_metadata('mine')}
        code, out, _err = self.run_cli('release')
        self.assertEqual(OURS, self.services()['mine'])
        line = next(x for x in out.splitlines() if 'refused mine' in x)
        self.assertIn('it is encrypted, and upstream Cinder cannot restore '
                      'an encrypted backup', line)
        self.assertIn('keep it on this driver', line)
        self.assertIn('back that volume up again with [chunked_backup] '
                      'encryption = none', line)
        self.assertNotIn('format version', line)
        self.assertEqual(1, code)

    def test_release_plain_incremental_on_encrypted_backup_refused(self):
        self.db.records['inc'] = record('inc', OURS, parent_id='mine')
        self.db.records['inc2'] = record('inc2', OURS, parent_id='inc')
        FakeDriver.documents = {'p-mine_metadata': sealed_metadata('mine'),
                                'p-inc_metadata': metadata(),
                                'p-inc2_metadata': metadata()}
        code, out, _err = self.run_cli('release')
        services = self.services()
        self.assertEqual(OURS, services['inc'])
        self.assertEqual(OURS, services['inc2'])
        for backup_id in ('inc', 'inc2'):
            line = next(x for x in out.splitlines()
                        if 'refused %s ' % backup_id in x)
            self.assertIn('its parent backup mine is encrypted', line)
            self.assertIn('encryption = none', line)
        self.assertEqual(1, code)

    def test_release_plain_incremental_on_plain_backup_released(self):
        self.db.records['inc'] = record('inc', OURS, parent_id='mine')
        FakeDriver.documents = {'p-mine_metadata': metadata(),
                                'p-inc_metadata': metadata()}
        self.run_cli('release')
        self.assertEqual(UP, self.services()['inc'])
        self.assertEqual(UP, self.services()['mine'])

    def test_release_with_upstream_configured_works_too(self):
        self.configure(UP)
        del self.db.records['broken']
        code, out, _err = self.run_cli('release')
        self.assertEqual(0, code, out)
        self.assertEqual(UP, self.services()['mine'])

    def test_decompressor_zstd_needs_upstream_module(self):
        with mock.patch('importlib.util.find_spec', return_value=None):
            self.assertIn('"zstd" module',
                          cinder_db._upstream_decompressor('zstd'))
        self.assertIsNone(cinder_db._upstream_decompressor('bz2'))
