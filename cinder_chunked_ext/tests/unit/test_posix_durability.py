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

"""What a POSIX backup makes durable, and in which order.

Every directory a backup creates is an entry in its parent; until that
parent is synced, a crash can lose the directory and every object in
it, after the backup was reported available.  An strace of a backup
showed ``mkdir`` of ``xx``, ``xx/yy`` and ``xx/yy/<id>`` with no sync of
their parents.
"""

import os

import fixtures
import testtools

from cinder_chunked_ext.store import posix


class DirectorySyncTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        top = self.useFixture(fixtures.TempDir()).path
        self.root = os.path.join(top, 'repo')
        self.events = []
        real_fsync_dir = posix._fsync_dir
        real_rename = os.rename

        def fsync_dir(path):
            self.events.append(('sync', os.path.relpath(path, top)))
            return real_fsync_dir(path)

        def rename(src, dst):
            self.events.append(('rename', os.path.relpath(dst, top)))
            return real_rename(src, dst)
        self.useFixture(fixtures.MockPatchObject(posix, '_fsync_dir',
                                                 fsync_dir))
        self.useFixture(fixtures.MockPatchObject(posix.os, 'rename', rename))
        self.store = posix.PosixStore(self.root)

    def test_put_container_new_directories_parents_synced(self):
        self.store.put_container('ab/cd/abcd-1')
        self.assertEqual({('sync', 'repo/ab/cd'), ('sync', 'repo/ab'),
                          ('sync', 'repo'), ('sync', '.')},
                         set(self.events))

    def test_put_container_existing_directories_no_sync(self):
        self.store.put_container('ab/cd/abcd-1')
        del self.events[:]
        self.store.put_container('ab/cd/abcd-1')
        self.assertEqual([], self.events)

    def test_put_container_sibling_only_its_parent_synced(self):
        self.store.put_container('ab/cd/abcd-1')
        del self.events[:]
        self.store.put_container('ab/cd/abcd-2')
        self.assertEqual([('sync', 'repo/ab/cd')], self.events)

    def test_object_commit_after_its_directory_durable(self):
        self.store.put_container('ab/cd/abcd-1')
        with self.store.open_writer('ab/cd/abcd-1', 'P-00001') as writer:
            writer.write(b'data')
        renamed = self.events.index(('rename', 'repo/ab/cd/abcd-1/P-00001'))
        self.assertLess(self.events.index(('sync', 'repo/ab/cd')), renamed)
        # And the rename itself is made durable by a sync of its directory.
        self.assertIn(('sync', 'repo/ab/cd/abcd-1'), self.events[renamed:])
