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

"""The NFS driver: share checks, lazy mounting, retries, permissions.

The machines these tests run on have no NFS client, so the commands the
driver runs go to :class:`FakeHost`, which records them and keeps a mount
table in place of the kernel's; the mount point itself is a real
directory, so what the driver stores lands on disk.  The real mount flow
(a bind mount standing in for the share) is in
``tests/functional/test_nfs_mount.py``.
"""

import hashlib
import io
import os
import stat
import tempfile
import threading
import time
from unittest import mock

import ddt
import fixtures
from oslo_concurrency import processutils as putils
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import nfs
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests import fakes

SHARE = 'nfs.example.org:/srv/cinder-backup'
BLOCK = 4096


class FakeHost(object):
    """Runs the driver's commands against a pretend mount table.

    ``mkdir`` creates the directory for real; ``mount`` fails
    ``mount_failures`` times, then adds its mount point to the table.
    """

    def __init__(self):
        self.commands = []
        self.mounted = set()
        self.mount_failures = 0
        self.mount_stderr = 'mount.nfs: Connection timed out\n'
        self.mount_delay = 0.0
        self.mount_threads = []
        self._lock = threading.Lock()

    def execute(self, *cmd, **kwargs):
        with self._lock:
            self.commands.append((list(cmd), dict(kwargs)))
        if cmd[0] == 'mkdir':
            os.makedirs(cmd[-1], exist_ok=True)
        elif cmd[0] == 'mount':
            self.mount_threads.append(threading.current_thread())
            if self.mount_delay:
                time.sleep(self.mount_delay)
            if self.mount_failures:
                self.mount_failures -= 1
                raise putils.ProcessExecutionError(
                    exit_code=32, stderr=self.mount_stderr,
                    cmd=' '.join(cmd))
            self.mounted.add(os.path.realpath(cmd[-1]))
        return '', ''

    def mount_points(self, mounts_file=None):
        return set(self.mounted)

    def named(self, program):
        return [cmd for cmd, _kwargs in self.commands if cmd[0] == program]


class NfsTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        self.base = self.useFixture(fixtures.TempDir()).path
        self.conf = self.useFixture(config_fixture.Config(nfs.CONF))
        self.conf.config(backup_share=SHARE,
                         backup_mount_point_base=self.base,
                         backup_mount_options=None,
                         backup_mount_attempts=3,
                         backup_file_size=4 * BLOCK,
                         backup_sha_block_size_bytes=BLOCK,
                         backup_compression_algorithm='zlib',
                         backup_container=None)
        self.host = FakeHost()
        self.useFixture(fixtures.MockPatchObject(
            nfs, 'read_mount_points', self.host.mount_points))
        # os-brick is tested on its own; by default the plain command path.
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_chunked_ext.drivers.nfs.remotefs_brick', None))
        self.env = fakes.FakeEnvironment()
        self.sleeps = []

    @property
    def mount_point(self):
        digest = hashlib.md5(SHARE.encode(), usedforsecurity=False)
        return os.path.join(self.base, digest.hexdigest())

    def make_driver(self):
        driver = nfs.NFSBackupDriver(fakes.FakeContext(self.env))
        driver._execute = self.host.execute
        driver.mounter.sleep = self.sleeps.append
        return driver

    def set_mode(self, path, mode):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)


@ddt.ddt
class ShareSettingTest(NfsTestCase):

    @ddt.data(None, SHARE, 'not a share', '[::1:/x')
    def test_init_any_share_setting_runs_no_command(self, share):
        self.conf.config(backup_share=share)
        execute = self.useFixture(fixtures.MockPatchObject(
            nfs.putils, 'execute')).mock
        brick = self.useFixture(fixtures.MockPatchObject(
            nfs, 'remotefs_brick')).mock
        reader = self.useFixture(fixtures.MockPatchObject(
            nfs, 'read_mount_points')).mock

        driver = nfs.NFSBackupDriver(fakes.FakeContext(self.env))

        self.assertIsNotNone(driver.store)
        execute.assert_not_called()
        brick.RemoteFsClient.assert_not_called()
        reader.assert_not_called()
        self.assertEqual([], os.listdir(self.base))

    @ddt.data(None, '')
    def test_check_for_setup_error_share_unset_raises_invalid_config(
            self, share):
        self.conf.config(backup_share=share)
        driver = self.make_driver()

        error = self.assertRaises(cinder_compat.InvalidConfigurationValue,
                                  driver.check_for_setup_error)

        self.assertIn('backup_share is not set', str(error))
        self.assertEqual([], self.host.commands)

    def test_check_for_setup_error_malformed_share_raises_before_commands(
            self):
        self.conf.config(backup_share='nfs.example.org/srv')
        driver = self.make_driver()

        error = self.assertRaises(exception.StoreConfigurationError,
                                  driver.check_for_setup_error)

        self.assertIn("'nfs.example.org/srv'", str(error))
        self.assertEqual([], self.host.commands)

    def test_backup_share_unset_raises_invalid_config_without_commands(self):
        self.conf.config(backup_share=None)
        driver = self.make_driver()
        backup = self.env.new_backup()

        self.assertRaises(cinder_compat.InvalidConfigurationValue,
                          driver.backup, backup, io.BytesIO(b'x' * BLOCK))
        self.assertEqual([], self.host.commands)

    @ddt.data(
        ('nfs.example.org:/srv/cinder-backup',
         ('nfs.example.org', '/srv/cinder-backup')),
        ('filer:/', ('filer', '/')),
        ('filer_01.lab:/vol/a:b', ('filer_01.lab', '/vol/a:b')),
        ('192.0.2.10:/export', ('192.0.2.10', '/export')),
        ('[2001:db8::1]:/export', ('2001:db8::1', '/export')),
        ('[::ffff:192.0.2.1]:/e', ('::ffff:192.0.2.1', '/e')),
    )
    @ddt.unpack
    def test_parse_share_valid_forms_split_host_and_path(self, share, parts):
        self.assertEqual(parts, nfs.parse_share(share))

    @ddt.data(
        ('filer', 'no ":"'),
        ('/srv/backup', 'no ":"'),
        ('filer:srv/backup', 'must be absolute'),
        (':/srv', 'not a valid host name'),
        ('-oexec:/srv', 'not a valid host name'),
        ('fil er:/srv', 'white space'),
        ('filer:/srv/back up', 'white space'),
        ('filer:/srv\n', 'white space'),
        ('filer:/srv\x00', 'control characters'),
        ('999.0.2.10:/export', 'not an IPv4 address'),
        ('2001:db8::1:/export', 'must be written in brackets'),
        ('[2001:db8::1:/export', 'must be followed by'),
        ('[2001:db8::1]/export', 'must be followed by'),
        ('[filer]:/export', 'not an IPv6 address'),
        ('[2001:db8::1]:export', 'must be absolute'),
    )
    @ddt.unpack
    def test_parse_share_malformed_raises_clear_error(self, share, why):
        error = self.assertRaises(exception.StoreConfigurationError,
                                  nfs.parse_share, share)

        self.assertIsInstance(error, cinder_compat.InvalidConfigurationValue)
        self.assertIn(why, str(error))
        self.assertIn('[ipv6addr]:/path', str(error))

    def test_mount_point_base_relative_raises_configuration_error(self):
        self.conf.config(backup_mount_point_base='relative/dir')
        driver = self.make_driver()

        error = self.assertRaises(exception.StoreConfigurationError,
                                  driver.check_for_setup_error)

        self.assertIn('backup_mount_point_base', str(error))
        self.assertEqual([], self.host.commands)

    def test_driver_options_default_as_upstream(self):
        options = {opt.dest: opt for opt in
                   nfs.NFSBackupDriver.get_driver_options()}

        self.assertEqual('$state_path/backup_mount',
                         options['backup_mount_point_base'].default)
        self.assertEqual(3, options['backup_mount_attempts'].default)
        self.assertEqual(1, options['backup_mount_attempts'].type.min)
        self.assertIsNone(options['backup_share'].default)
        self.assertIsNone(options['backup_mount_options'].default)
        self.assertIn('backup_posix_path', options)

    @testtools.skipUnless(cinder_compat.HAVE_CINDER, 'needs Cinder')
    def test_options_with_cinder_are_cinders_objects(self):
        from cinder.backup.drivers import nfs as upstream
        theirs = {opt.dest: opt for opt in upstream.nfsbackup_service_opts}

        for name, opt in theirs.items():
            self.assertIs(opt, nfs.CONF._get_opt_info(name)['opt'])


@ddt.ddt
class MountTest(NfsTestCase):

    def test_mount_point_is_md5_hex_of_share_under_base(self):
        driver = self.make_driver()

        self.assertEqual(self.mount_point, driver.mount_point)
        self.assertEqual(self.mount_point, driver.store.root)

    def test_store_root_first_access_mounts_once(self):
        driver = self.make_driver()
        self.assertEqual([], self.host.commands)

        first = driver.store.root
        second = driver.store.root

        self.assertEqual(first, second)
        self.assertEqual(
            [['mount', '-t', 'nfs', SHARE, self.mount_point]],
            self.host.named('mount'))
        _cmd, kwargs = [c for c in self.host.commands
                        if c[0][0] == 'mount'][0]
        self.assertTrue(kwargs['run_as_root'])
        self.assertEqual(cinder_compat.root_helper(), kwargs['root_helper'])
        self.assertTrue(os.path.isdir(self.mount_point))

    def test_mount_options_set_passed_after_dash_o(self):
        self.conf.config(backup_mount_options='vers=4.1,proto=tcp')
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual(
            [['mount', '-t', 'nfs', '-o', 'vers=4.1,proto=tcp', SHARE,
              self.mount_point]],
            self.host.named('mount'))

    def test_already_mounted_issues_no_mount_command(self):
        self.set_mode(self.mount_point, 0o775)
        self.host.mounted.add(os.path.realpath(self.mount_point))
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual([], self.host.commands)

    def test_check_for_setup_error_rechecks_mount_table(self):
        driver = self.make_driver()
        driver.check_for_setup_error()
        self.host.mounted.clear()

        driver.check_for_setup_error()

        self.assertEqual(2, len(self.host.named('mount')))

    def test_describe_runs_no_command(self):
        driver = self.make_driver()

        text = driver.store.describe()

        self.assertIn(SHARE, text)
        self.assertIn(self.mount_point, text)
        self.assertEqual([], self.host.commands)

    @ddt.data(1, 2)
    def test_mount_fails_then_succeeds_retries_with_backoff(self, failures):
        self.host.mount_failures = failures
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual(failures + 1, len(self.host.named('mount')))
        self.assertEqual([1.0, 2.0][:failures], self.sleeps)
        self.assertIn(os.path.realpath(self.mount_point), self.host.mounted)

    @ddt.data(1, 3, 5)
    def test_mount_fails_every_attempt_raises_naming_share(self, attempts):
        self.conf.config(backup_mount_attempts=attempts)
        self.host.mount_failures = 100
        driver = self.make_driver()

        error = self.assertRaises(nfs.NfsMountError,
                                  driver.check_for_setup_error)

        self.assertIsInstance(error, exception.StoreError)
        self.assertEqual(attempts, len(self.host.named('mount')))
        self.assertEqual(attempts - 1, len(self.sleeps))
        message = str(error)
        self.assertIn(SHARE, message)
        self.assertIn(self.mount_point, message)
        self.assertIn('%d attempt' % attempts, message)
        self.assertIn('Connection timed out', message)

    def test_mount_failure_message_hides_mount_options(self):
        secret_options = 'sec=sys,password=hunter2'
        self.conf.config(backup_mount_options=secret_options,
                         backup_mount_attempts=1)
        self.host.mount_failures = 1
        self.host.mount_stderr = ('mount.nfs: bad option; command was '
                                  'mount -o %s' % secret_options)
        driver = self.make_driver()
        logs = self.useFixture(fixtures.FakeLogger())

        error = self.assertRaises(nfs.NfsMountError, driver.store.check)

        self.assertIn(SHARE, str(error))
        self.assertNotIn('hunter2', str(error))
        self.assertNotIn('hunter2', logs.output)
        self.assertIn(SHARE, logs.output)

    def test_brick_style_failure_text_masks_dash_o_options(self):
        mounter = nfs.ShareMounter(SHARE, self.base, None, 1,
                                   self.host.execute, 'sudo')
        error = RuntimeError("{'nfs': 'Command: mount -t nfs -o "
                             "vers=4,secret=abc host:/x /m'}")

        text = mounter._describe_failure(error)

        self.assertNotIn('secret=abc', text)
        self.assertIn('-o ***', text)

    def test_mount_says_already_mounted_and_is_mounted_succeeds(self):
        driver = self.make_driver()

        def mount_races(*cmd, **kwargs):
            if cmd[0] == 'mount':
                self.host.mounted.add(os.path.realpath(cmd[-1]))
                raise putils.ProcessExecutionError(
                    exit_code=32, stderr='mount.nfs: /m is busy or '
                                         'already mounted')
            return self.host.execute(*cmd, **kwargs)
        driver._execute = mount_races

        driver.check_for_setup_error()

        self.assertEqual([], self.sleeps)

    def test_mount_says_already_mounted_but_is_not_retries(self):
        self.host.mount_failures = 1
        self.host.mount_stderr = 'mount.nfs: /m is busy or already mounted'
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual(2, len(self.host.named('mount')))

    def test_mount_failed_but_mounted_by_other_meanwhile_stops_retrying(self):
        self.host.mount_failures = 100
        driver = self.make_driver()

        def other_process_mounts(delay):
            self.sleeps.append(delay)
            self.host.mounted.add(os.path.realpath(self.mount_point))
        driver.mounter.sleep = other_process_mounts

        driver.check_for_setup_error()

        self.assertEqual(1, len(self.host.named('mount')))

    def test_mount_point_permission_denied_created_through_root_helper(self):
        driver = self.make_driver()
        real_makedirs = os.makedirs
        refused = []

        def makedirs(path, *args, **kwargs):
            # The service may not create it; root (FakeHost's mkdir) may.
            if path == self.mount_point and not refused:
                refused.append(path)
                raise PermissionError(13, 'Permission denied', path)
            return real_makedirs(path, *args, **kwargs)
        self.useFixture(fixtures.MockPatchObject(nfs.os, 'makedirs',
                                                 makedirs))

        driver.check_for_setup_error()

        self.assertEqual([self.mount_point], refused)
        mkdir = [c for c in self.host.commands if c[0][0] == 'mkdir']
        self.assertEqual([['mkdir', '-p', self.mount_point]],
                         [cmd for cmd, _kwargs in mkdir])
        self.assertTrue(mkdir[0][1]['run_as_root'])

    def test_concurrent_drivers_in_one_process_mount_once(self):
        self.host.mount_delay = 0.05
        drivers = [self.make_driver() for _i in range(4)]
        errors = []

        def first_use(driver):
            try:
                driver.store.root
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=first_use, args=(d,))
                   for d in drivers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        self.assertEqual([], errors)
        self.assertEqual(1, len(self.host.named('mount')))


@ddt.ddt
class GroupWritableTest(NfsTestCase):

    @ddt.data(
        (0o775, False, []),
        (0o770, False, []),
        (0o755, False, [['chmod', '-R', 'g+w']]),
        (0o700, False, [['chmod', '-R', 'g+w']]),
        (0o775, True, [['chgrp', '-R', '<gid>']]),
        (0o755, True, [['chgrp', '-R', '<gid>'], ['chmod', '-R', 'g+w']]),
    )
    @ddt.unpack
    def test_mount_point_permissions_fixed_when_needed(self, mode,
                                                       other_group,
                                                       expected):
        self.set_mode(self.mount_point, mode)
        group = os.stat(self.mount_point).st_gid
        if other_group:
            group += 1
            self.useFixture(fixtures.MockPatchObject(
                nfs.os, 'getegid', return_value=group))
        driver = self.make_driver()

        driver.check_for_setup_error()

        issued = [(cmd, kwargs) for cmd, kwargs in self.host.commands
                  if cmd[0] in ('chgrp', 'chmod')]
        self.assertEqual(
            [[part.replace('<gid>', str(group)) for part in cmd]
             + [self.mount_point] for cmd in expected],
            [cmd for cmd, _kwargs in issued])
        for _cmd, kwargs in issued:
            self.assertTrue(kwargs['run_as_root'])
            self.assertEqual(cinder_compat.root_helper(),
                             kwargs['root_helper'])

    def test_permission_fix_failure_raises_permanent_error(self):
        self.set_mode(self.mount_point, 0o700)
        driver = self.make_driver()

        def refuse_chmod(*cmd, **kwargs):
            if cmd[0] == 'chmod':
                raise putils.ProcessExecutionError(
                    exit_code=1, stderr='chmod: Operation not permitted')
            return self.host.execute(*cmd, **kwargs)
        driver._execute = refuse_chmod

        error = self.assertRaises(exception.PermanentStoreError,
                                  driver.check_for_setup_error)

        self.assertIn(SHARE, str(error))
        self.assertIn('Operation not permitted', str(error))


class MountTableTest(testtools.TestCase):

    def test_read_mount_points_unescapes_kernel_octal(self):
        table = self.useFixture(fixtures.TempDir()).join('mounts')
        with open(table, 'w') as f:
            f.write('filer:/srv /mnt/with\\040space nfs4 rw 0 0\n'
                    'tmpfs /tmp tmpfs rw 0 0\n'
                    '\n'
                    '# comment line\n')

        self.assertEqual({'/mnt/with space', '/tmp'},
                         nfs.read_mount_points(table))

    def test_is_mounted_unreadable_table_falls_back_to_ismount(self):
        missing = os.path.join(tempfile.gettempdir(), 'no-such-mounts-%d'
                               % os.getpid())
        plain = self.useFixture(fixtures.TempDir()).path

        self.assertTrue(nfs.is_mounted('/', mounts_file=missing))
        self.assertFalse(nfs.is_mounted(plain, mounts_file=missing))

    def test_is_mounted_resolves_symbolic_links(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        real = os.path.join(tmp, 'real')
        os.mkdir(real)
        link = os.path.join(tmp, 'link')
        os.symlink(real, link)
        table = os.path.join(tmp, 'mounts')
        with open(table, 'w') as f:
            f.write('filer:/srv %s nfs4 rw 0 0\n' % os.path.realpath(real))

        self.assertTrue(nfs.is_mounted(link, mounts_file=table))


class BrickPathTest(NfsTestCase):
    """Mounting through os-brick's RemoteFsClient."""

    def setUp(self):
        super().setUp()
        self.brick = self.useFixture(fixtures.MockPatchObject(
            nfs, 'remotefs_brick')).mock
        self.client = self.brick.RemoteFsClient.return_value
        self.mount_results = []

        def mount(share):
            if self.mount_results:
                result = self.mount_results.pop(0)
                if result is not None:
                    raise result
            os.makedirs(self.mount_point, exist_ok=True)
            self.host.mounted.add(os.path.realpath(self.mount_point))
        self.client.mount.side_effect = mount

    def test_brick_client_built_from_configuration_mounts_share(self):
        self.conf.config(backup_mount_options='vers=4.2')
        driver = self.make_driver()
        self.brick.RemoteFsClient.assert_not_called()

        driver.check_for_setup_error()

        self.brick.RemoteFsClient.assert_called_once_with(
            'nfs', cinder_compat.root_helper(), execute=mock.ANY,
            nfs_mount_point_base=self.base, nfs_mount_options='vers=4.2')
        self.client.mount.assert_called_once_with(SHARE)
        self.assertEqual([], self.host.named('mount'))

    def test_brick_client_runs_commands_through_driver_execute(self):
        driver = self.make_driver()
        driver.check_for_setup_error()
        execute = self.brick.RemoteFsClient.call_args[1]['execute']
        del self.host.commands[:]

        execute('true', run_as_root=False)

        self.assertEqual([(['true'], {'run_as_root': False})],
                         self.host.commands)

    def test_brick_mount_fails_then_succeeds_retries(self):
        self.mount_results = [
            putils.ProcessExecutionError(exit_code=32, stderr='timed out'),
            OSError(5, 'Input/output error'),
        ]
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual(3, self.client.mount.call_count)
        self.assertEqual([1.0, 2.0], self.sleeps)
        self.brick.RemoteFsClient.assert_called_once()

    def test_brick_mount_fails_every_attempt_raises_naming_share(self):
        self.conf.config(backup_mount_attempts=2)
        self.mount_results = [
            putils.ProcessExecutionError(exit_code=32, stderr='denied'),
        ] * 2
        driver = self.make_driver()

        error = self.assertRaises(nfs.NfsMountError,
                                  driver.check_for_setup_error)

        self.assertEqual(2, self.client.mount.call_count)
        self.assertIn(SHARE, str(error))
        self.assertIn('denied', str(error))

    def test_brick_already_mounted_not_asked_to_mount(self):
        self.set_mode(self.mount_point, 0o775)
        self.host.mounted.add(os.path.realpath(self.mount_point))
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.client.mount.assert_not_called()


@testtools.skipUnless(nfs.remotefs_brick is not None,
                      'os-brick is not installed in this environment')
class RealBrickClientTest(NfsTestCase):
    """os-brick's own client, with its commands going to FakeHost."""

    def setUp(self):
        super().setUp()
        from os_brick.remotefs import remotefs
        self.useFixture(fixtures.MonkeyPatch(
            'cinder_chunked_ext.drivers.nfs.remotefs_brick', remotefs))

    def test_real_brick_client_mounts_at_our_mount_point(self):
        self.conf.config(backup_mount_options='proto=tcp')
        driver = self.make_driver()

        driver.check_for_setup_error()

        self.assertEqual([['mkdir', '-p', self.mount_point]],
                         self.host.named('mkdir'))
        mounts = self.host.named('mount')
        self.assertEqual(1, len(mounts))
        self.assertEqual(['mount', '-t', 'nfs', '-o'], mounts[0][:4])
        self.assertIn('proto=tcp', mounts[0][4])
        self.assertEqual([SHARE, self.mount_point], mounts[0][-2:])
        self.assertIn(os.path.realpath(self.mount_point), self.host.mounted)


@ddt.ddt
class DriverOperationsTest(NfsTestCase):
    """Backup, restore and delete through a (pretend-)mounted share."""

    def volume(self):
        data = bytearray(os.urandom(10 * BLOCK))
        data[2 * BLOCK:4 * BLOCK] = bytes(2 * BLOCK)
        return bytes(data)

    def test_backup_restore_delete_store_files_on_the_share(self):
        data = self.volume()
        driver = self.make_driver()
        backup = self.env.new_backup()

        driver.backup(backup, io.BytesIO(data))

        self.assertEqual(1, len(self.host.named('mount')))
        container = os.path.join(self.mount_point, backup.container)
        names = os.listdir(container)
        self.assertIn(backup.service_metadata + '_metadata', names)
        self.assertGreater(len(names), 3)

        backup.status = cinder_compat.BackupStatus.RESTORING
        target = io.BytesIO(bytes(len(data)))
        self.make_driver().restore(backup, backup.volume_id, target, True)
        self.assertEqual(data, target.getvalue())

        self.make_driver().delete_backup(backup)
        self.assertEqual([], os.listdir(container))
        self.assertEqual(1, len(self.host.named('mount')))

    @ddt.data('backup', 'restore', 'delete_backup')
    def test_operation_mounts_on_calling_thread_before_engine_runs(
            self, operation):
        # The engine may touch the store from worker threads (eventlet's
        # tpool), where mounting, locking and logging must not happen.
        driver = self.make_driver()
        seen = []

        def engine(*args, **kwargs):
            seen.append(len(self.host.named('mount')))
        self.useFixture(fixtures.MockPatchObject(
            chunked.ChunkedBackupDriver, operation, side_effect=engine))

        args = {'backup': (None, None), 'restore': (None, None, None, True),
                'delete_backup': ({'id': 'b', 'container': None,
                                   'service_metadata': None},)}[operation]
        getattr(driver, operation)(*args)

        self.assertEqual([1], seen)
        self.assertEqual([threading.current_thread()],
                         self.host.mount_threads)

    def test_share_gone_between_operations_mounted_again(self):
        driver = self.make_driver()
        first = self.env.new_backup()
        driver.backup(first, io.BytesIO(self.volume()))
        self.host.mounted.clear()

        driver.backup(self.env.new_backup(), io.BytesIO(self.volume()))

        self.assertEqual(2, len(self.host.named('mount')))

    def test_mount_point_mode_after_fix_is_group_writable(self):
        self.set_mode(self.mount_point, 0o700)
        driver = self.make_driver()

        def chmod_for_real(*cmd, **kwargs):
            if cmd[0] == 'chmod':
                path = cmd[-1]
                os.chmod(path, os.stat(path).st_mode | stat.S_IWGRP)
            return self.host.execute(*cmd, **kwargs)
        driver._execute = chmod_for_real

        driver.check_for_setup_error()

        self.assertTrue(os.stat(self.mount_point).st_mode & stat.S_IWGRP)
