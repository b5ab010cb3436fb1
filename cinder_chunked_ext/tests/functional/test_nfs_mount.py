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

"""The NFS driver's mount flow with a real mount.

The test machines have no NFS client, so a local directory stands in for
the exported share: the driver's ``mount -t nfs ... <share> <mount point>``
is turned into ``mount --bind <directory> <mount point>``; everything else
(the mount table, the permission fix, the repository on the mounted path)
is real.  Needs root and permission to bind mount; skipped otherwise.
"""

import io
import os
import shutil
import stat
import tempfile

import ddt
import fixtures
from oslo_concurrency import processutils as putils
from oslo_config import fixture as config_fixture
import testtools

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.drivers import nfs
from cinder_chunked_ext.tests import fakes

SHARE = 'nfs.test.invalid:/srv/cinder-backup'
BLOCK = 4096

_bind_mount_problem = []


def in_mount_table(path):
    """True when the kernel lists a mount at ``path``.

    ``os.path.ismount`` cannot tell: a bind mount within one file system
    keeps the device number of its parent.
    """
    path = os.path.realpath(path)
    with open('/proc/mounts') as mounts:
        return any(line.split()[1:2] == [path] for line in mounts)


def bind_mount_problem():
    """None when bind mounts work here, else why they do not (cached)."""
    if not _bind_mount_problem:
        _bind_mount_problem.append(_probe_bind_mount())
    return _bind_mount_problem[0]


def _probe_bind_mount():
    if os.geteuid() != 0:
        return 'bind mounts need root; running as uid %d' % os.geteuid()
    tmp = tempfile.mkdtemp(prefix='nfs-probe-')
    source = os.path.join(tmp, 'source')
    target = os.path.join(tmp, 'target')
    os.mkdir(source)
    os.mkdir(target)
    try:
        putils.execute('mount', '--bind', source, target)
    except (putils.ProcessExecutionError, OSError) as e:
        return 'mount --bind is not permitted here: %s' % (
            getattr(e, 'stderr', None) or e)
    else:
        putils.execute('umount', target)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@ddt.ddt
class BindMountedShareTest(testtools.TestCase):

    def setUp(self):
        super().setUp()
        problem = bind_mount_problem()
        if problem:
            self.skipTest(problem)
        # The directory that plays the NFS export, and the mount base.
        self.export = self.useFixture(fixtures.TempDir()).path
        os.chmod(self.export, 0o700)
        self.base = self.useFixture(fixtures.TempDir()).path
        conf = self.useFixture(config_fixture.Config(nfs.CONF))
        conf.config(backup_share=SHARE,
                    backup_mount_point_base=self.base,
                    backup_mount_options=None,
                    backup_mount_attempts=2,
                    backup_file_size=4 * BLOCK,
                    backup_sha_block_size_bytes=BLOCK,
                    backup_compression_algorithm='zlib',
                    backup_container=None)
        self.env = fakes.FakeEnvironment()
        self.commands = []
        self.mount_point = nfs.mount_point_for(self.base, SHARE)
        # Registered after the temporary directories: runs before them.
        self.addCleanup(self._unmount)

    def _unmount(self):
        for _attempt in range(5):
            if not in_mount_table(self.mount_point):
                return
            try:
                putils.execute('umount', self.mount_point)
            except putils.ProcessExecutionError:
                putils.execute('umount', '-l', self.mount_point)
        self.fail('%s is still mounted' % self.mount_point)

    def _execute(self, *cmd, **kwargs):
        """Run the driver's command as root, the NFS mount as a bind."""
        cmd = list(cmd)
        self.commands.append(cmd)
        if cmd[:3] == ['mount', '-t', 'nfs']:
            self.assertEqual(SHARE, cmd[-2])
            cmd = ['mount', '--bind', self.export, cmd[-1]]
        # We are root already; the root helper may not be installed.
        kwargs.pop('root_helper', None)
        kwargs.pop('run_as_root', None)
        return putils.execute(*cmd, **kwargs)

    def _use_path(self, path):
        if path == 'os-brick':
            if nfs.remotefs_brick is None:
                self.skipTest('os-brick is not installed in this '
                              'environment')
        else:
            self.useFixture(fixtures.MonkeyPatch(
                'cinder_chunked_ext.drivers.nfs.remotefs_brick', None))

    def make_driver(self):
        driver = nfs.NFSBackupDriver(fakes.FakeContext(self.env))
        driver._execute = self._execute
        return driver

    def mounts(self):
        return [c for c in self.commands if c[0] == 'mount']

    @ddt.data('os-brick', 'mount command')
    def test_backup_restore_bind_mounted_share_files_in_export(self, path):
        self._use_path(path)
        data = bytearray(os.urandom(10 * BLOCK))
        data[4 * BLOCK:6 * BLOCK] = bytes(2 * BLOCK)
        data = bytes(data)

        driver = self.make_driver()
        self.assertFalse(in_mount_table(self.mount_point))
        self.assertEqual([], self.commands)

        driver.check_for_setup_error()

        self.assertTrue(in_mount_table(self.mount_point))
        self.assertEqual(1, len(self.mounts()))
        # The export was 0700: the permission fix went through the mount.
        self.assertIn(['chmod', '-R', 'g+w', self.mount_point],
                      self.commands)
        self.assertTrue(os.stat(self.export).st_mode & stat.S_IWGRP)

        backup = self.env.new_backup()
        driver.backup(backup, io.BytesIO(data))

        in_export = os.path.join(self.export, backup.container)
        names = sorted(os.listdir(in_export))
        self.assertIn(backup.service_metadata + '_metadata', names)
        self.assertIn(backup.service_metadata + '_sha256file', names)
        self.assertGreater(len(names), 3)
        for name in names:
            mode = os.stat(os.path.join(in_export, name)).st_mode
            self.assertEqual(0o660, stat.S_IMODE(mode))

        backup.status = cinder_compat.BackupStatus.RESTORING
        target = io.BytesIO(bytes(len(data)))
        restorer = self.make_driver()
        restorer.restore(backup, backup.volume_id, target, True)

        self.assertEqual(data, target.getvalue())
        self.assertEqual(1, len(self.mounts()))

    @ddt.data('os-brick', 'mount command')
    def test_first_backup_mounts_lazily_then_reused(self, path):
        self._use_path(path)
        first = self.make_driver()
        second = self.make_driver()
        self.assertFalse(in_mount_table(self.mount_point))

        backup = self.env.new_backup()
        first.backup(backup, io.BytesIO(os.urandom(3 * BLOCK)))
        self.assertTrue(in_mount_table(self.mount_point))

        second.delete_backup(backup)

        self.assertEqual(1, len(self.mounts()))
        self.assertEqual(
            [], os.listdir(os.path.join(self.export, backup.container)))

    def test_mount_failing_once_then_binding_succeeds(self):
        self._use_path('mount command')
        failures = [putils.ProcessExecutionError(
            exit_code=32, stderr='mount.nfs: Connection timed out')]

        def flaky(*cmd, **kwargs):
            if cmd[0] == 'mount' and failures:
                self.commands.append(list(cmd))
                raise failures.pop()
            return self._execute(*cmd, **kwargs)
        driver = self.make_driver()
        driver._execute = flaky
        driver.mounter.sleep = lambda delay: None

        driver.check_for_setup_error()

        self.assertEqual(2, len(self.mounts()))
        self.assertTrue(in_mount_table(self.mount_point))
