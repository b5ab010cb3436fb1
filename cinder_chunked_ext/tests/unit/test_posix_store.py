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

"""POSIX store: paths confined to the repository, atomic files, modes."""

import errno
import os
import stat
from unittest import mock

import ddt
import fixtures
import testtools

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import posix


def _tree(path):
    """Every path below ``path``, relative, links not followed."""
    found = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(found)


class _Boom(Exception):
    pass


class _PosixCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        top = self.useFixture(fixtures.TempDir()).path
        self.root = os.path.join(top, 'repo')
        self.outside = os.path.join(top, 'outside')
        os.mkdir(self.root)
        os.mkdir(self.outside)
        self.store = posix.PosixStore(self.root)

    def _put(self, container, name, data):
        with self.store.open_writer(container, name) as writer:
            writer.write(data)


@ddt.ddt
class ConfinementTestCase(_PosixCase):

    @ddt.data(
        '/etc',
        '/tmp/x',
        '..',
        '../outside',
        'a/../../outside',
        'a/..',
        './a',
        'a//b',
        'a/',
        '',
        'a\x00b',
        'x' * 256,
        'ok/' + 'x' * 256,
        '\u00e9' * 128,   # 256 bytes in UTF-8
    )
    def test_unsafe_container_refused_nothing_created(self, container):
        for call in (lambda: self.store.put_container(container),
                     lambda: self.store.open_writer(container, 'o-00001'),
                     lambda: self.store.open_reader(container, 'o-00001'),
                     lambda: self.store.list_objects(container, 'o'),
                     lambda: self.store.delete_object(container, 'o-00001'),
                     lambda: self.store.object_size(container, 'o-00001')):
            self.assertRaises(exception.UnsafePath, call)
        self.assertEqual([], _tree(self.root))
        self.assertEqual([], _tree(self.outside))

    @ddt.data(
        '../escape',
        'a/b',
        '..',
        '.',
        '',
        '.hidden',
        '.tmp-123-o',
        'o\x00',
        'o' * 256,
        '\u00e9' * 128,
    )
    def test_unsafe_object_name_refused(self, name):
        self.store.put_container('c')
        self.assertRaises(exception.UnsafePath, self.store.open_writer, 'c',
                          name)
        self.assertRaises(exception.UnsafePath, self.store.open_reader, 'c',
                          name)
        self.assertRaises(exception.UnsafePath, self.store.delete_object,
                          'c', name)
        self.assertEqual(['c'], _tree(self.root))
        self.assertEqual([], _tree(self.outside))

    def test_unsafe_path_is_invalid_backup(self):
        exc = self.assertRaises(exception.UnsafePath,
                                self.store.container_path, '/etc')
        self.assertIsInstance(exc, exception.InvalidBackup)
        self.assertIn('/etc', str(exc))

    def test_longest_names_accepted(self):
        container = 'c' * 255
        name = 'o' * 255
        self.store.put_container(container)
        self._put(container, name, b'data')
        self.assertEqual([name], self.store.list_objects(container, 'o'))
        with self.store.open_reader(container, name) as reader:
            self.assertEqual(b'data', reader.read())

    def test_symlinked_container_leading_out_refused(self):
        os.symlink(self.outside, os.path.join(self.root, 'link'))
        for container in ('link', 'link/sub', 'link/sub/deeper'):
            self.assertRaises(exception.UnsafePath, self.store.put_container,
                              container)
            self.assertRaises(exception.UnsafePath, self.store.open_writer,
                              container, 'o-00001')
            self.assertRaises(exception.UnsafePath, self.store.list_objects,
                              container, '')
        self.assertEqual([], _tree(self.outside))

    def test_container_swapped_for_link_out_after_use_refused(self):
        # A directory proven inside is remembered; one swapped for a link
        # that leads out of the root since must be checked again.
        self.store.put_container('vol/backups')
        self._put('vol/backups', 'o-00001', b'data')
        os.rename(os.path.join(self.root, 'vol'),
                  os.path.join(self.root, 'moved'))
        os.makedirs(os.path.join(self.outside, 'backups'))
        os.symlink(self.outside, os.path.join(self.root, 'vol'))
        self.assertRaises(exception.UnsafePath, self.store.open_writer,
                          'vol/backups', 'o-00002')
        self.assertRaises(exception.UnsafePath, self.store.open_reader,
                          'vol/backups', 'o-00001')
        self.assertRaises(exception.UnsafePath, self.store.delete_object,
                          'vol/backups', 'o-00001')
        self.assertEqual(['backups'], _tree(self.outside))

    def test_container_swapped_for_link_inside_after_use_allowed(self):
        self.store.put_container('vol')
        self._put('vol', 'o-00001', b'one')
        os.rename(os.path.join(self.root, 'vol'),
                  os.path.join(self.root, 'real'))
        os.symlink('real', os.path.join(self.root, 'vol'))
        self._put('vol', 'o-00002', b'two')
        self.assertEqual(['o-00001', 'o-00002'],
                         self.store.list_objects('vol', 'o-'))

    def test_symlink_to_parent_of_root_refused(self):
        os.mkdir(os.path.join(self.root, 'a'))
        os.symlink('../..', os.path.join(self.root, 'a', 'up'))
        self.assertRaises(exception.UnsafePath, self.store.put_container,
                          'a/up/outside')
        self.assertEqual([], _tree(self.outside))

    def test_symlinked_container_inside_root_allowed(self):
        os.mkdir(os.path.join(self.root, 'real'))
        os.symlink('real', os.path.join(self.root, 'alias'))
        self.store.put_container('alias')
        self._put('alias', 'o-00001', b'data')
        self.assertTrue(os.path.isfile(
            os.path.join(self.root, 'real', 'o-00001')))

    def test_object_symlink_out_not_followed(self):
        self.store.put_container('c')
        secret = os.path.join(self.outside, 'secret')
        with open(secret, 'wb') as f:
            f.write(b'outside data')
        link = os.path.join(self.root, 'c', 'o-00001')
        os.symlink(secret, link)
        # Reading refuses to follow the link.
        self.assertRaises(exception.StoreError, self.store.open_reader, 'c',
                          'o-00001')
        # Deleting removes the link only.
        self.store.delete_object('c', 'o-00001')
        self.assertFalse(os.path.lexists(link))
        # Writing over a link replaces the link, not its target.
        os.symlink(secret, link)
        self._put('c', 'o-00001', b'backup data')
        self.assertFalse(os.path.islink(link))
        with open(secret, 'rb') as f:
            self.assertEqual(b'outside data', f.read())

    def test_repository_root_through_symlink_works(self):
        alias = os.path.join(self.outside, 'alias')
        os.symlink(self.root, alias)
        store = posix.PosixStore(alias)
        store.put_container('a/b')
        with store.open_writer('a/b', 'o-00001') as writer:
            writer.write(b'x')
        self.assertEqual(['o-00001'], store.list_objects('a/b', 'o'))


class AtomicWriteTestCase(_PosixCase):

    def setUp(self):
        super().setUp()
        self.store.put_container('c')
        self.directory = os.path.join(self.root, 'c')

    def test_writer_in_progress_only_temp_file(self):
        writer = self.store.open_writer('c', 'o-00001')
        writer.write(b'partial')
        names = os.listdir(self.directory)
        self.assertEqual(1, len(names))
        self.assertTrue(names[0].startswith(posix.TEMP_MARK))
        self.assertEqual([], self.store.list_objects('c', ''))
        writer.commit()
        self.assertEqual(['o-00001'], os.listdir(self.directory))

    def test_writer_block_raised_no_file_no_temp(self):
        def fail():
            with self.store.open_writer('c', 'o-00001') as writer:
                writer.write(os.urandom(10000))
                raise _Boom()
        self.assertRaises(_Boom, fail)
        self.assertEqual([], os.listdir(self.directory))

    def test_writer_commit_failure_no_file_no_temp(self):
        writer = self.store.open_writer('c', 'o-00001')
        writer.write(b'data')
        with mock.patch.object(posix.os, 'rename',
                               side_effect=OSError(errno.EACCES, 'denied')):
            exc = self.assertRaises(exception.PermanentStoreError,
                                    writer.commit)
        self.assertIn('o-00001', str(exc))
        self.assertEqual([], os.listdir(self.directory))

    def test_writer_commit_fsyncs_file_and_directory(self):
        with mock.patch.object(posix.os, 'fsync',
                               wraps=os.fsync) as fsync:
            self._put('c', 'o-00001', b'data')
        self.assertEqual(2, fsync.call_count)

    def test_writers_draw_no_randomness_per_object(self):
        # uuid4 per object was a system call (getrandom), and a round
        # trip of the GIL on a worker thread, per object.
        real_urandom = os.urandom
        with mock.patch.object(posix.os, 'urandom',
                               side_effect=real_urandom) as urandom, \
                mock.patch.object(posix.uuid, 'uuid4',
                                  side_effect=AssertionError('uuid4')):
            writers = [self.store.open_writer('c', 'o-%05d' % n)
                       for n in range(1, 101)]
        self.assertEqual(0, urandom.call_count)
        temps = os.listdir(self.directory)
        self.assertEqual(100, len(set(temps)))
        for name in temps:
            self.assertEqual(
                name.split('-', 2)[2],
                posix.PosixStore.unfinished_object_name(name))
        for writer in writers:
            writer.commit()
        self.assertEqual(['o-%05d' % n for n in range(1, 101)],
                         sorted(os.listdir(self.directory)))

    def test_writer_meeting_leftover_temp_leaves_it_alone(self):
        tags = posix.TempTags()
        leftover_tag = tags._random + '000000'     # its first tag
        leftover = os.path.join(self.directory, '%s%s-o-00001'
                                % (posix.TEMP_MARK, leftover_tag))
        with open(leftover, 'wb') as f:
            f.write(b'another writer')
        with posix._AtomicFileWriter(self.directory, 'o-00001',
                                     tags=tags) as writer:
            writer.write(b'mine')
        with open(os.path.join(self.directory, 'o-00001'), 'rb') as f:
            self.assertEqual(b'mine', f.read())
        with open(leftover, 'rb') as f:
            self.assertEqual(b'another writer', f.read())

    def test_writer_create_failure_classified(self):
        with mock.patch.object(posix.os, 'open',
                               side_effect=OSError(errno.EACCES, 'denied')):
            exc = self.assertRaises(exception.PermanentStoreError,
                                    self.store.open_writer, 'c', 'o-00001')
        self.assertIn('o-00001', str(exc))

    def test_writer_write_failure_classified(self):
        writer = self.store.open_writer('c', 'o-00001')
        self.addCleanup(writer.abort)
        writer._file = mock.Mock()
        writer._file.write.side_effect = OSError(errno.ENOSPC, 'full')
        self.assertRaises(exception.PermanentStoreError, writer.write, b'x')


class ModesTestCase(_PosixCase):

    def setUp(self):
        super().setUp()
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)

    def _mode(self, *parts):
        return stat.S_IMODE(os.stat(os.path.join(self.root, *parts)).st_mode)

    def test_put_container_directories_0770(self):
        self.store.put_container('a/b/c')
        for parts in (('a',), ('a', 'b'), ('a', 'b', 'c')):
            self.assertEqual(0o770, self._mode(*parts), parts)

    def test_object_files_0660(self):
        self.store.put_container('a')
        self._put('a', 'o-00001', b'data')
        self.assertEqual(0o660, self._mode('a', 'o-00001'))

    def test_missing_root_created(self):
        store = posix.PosixStore(os.path.join(self.root, 'x', 'y'))
        store.put_container('c')
        self.assertTrue(os.path.isdir(os.path.join(self.root, 'x', 'y',
                                                   'c')))


class OperationsTestCase(_PosixCase):

    def test_delete_object_missing_ok(self):
        self.store.put_container('c')
        self.store.delete_object('c', 'o-00001')
        self.store.delete_object('never-created', 'o-00001')
        self.assertEqual(['c'], _tree(self.root))

    def test_list_objects_missing_container_not_found(self):
        self.assertRaises(exception.ObjectNotFound, self.store.list_objects,
                          'missing', '')

    def test_put_container_without_create_missing_not_found(self):
        exc = self.assertRaises(exception.ObjectNotFound,
                                self.store.put_container, 'c', create=False)
        self.assertIn('backup_create_containers', str(exc))
        self.assertEqual([], _tree(self.root))

    def test_check_root_a_file_configuration_error(self):
        path = os.path.join(self.outside, 'file')
        with open(path, 'w'):
            pass
        self.assertRaises(exception.StoreConfigurationError,
                          posix.PosixStore(path).check)

    def test_check_missing_root_ok(self):
        self.assertIsNone(
            posix.PosixStore(os.path.join(self.root, 'new')).check())

    def test_empty_root_refused(self):
        self.assertRaises(exception.ConfigNotFound, posix.PosixStore, '')

    def test_describe_names_root(self):
        self.assertIn(self.root, self.store.describe())


class ClassifyTestCase(testtools.TestCase):

    def test_classify_os_error_by_errno(self):
        cases = {errno.ENOENT: exception.ObjectNotFound,
                 errno.EACCES: exception.PermanentStoreError,
                 errno.ENOSPC: exception.PermanentStoreError,
                 errno.EROFS: exception.PermanentStoreError,
                 errno.EIO: exception.StoreError}
        for err, cls in cases.items():
            result = posix.classify_os_error(OSError(err, 'x'), 'doing it')
            self.assertIs(cls, type(result))
            self.assertIn('doing it', str(result))
