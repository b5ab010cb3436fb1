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

"""A delete by an empty or foreign object prefix is refused.

Two real backups share a container of the POSIX store (a temp dir); a
third record, the one deleted, carries a prefix that is not its own.
Nothing of the other backups may go, and the refusal must say why.
"""

import logging
import os

import ddt
import fixtures
import testtools

from cinder_chunked_ext.engine import prefixes
from cinder_chunked_ext import exception
from cinder_chunked_ext.store import memory
from cinder_chunked_ext.store import posix as posix_store
from cinder_chunked_ext.tests.unit import test_chunked_backup as tcb

SHARED = 'shared/container'


def _snapshot(root):
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


@ddt.ddt
class DeleteForeignPrefixTestCase(tcb.DriverTestCase):

    def setUp(self):
        super().setUp()
        self.first = self.make_backup(tcb.mixed_volume(chunks=3),
                                      container=SHARED)
        self.second = self.make_backup(tcb.text_bytes(tcb.CHUNK, 5),
                                       container=SHARED)
        self.logger = self.useFixture(
            fixtures.FakeLogger(level=logging.INFO))

    def _victim(self, prefix):
        return self.env.new_backup(container=SHARED, service_metadata=prefix,
                                   status='deleting')

    def _prefix(self, kind, victim_id):
        first = self.first.service_metadata
        return {
            'empty': '',
            'other_backup': first,
            'volume_only': 'volume_%s' % self.first.volume_id,
            'truncated_other': first[:-3],
            'own_id_not_at_end': '%s_backup_%s_x' % (first, victim_id),
        }[kind]

    @ddt.data('empty', 'other_backup', 'volume_only', 'truncated_other',
              'own_id_not_at_end')
    def test_delete_backup_foreign_prefix_refused_nothing_deleted(self, kind):
        victim = self._victim('')
        victim.service_metadata = self._prefix(kind, victim.id)
        before = _snapshot(self.repo)
        self.assertGreater(len(before), 5)

        error = self.assertRaises(exception.UnsafePrefix,
                                  self.driver.delete_backup, victim)

        self.assertEqual(before, _snapshot(self.repo))
        self.assertIn(victim.id, str(error))
        self.assertIn('nothing was deleted', str(error))
        self.assertIn('Refusing to delete backup %s' % victim.id,
                      self.logger.output)
        # Both backups are still whole.
        for backup, data in ((self.first, tcb.mixed_volume(chunks=3)),
                             (self.second, tcb.text_bytes(tcb.CHUNK, 5))):
            backup.status = 'available'
            self.assertEqual(data, self.restore_bytes(backup, len(data)))

    def test_delete_backup_prefix_strict_prefix_of_other_refused(self):
        # The victim's prefix is its own, but another backup's prefix
        # starts with it: listing by it finds that backup's objects.
        victim = self._victim('')
        own = 'volume_v_20260101000000_backup_%s' % victim.id
        victim.service_metadata = own
        other = own + '_copy_backup_other'
        for name in (own + '-00001', own + '_metadata', other + '-00001',
                     other + '_sha256file', other + '_metadata'):
            self.write_file(victim, name, b'x')
        before = _snapshot(self.repo)

        error = self.assertRaises(exception.UnsafePrefix,
                                  self.driver.delete_backup, victim)

        self.assertEqual(before, _snapshot(self.repo))
        self.assertIn(other + '-00001', str(error))

    @ddt.data('volume_%(vol)s_20260101000000_backup_%(id)s',
              'volume_%(vol)s/20260101000000/az_nova_backup_%(id)s')
    def test_delete_backup_upstream_layout_all_objects_deleted(self, layout):
        # Prefixes as upstream Cinder's POSIX/NFS and S3/Swift drivers
        # name them, on the memory store (POSIX object names hold no /).
        store = memory.MemoryStore()
        self.driver.store = store
        victim = self._victim('')
        prefix = layout % {'vol': victim.volume_id, 'id': victim.id}
        victim.service_metadata = prefix
        store.put_container(SHARED)
        names = ['%s-%05d' % (prefix, n) for n in (1, 2, 100000)] + [
            prefix + '_sha256file', prefix + '_metadata']
        for name in names + ['unrelated']:
            with store.open_writer(SHARED, name) as w:
                w.write(b'x')

        self.driver.delete_backup(victim)

        self.assertEqual(['unrelated'], store.list_objects(SHARED, ''))

    def test_delete_backup_own_prefix_other_backups_kept(self):
        kept = sorted(self.files(self.second))
        self.driver.delete_backup(self.first)
        self.assertEqual([], self.files(self.first))
        self.assertEqual(kept, sorted(self.files(self.second)))


@ddt.ddt
class PrefixRulesTestCase(testtools.TestCase):

    @ddt.unpack
    @ddt.data(('b1', 'volume_v_20260101000000_backup_b1', None),
              ('b1', 'volume_v/20260101000000/az_nova_backup_b1', None),
              ('b1', None, None),
              ('b1', '', 'empty'),
              ('b1', 'volume_v_20260101000000_backup_b2', 'does not end'),
              ('b1', 'volume_v_20260101000000_backup_b11', 'does not end'),
              ('b1', 'backup_b1', 'does not end'),
              ('', 'volume_v_backup_', 'no id'))
    def test_problem_prefix_table_expected(self, backup_id, prefix, reason):
        found = prefixes.problem(backup_id, prefix)
        if reason is None:
            self.assertIsNone(found)
        else:
            self.assertIn(reason, found)

    @ddt.unpack
    @ddt.data(('p', 'p-00001', True), ('p', 'p-123456', True),
              ('p', 'p_metadata', True), ('p', 'p_sha256file', True),
              ('p', 'p-0001', False), ('p', 'p-00001.bak', False),
              ('p', 'px-00001', False), ('p', 'p_x_metadata', False),
              ('p', 'q-00001', False), ('', '-00001', False))
    def test_owns_name_table_expected(self, prefix, name, expected):
        self.assertEqual(expected, prefixes.owns(prefix, name))


class DeleteLeftoversTestCase(tcb.DriverTestCase):

    def _temp(self, container, name):
        directory = os.path.join(self.repo, container)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, '.tmp-0123456789ab-' + name)
        with open(path, 'wb') as f:
            f.write(b'partial')
        return os.path.basename(path)

    def test_delete_leftovers_empty_prefix_refused_nothing_removed(self):
        store = posix_store.PosixStore(self.repo)
        temp = self._temp('c', 'volume_v_1_backup_b-00001')
        self.assertRaises(exception.UnsafePrefix,
                          store.delete_leftovers, 'c', '')
        self.assertEqual([temp], os.listdir(os.path.join(self.repo, 'c')))

    def test_delete_backup_other_backups_temp_files_kept(self):
        victim = self.env.new_backup(container='c', status='deleting')
        own = 'volume_v_1_backup_%s' % victim.id
        victim.service_metadata = own
        mine = self._temp('c', own + '-00002')
        theirs = self._temp('c', own + '_copy_backup_x-00001')
        self.driver.delete_backup(victim)
        self.assertEqual([theirs], os.listdir(os.path.join(self.repo, 'c')))
        self.assertNotEqual(mine, theirs)
