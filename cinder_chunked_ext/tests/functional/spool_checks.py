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

"""The read spool against a real object store: one GET per object.

Mixed into the S3 and Swift driver tests, whose ``backup`` helper and
configuration it uses (32 KiB hash blocks, objects of four).
"""

import collections
import os

import fixtures

from cinder_chunked_ext.store import read_spool

BLOCK = 32768


def _replace_block(data, index):
    return (data[:index * BLOCK] + os.urandom(BLOCK) +
            data[(index + 1) * BLOCK:])


class ReadOnceMixin(object):
    """Restores over an existing volume, with and without a spool.

    ``store_class``: the store whose ``open_reader`` is one GET.
    """

    store_class = None

    def _count_gets(self):
        gets = collections.Counter()
        original = self.store_class.open_reader

        def open_reader(store, container, name, *args, **kwargs):
            if read_spool.is_data_object(name):
                gets[name] += 1
            return original(store, container, name, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(
            self.store_class, 'open_reader', open_reader))
        return gets

    def _restore_over_other_data(self, backup, size):
        path = os.path.join(self.tmp, 'existing-%s' % os.urandom(4).hex())
        with open(path, 'wb') as f:
            f.write(os.urandom(size))
        backup.status = 'restoring'
        try:
            with open(path, 'r+b') as f:
                self.driver().restore(backup, backup.volume_id, f, False)
        finally:
            backup.status = 'available'
        with open(path, 'rb') as f:
            return f.read()

    def test_restore_existing_with_spool_fetches_each_object_once(self):
        data1 = os.urandom(10 * BLOCK) + bytes(2 * BLOCK) + os.urandom(
            3 * BLOCK)
        full = self.backup(data1)
        data2 = _replace_block(_replace_block(data1, 1), 13)
        incr = self.backup(data2, parent=full)
        gets = self._count_gets()
        # Without a spool: the check pass and the write pass each GET.
        self.assertEqual(data2, self._restore_over_other_data(
            incr, len(data2)))
        self.assertIn(2, gets.values())
        spool_dir = self.useFixture(fixtures.TempDir()).path
        self.conf.config(restore_spool_dir=spool_dir,
                         group='chunked_backup')
        everything = sorted(gets)
        gets.clear()
        self.assertEqual(data2, self._restore_over_other_data(
            incr, len(data2)))
        self.assertEqual(everything, sorted(gets))
        self.assertEqual({1}, set(gets.values()))
        self.assertEqual([], os.listdir(spool_dir))
