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

"""Faults of a POSIX repository, injected for real.

Each test breaks the repository the way production does and checks what
the operator sees and what is left behind:

* a full file system: a 2 MiB tmpfs mounted on the repository;
* permission denied: the repository (or the backup's directory) is not
  writable for the service's user (``nobody``, in a forked child so that
  the permission bits apply), or is immutable (``chattr +i``) for root;
* a read-only repository: a read-only bind mount of it;
* the tool killed with SIGKILL in the middle of a backup.

In every case the operation fails with one clear error line, no backup is
left marked available that cannot be restored, the source volume is not
modified and nothing is written outside the repository and the restore
target.  Mounts need root (``CAP_SYS_ADMIN``); those tests are skipped
with the reason otherwise.  The driver is exercised in this process (as
cinder-backup runs it) and the command line in a subprocess.
"""

import bz2
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from oslo_config import cfg
from oslo_config import fixture as config_fixture

from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests.functional import fifo as fifo_lib
from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tool import catalog
from cinder_chunked_ext.tool import demo
from cinder_chunked_ext.tool import session

KiB = test_cli.KiB
MiB = test_cli.MiB
SHA = test_cli.SHA
CHUNK = test_cli.CHUNK
PROG = test_cli.PROG
TIMEOUT = test_cli.TIMEOUT
TEMP_MARK = '.tmp-'


def random_volume(path, size, seed=5):
    data = random.Random(seed).randbytes(size)
    with open(path, 'wb') as f:
        f.write(data)
    return data


def mounted(path):
    """True when ``path`` is a mount point in /proc/mounts."""
    real = os.path.realpath(path)
    with open('/proc/mounts') as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1:
                point = fields[1].encode().decode('unicode_escape')
                if point == real:
                    return True
    return False


class FaultTestCase(test_cli.CliTestCase):
    """The command line's scratch directory plus fault helpers."""

    def setUp(self):
        super().setUp()
        self.conf_fixture = self.useFixture(config_fixture.Config(cfg.CONF))
        self.target = os.path.join(self.tmp, 'restored.img')

    # -- what must not change -------------------------------------------

    def outside(self, *inside):
        """Files of the scratch directory outside the repository.

        ``{relative path: (size, mtime)}``; ``inside`` are further paths
        (restore targets, catalogs, mount points) allowed to change.
        """
        skip = [os.path.realpath(p) for p in
                (self.repo,) + inside]
        found = {}
        for dirpath, dirnames, names in os.walk(self.tmp):
            dirnames[:] = [d for d in dirnames
                           if os.path.realpath(os.path.join(dirpath, d))
                           not in skip]
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.realpath(path) in skip:
                    continue
                st = os.lstat(path)
                found[os.path.relpath(path, self.tmp)] = (st.st_size,
                                                          st.st_mtime_ns)
        return found

    def files_under(self, root):
        return sorted(os.path.relpath(os.path.join(d, n), root)
                      for d, _dirs, names in os.walk(root) for n in names)

    def temp_files(self, root):
        return [f for f in self.files_under(root)
                if os.path.basename(f).startswith(TEMP_MARK)]

    def documents(self, root):
        return [f for f in self.files_under(root)
                if f.endswith('_metadata') or f.endswith('_sha256file')]

    def records(self, path=None):
        cat = catalog.Catalog(path or os.path.join(self.repo,
                                                   session.CATALOG_NAME),
                              create=False)
        self.addCleanup(cat.close)
        return cat.list()

    def check_one_line(self, err, *needles):
        lines = [line for line in err.splitlines()
                 if line.startswith(PROG + ': error: ')]
        self.assertEqual(1, len(lines), err)
        for needle in needles:
            self.assertIn(needle, lines[0])
        return lines[0]

    # -- privileges and mounts ------------------------------------------

    def need_root(self, what):
        if os.geteuid() != 0:
            self.skipTest('%s needs root (running as uid %d)'
                          % (what, os.geteuid()))

    def run_root(self, *cmd, skip_reason=None):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
        if proc.returncode and skip_reason:
            self.skipTest('%s: %s failed: %s' % (
                skip_reason, ' '.join(cmd),
                proc.stdout.decode(errors='replace').strip()))
        self.assertEqual(0, proc.returncode, proc.stdout)

    def add_unmount(self, point):
        def unmount():
            subprocess.run(['umount', point], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)
            if mounted(point):
                subprocess.run(['umount', '-l', point], timeout=60)
                raise AssertionError('%s was still mounted' % point)
        self.addCleanup(unmount)

    def mount_tmpfs(self, point, size):
        self.need_root('mounting a tmpfs')
        os.makedirs(point, exist_ok=True)
        self.run_root('mount', '-t', 'tmpfs', '-o', 'size=%d' % size,
                      'tmpfs', point, skip_reason='cannot mount a tmpfs')
        self.add_unmount(point)
        self.assertTrue(mounted(point))

    def bind_read_only(self, source, point):
        self.need_root('a read-only bind mount')
        os.makedirs(point, exist_ok=True)
        self.run_root('mount', '--bind', source, point,
                      skip_reason='cannot bind mount')
        self.add_unmount(point)
        self.run_root('mount', '-o', 'remount,bind,ro', point,
                      skip_reason='cannot remount read-only')

    def free_bytes(self, path):
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    # -- the driver in this process -------------------------------------

    def driver(self, repo, compression='zlib'):
        self.conf_fixture.config(
            backup_file_size=CHUNK, backup_sha_block_size_bytes=SHA,
            backup_compression_algorithm=compression,
            backup_container=None, backup_enable_progress_timer=False)
        self.conf_fixture.config(workers=2, group=chunked.PIPELINE_GROUP)
        self.fake_env = fakes.FakeEnvironment()
        return posix.PosixBackupDriver(fakes.FakeContext(self.fake_env),
                                       backup_path=repo)

    def fake_record(self, doc, status='restoring'):
        """A driver-side record of a backup the command line made."""
        return self.fake_env.new_backup(
            doc['size_gib'], id=doc['id'], volume_id=doc['volume_id'],
            container=doc['container'],
            service_metadata=doc['service_metadata'],
            parent_id=doc['parent_id'], status=status)

    def driver_restore(self, driver, doc, size):
        backup = self.fake_record(doc)
        with open(self.target, 'w+b') as f:
            f.truncate(size)
            driver.restore(backup, doc['volume_id'], f, True)
        with open(self.target, 'rb') as f:
            return f.read()


class TestRepositoryFull(FaultTestCase):
    """ENOSPC: the repository is a 2 MiB tmpfs."""

    def setUp(self):
        super().setUp()
        self.mount_tmpfs(self.repo, 2 * MiB)

    def fill_leaving(self, free):
        """Fill the repository until ``free`` bytes are left."""
        with open(os.path.join(self.repo, 'filler'), 'wb') as f:
            f.write(bytes(self.free_bytes(self.repo) - free))
        self.assertEqual(free, self.free_bytes(self.repo))

    def check_clean(self, backup_id, err):
        """After a failed backup: nothing of it is left, and the space."""
        self.assertEqual([], self.documents(self.repo))
        self.assertEqual([], self.temp_files(self.repo))
        self.assertEqual([], [f for f in self.files_under(self.repo)
                              if backup_id in f])
        records = self.records()
        self.assertEqual(1, len(records))
        self.assertEqual(catalog.ERROR, records[0].status)
        self.assertIn('No space left on device', records[0].fail_reason)
        # Neither restorable nor a parent for an incremental backup.
        _out, err = self.run_cli('restore', backup_id, self.target,
                                 expect=2)
        self.check_one_line(err, 'is error')
        self.assertFalse(os.path.exists(self.target))
        _out, err = self.run_cli('backup', 'create', '--incremental',
                                 self.volume, expect=2)
        self.check_one_line(err, 'make a full backup first')

    def test_backup_volume_larger_than_repository_error_nothing_left(self):
        data = random_volume(self.volume, 4 * MiB)
        before = self.outside()
        out, err = self.run_json('backup', 'create', self.volume, expect=1)
        line = self.check_one_line(err, 'No space left on device',
                                   self.repo)
        record = self.records()[0]
        self.assertIn(record.id, line)          # the object's name
        self.assertEqual(1, out['exit_code'])
        self.check_clean(record.id, err)
        self.assertEqual(before, self.outside(self.target))
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(self.volume))

        # The space is free again: a volume that fits is backed up.
        small = random_volume(self.volume, CHUNK + 10, seed=9)
        doc = self.create()
        self.run_cli('restore', doc['id'], self.target)
        with open(self.target, 'rb') as f:
            self.assertEqual(small, f.read())

    def test_backup_repository_fills_at_last_document_error_nothing_left(
            self):
        # Make the catalog exist, then leave room for the data objects
        # (raw: compression is off) but not for the two documents.
        self.conf = self.write_config(backup_compression_algorithm='none')
        random_volume(self.volume, 4 * CHUNK, seed=6)
        doc = self.create()
        self.run_cli('backup', 'delete', doc['id'])
        self.fill_leaving(4 * CHUNK)
        before = self.outside()
        _out, err = self.run_cli('backup', 'create', self.volume, expect=1)
        records = self.records()
        self.assertEqual(1, len(records))
        line = self.check_one_line(err, 'No space left on device',
                                   records[0].id)
        self.check_clean(records[0].id, err)
        self.assertTrue(line.endswith('_sha256file: No space left on device')
                        or line.endswith('-00004: No space left on device'),
                        line)
        self.assertEqual(before, self.outside(self.target))

    def test_driver_repository_full_permanent_error_no_metadata(self):
        driver = self.driver(self.repo, compression='none')
        data = random_volume(self.volume, 4 * CHUNK)
        self.fill_leaving(4 * CHUNK)
        backup = self.fake_env.new_backup(1)
        with open(self.volume, 'rb') as f:
            exc = self.assertRaises(exception.PermanentStoreError,
                                    driver.backup, backup, f)
        message = str(exc)
        self.assertIn('No space left on device', message)
        self.assertIn(self.repo, message)
        self.assertIn(backup.service_metadata + '_sha256file', message)
        self.assertEqual('creating', backup.status)
        self.assertEqual([], self.documents(self.repo))
        self.assertEqual([], self.temp_files(self.repo))
        # As upstream: the data objects stay until the backup is deleted
        # (cinder-backup marks it error; deleting it frees the space).
        objects = [f for f in self.files_under(self.repo)
                   if backup.id in f]
        self.assertEqual(4, len(objects))
        driver.delete_backup(backup)
        self.assertEqual([], [f for f in self.files_under(self.repo)
                              if backup.id in f])
        self.assertGreaterEqual(self.free_bytes(self.repo), 4 * CHUNK)
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(self.volume))


class TestPermissionDenied(FaultTestCase):
    """The repository's permission bits deny the tool writing.

    Root bypasses permission bits, so as root the command runs without
    the capabilities that allow it (``setpriv``: no CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH or CAP_FOWNER), as a confined service would; as
    another user it runs as it is.
    """

    DROP = '-dac_override,-dac_read_search,-fowner'

    def setUp(self):
        super().setUp()
        self.prefix = []
        if os.geteuid() == 0:
            setpriv = shutil.which('setpriv')
            if setpriv is None:
                self.skipTest('root ignores permission bits, and setpriv '
                              '(to drop CAP_DAC_OVERRIDE) is not installed')
            self.prefix = [setpriv, '--bounding-set', self.DROP, '--']
            probe = subprocess.run(self.prefix + ['true'],
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
            if probe.returncode:
                self.skipTest('setpriv cannot drop capabilities here: %s'
                              % probe.stdout.decode(errors='replace'))

    def run_confined(self, *args, expect=0):
        """Run the command without permission-bypassing capabilities."""
        cmd = (self.prefix + [sys.executable, '-m', 'cinder_chunked_ext'] +
               self.base_args() + list(args))
        proc = subprocess.run(cmd, env=self.env, cwd=self.tmp,
                              timeout=TIMEOUT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        out = proc.stdout.decode('utf-8', 'replace')
        err = proc.stderr.decode('utf-8', 'replace')
        detail = '%s\nexit %d\nstdout:\n%s\nstderr:\n%s' % (
            ' '.join(cmd), proc.returncode, out, err)
        self.assertEqual(expect, proc.returncode, detail)
        self.assertNotIn('Traceback', err, detail)
        return out, err

    def test_backup_repository_not_writable_refused_restore_still_works(
            self):
        data = test_cli.write_volume(self.volume)
        first = self.create()
        os.chmod(self.repo, 0o500)
        self.addCleanup(os.chmod, self.repo, 0o700)
        repo_files = self.files_under(self.repo)
        before = self.outside(self.target)

        _out, err = self.run_confined('backup', 'create', self.volume,
                                      expect=1)
        self.check_one_line(err, 'not writable', self.repo)
        self.assertEqual(repo_files, self.files_under(self.repo))
        self.assertEqual([first['id']], [r.id for r in self.records()])

        # Reading is all a restore and a verification need (the catalog
        # in the repository cannot be written either: said, not fatal).
        self.run_confined('verify', first['id'])
        _out, err = self.run_confined('restore', first['id'], self.target)
        self.assertIn('cannot be written', err)
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(self.target))
        self.assertEqual([catalog.AVAILABLE],
                         [r.status for r in self.records()])
        self.assertEqual(before, self.outside(self.target))

    def test_backup_directory_not_writable_error_marked_nothing_written(
            self):
        data = test_cli.write_volume(self.volume)
        fixed = os.path.join(self.repo, 'fixed')
        os.makedirs(fixed)
        os.chmod(fixed, 0o500)
        self.addCleanup(os.chmod, fixed, 0o700)
        before = self.outside()

        _out, err = self.run_confined('backup', 'create', '--container',
                                      'fixed', self.volume, expect=1)
        record, = self.records()
        self.check_one_line(err, 'Permission denied', fixed, record.id)
        self.assertEqual(catalog.ERROR, record.status)
        self.assertIn('Permission denied', record.fail_reason)
        self.assertEqual([], os.listdir(fixed))
        self.assertEqual(before, self.outside())
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(self.volume))
        _out, err = self.run_confined('restore', record.id, self.target,
                                      expect=2)
        self.check_one_line(err, 'is error')
        self.assertFalse(os.path.exists(self.target))


class TestImmutableDirectory(FaultTestCase):
    """``chattr +i``: even root cannot create files in the directory."""

    def test_backup_immutable_directory_error_marked_nothing_written(self):
        self.need_root('chattr +i')
        if shutil.which('chattr') is None:
            self.skipTest('chattr is not installed')
        data = test_cli.write_volume(self.volume)
        fixed = os.path.join(self.repo, 'fixed')
        os.makedirs(fixed)
        self.run_root('chattr', '+i', fixed,
                      skip_reason='the file system has no immutable flag')
        self.addCleanup(subprocess.run, ['chattr', '-i', fixed],
                        timeout=60)
        before = self.outside()

        _out, err = self.run_cli('backup', 'create', '--container', 'fixed',
                                 self.volume, expect=1)
        record, = self.records()
        self.check_one_line(err, 'Operation not permitted', fixed,
                            record.id)
        self.assertEqual(catalog.ERROR, record.status)
        self.assertEqual([], os.listdir(fixed))
        self.assertEqual(before, self.outside())
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(self.volume))


class TestReadOnlyRepository(FaultTestCase):
    """A read-only bind mount of a repository holding one backup."""

    def setUp(self):
        super().setUp()
        self.data = test_cli.write_volume(self.volume)
        self.full = self.create()
        self.ro = os.path.join(self.tmp, 'ro')
        self.bind_read_only(self.repo, self.ro)
        self.repo_files = self.files_under(self.repo)

    def ro_args(self):
        return ['--config-file', self.conf, '--repository', self.ro]

    def test_backup_read_only_repository_refused_nothing_changed(self):
        before = self.outside(self.ro)
        _out, err = self.run_cli('backup', 'create', self.volume, expect=1,
                                 base=self.ro_args())
        self.check_one_line(err, 'not writable', self.ro)
        self.assertEqual(self.repo_files, self.files_under(self.repo))
        self.assertEqual([self.full['id']], [r.id for r in self.records()])
        self.assertEqual(before, self.outside(self.ro))
        self.assertEqual(hashlib.sha256(self.data).hexdigest(),
                         demo.file_sha256(self.volume))

    def test_driver_backup_read_only_repository_permanent_error(self):
        driver = self.driver(self.ro)
        backup = self.fake_env.new_backup(1)
        with open(self.volume, 'rb') as f:
            exc = self.assertRaises(exception.PermanentStoreError,
                                    driver.backup, backup, f)
        self.assertIn('Read-only file system', str(exc))
        self.assertIn(self.ro, str(exc))
        self.assertEqual(self.repo_files, self.files_under(self.repo))

    def test_restore_and_verify_from_read_only_repository_identical(self):
        before = self.outside(self.ro, self.target)
        expected = hashlib.sha256(self.data).hexdigest()
        # The catalog is in the read-only repository: the restore goes on
        # without marking the backup restoring, and says so.
        _out, err = self.run_cli('restore', self.full['id'], self.target,
                                 base=self.ro_args())
        self.assertIn('cannot be written', err)
        self.assertEqual(expected, demo.file_sha256(self.target))
        os.remove(self.target)
        self.run_cli('restore', '--from-repository', self.full['container'],
                     self.full['service_metadata'], self.target,
                     base=self.ro_args())
        self.assertEqual(expected, demo.file_sha256(self.target))
        os.remove(self.target)
        out, _err = self.run_cli('verify', self.full['id'],
                                 base=self.ro_args())
        self.assertIn('OK', out)
        restored = self.driver_restore(self.driver(self.ro), self.full,
                                       len(self.data))
        self.assertEqual(self.data, restored)
        self.assertEqual(self.repo_files, self.files_under(self.repo))
        self.assertEqual([catalog.AVAILABLE],
                         [r.status for r in self.records()])
        self.assertEqual(before, self.outside(self.ro, self.target))


class TestKilledBackup(FaultTestCase):
    """SIGKILL in the middle of a backup: no clean-up code runs at all.

    The volume is a FIFO fed chunk by chunk; objects are 2 MiB of text
    compressed with bz2, so each one takes a while to write.  After each
    chunk the tool is stopped (SIGSTOP) again and again until an object
    is being written (its temporary file exists), and killed there.
    """

    # Larger than a 4 MiB piece, and four of them more than the memory
    # bound below: streamed (the writer open while it compresses), not
    # compressed first and written whole.
    BIG = 6 * MiB
    IN_FLIGHT = 16 * MiB

    def data_objects(self, prefix=None):
        return [f for f in self.files_under(self.repo)
                if '_backup_' in f and
                not os.path.basename(f).startswith('.') and
                (prefix is None or prefix in f)]

    def stopped(self, proc):
        proc.send_signal(signal.SIGSTOP)
        _pid, status = os.waitpid(proc.pid, os.WUNTRACED)
        self.assertTrue(os.WIFSTOPPED(status), status)

    def kill_while_writing(self, proc, fd, chunks):
        """Feed ``chunks``; SIGKILL while an object is being written."""
        for number, chunk in enumerate(chunks, 1):
            os.write(fd, chunk)     # returns once the tool has read it
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                self.stopped(proc)
                temps = self.temp_files(self.repo)
                done = len(self.data_objects())
                if temps and done >= 2:
                    proc.send_signal(signal.SIGKILL)
                    return temps
                proc.send_signal(signal.SIGCONT)
                if done >= number:
                    break           # missed this object: feed the next
                time.sleep(0.002)
        self.fail('no object was caught while being written')

    def test_backup_killed_creating_not_restorable_delete_cleans_up(self):
        self.conf = self.write_config(
            backup_file_size=self.BIG, backup_compression_algorithm='bz2',
            chunked={'max_bytes_in_flight': self.IN_FLIGHT})
        fifo = os.path.join(self.tmp, 'stream')
        os.mkfifo(fifo)
        chunks = [b''.join(b'killed backup %d line %08d\n' % (n, i)
                           for i in range(self.BIG // 29 + 1))[:self.BIG]
                  for n in range(6)]
        fed = b''.join(chunks)
        cmd = ([sys.executable, '-m', 'cinder_chunked_ext'] +
               self.base_args() + ['backup', 'create', fifo, '--size',
                                   '64M', '--volume-id', 'vol-killed'])
        before = self.outside(fifo)
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        fd = fifo_lib.open_writer(self, fifo, proc)
        os.set_blocking(fd, True)
        try:
            temps_at_kill = self.kill_while_writing(proc, fd, chunks)
            proc.communicate(timeout=TIMEOUT)
        finally:
            os.close(fd)
        self.assertEqual(-signal.SIGKILL, proc.returncode)

        record, = self.records()
        self.assertEqual(catalog.CREATING, record.status)
        prefix = record.service_metadata
        self.assertEqual([], self.documents(self.repo))
        # Objects under their final names are complete: each holds its
        # chunk exactly.  The one being written is under a temporary name.
        objects = sorted(self.data_objects(prefix))
        self.assertGreaterEqual(len(objects), 2)
        for number, name in enumerate(objects):
            self.assertTrue(name.endswith('-%05d' % (number + 1)), name)
            with open(os.path.join(self.repo, name), 'rb') as f:
                stored = f.read()
            self.assertEqual(chunks[number], bz2.decompress(stored), name)
        temps = self.temp_files(self.repo)
        self.assertEqual(temps_at_kill, temps)
        for name in temps:
            self.assertIn(prefix, name)
        self.assertLess(len(objects) * self.BIG, len(fed))

        listing, _err = self.run_json('backup', 'list')
        self.assertEqual([catalog.CREATING],
                         [b['status'] for b in listing['backups']])
        report, err = self.run_json('verify', record.id, expect=1)
        problem, = report['backups'][0]['problems']
        self.assertEqual(prefix + '_metadata', problem['object'])
        self.assertIn('not found', problem['problem'])
        self.assertIn('verification failed for %s' % record.id, err)
        _out, err = self.run_cli('restore', record.id, self.target,
                                 expect=2)
        self.check_one_line(err, 'is creating')
        self.assertFalse(os.path.exists(self.target))
        _out, err = self.run_cli('backup', 'delete', record.id, expect=2)
        self.check_one_line(err, '--force')

        # Deleting it removes its objects and the temporary files.
        self.run_cli('backup', 'delete', '--force', record.id)
        self.assertEqual([], [f for f in self.files_under(self.repo)
                              if prefix in f])
        self.assertEqual([], self.records())
        self.assertEqual(before, self.outside(fifo))
