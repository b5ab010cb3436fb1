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

"""End-to-end tests of ``cinder-chunked-backup``, the real command.

Every test runs ``python -m cinder_chunked_ext`` in a subprocess (so no
installation is needed) against a repository in a temporary directory,
with a configuration file that sets a small geometry: 64 KiB hash blocks
and 256 KiB objects, so a volume of about 1 MiB gives several objects.
``XDG_DATA_HOME`` points into the temporary directory too, so nothing is
written to the user's home.
"""

import glob
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
from unittest import mock

import ddt
import fixtures
from oslo_config import fixture as config_fixture
import testtools

import cinder_chunked_ext
from cinder_chunked_ext.tool import catalog
from cinder_chunked_ext.tool import cli
from cinder_chunked_ext.tool import commands as handlers
from cinder_chunked_ext.tool import demo
from cinder_chunked_ext.tool import session

KiB = 1024
MiB = 1024 * KiB
SHA = 64 * KiB
CHUNK = 4 * SHA
PROG = 'cinder-chunked-backup'
SOURCE_ROOT = os.path.dirname(os.path.dirname(
    os.path.abspath(cinder_chunked_ext.__file__)))
TIMEOUT = 120


def write_volume(path, size=4 * CHUNK + 1000, seed=1):
    """Random data, a zero chunk and text; the last block is partial."""
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(size))
    data[CHUNK:2 * CHUNK] = bytes(CHUNK)
    text = b'cinder chunked backup text\n' * (CHUNK // 27 + 1)
    data[2 * CHUNK:3 * CHUNK] = text[:CHUNK]
    with open(path, 'wb') as f:
        f.write(data)
    return bytes(data)


def only_catalog(env):
    """The one catalog of an object store repository (nfs, s3, swift)."""
    found = glob.glob(os.path.join(env['XDG_DATA_HOME'], session.APP_DIR,
                                   session.CATALOGS_DIR, '*.sqlite3'))
    assert len(found) == 1, found
    return found[0]


def overwrite(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


class CliTestCase(testtools.TestCase):
    """Runs the command line in a scratch directory."""

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.repo = os.path.join(self.tmp, 'repo')
        self.conf = self.write_config()
        self.volume = os.path.join(self.tmp, 'volume.img')
        self.env = dict(os.environ)
        self.env['XDG_DATA_HOME'] = os.path.join(self.tmp, 'xdg')
        self.env['PYTHONPATH'] = os.pathsep.join(
            [SOURCE_ROOT] + [p for p in os.environ.get(
                'PYTHONPATH', '').split(os.pathsep) if p])
        self.env.pop('PYTHONWARNINGS', None)

    def write_config(self, name='cinder.conf', chunked=None, **options):
        """A cinder.conf with the test geometry and ``options``.

        ``chunked`` holds options of the ``[chunked_backup]`` group.
        """
        values = {'backup_file_size': CHUNK,
                  'backup_sha_block_size_bytes': SHA,
                  'backup_compression_algorithm': 'zlib'}
        values.update(options)
        group = {'workers': 2}
        group.update(chunked or {})
        lines = ['[DEFAULT]']
        lines += ['%s = %s' % item for item in sorted(values.items())]
        lines += ['[chunked_backup]']
        lines += ['%s = %s' % item for item in sorted(group.items())]
        lines += ['']
        path = os.path.join(self.tmp, name)
        with open(path, 'w') as f:
            f.write('\n'.join(lines))
        return path

    def base_args(self):
        return ['--config-file', self.conf, '--repository', self.repo]

    def run_cli(self, *args, expect=0, base=None, stdin=None, stderr=None):
        """Run the command and return ``(stdout, stderr)`` as text.

        Checks the exit status and that no traceback was printed.
        """
        cmd = [sys.executable, '-m', 'cinder_chunked_ext']
        cmd += self.base_args() if base is None else base
        cmd += list(args)
        proc = subprocess.run(
            cmd, env=self.env, cwd=self.tmp, timeout=TIMEOUT,
            input=stdin, stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.PIPE)
        out = proc.stdout.decode('utf-8', 'replace')
        err = (proc.stderr or b'').decode('utf-8', 'replace')
        detail = '%s\nexit %d\nstdout:\n%s\nstderr:\n%s' % (
            ' '.join(cmd), proc.returncode, out, err)
        self.assertEqual(expect, proc.returncode, detail)
        self.assertNotIn('Traceback', err, detail)
        return out, err

    def run_json(self, *args, expect=0, **kwargs):
        out, err = self.run_cli('--json', *args, expect=expect, **kwargs)
        return json.loads(out), err

    def create(self, *extra, volume=None):
        doc, _err = self.run_json('backup', 'create', volume or self.volume,
                                  *extra)
        self.assertEqual('available', doc['status'])
        return doc

    def repository_files(self):
        """Every file of the repository but the catalog."""
        return sorted(os.path.join(dirpath, name)
                      for dirpath, _dirs, names in os.walk(self.repo)
                      for name in names
                      if not name.startswith('catalog.sqlite3'))

    def object_path(self, doc, number):
        return os.path.join(self.repo, doc['container'], '%s-%05d' % (
            doc['service_metadata'], number))


class TestBackupRestore(CliTestCase):

    def test_full_and_incremental_restore_byte_for_byte(self):
        original = write_volume(self.volume)
        full = self.create('--name', 'first', '--description', 'd')
        self.assertFalse(full['incremental'])
        self.assertIsNone(full['parent_id'])
        self.assertEqual(5, full['object_count'])
        self.assertEqual(len(original), full['volume_size_bytes'])
        self.assertEqual(1, full['size_gib'])
        self.assertEqual('first', full['name'])
        self.assertEqual('posix', full['driver'])
        self.assertGreaterEqual(full['seconds'], 0)

        overwrite(self.volume, SHA, b'\x01' * 100)
        overwrite(self.volume, 3 * CHUNK + SHA, b'\x02' * SHA)
        changed_sha = demo.file_sha256(self.volume)
        incr = self.create('--incremental')
        self.assertEqual(full['id'], incr['parent_id'])
        self.assertTrue(incr['incremental'])
        self.assertEqual(2, incr['object_count'])
        self.assertEqual(full['volume_id'], incr['volume_id'])

        listing, _err = self.run_json('backup', 'list')
        self.assertEqual([full['id'], incr['id']],
                         [b['id'] for b in listing['backups']])
        shown, _err = self.run_json('backup', 'show', full['id'][:8])
        self.assertEqual([incr['id']], shown['children'])

        out, _err = self.run_cli('verify', incr['id'])
        self.assertIn('OK', out)

        target = os.path.join(self.tmp, 'restored.img')
        done, _err = self.run_json('restore', incr['id'], target)
        self.assertEqual('new', done['mode'])
        self.assertEqual([incr['id'], full['id']], done['chain'])
        self.assertEqual('catalog', done['source'])
        self.assertEqual(changed_sha, demo.file_sha256(target))

        # A non-empty target is only overwritten when asked to.
        _out, err = self.run_cli('restore', full['id'], target, expect=2)
        self.assertIn('--existing', err)
        self.run_cli('restore', '--existing', full['id'], target)
        self.assertEqual(hashlib.sha256(original).hexdigest(),
                         demo.file_sha256(target))

    def test_delete_refuses_parent_then_deletes_child_and_parent(self):
        write_volume(self.volume)
        full = self.create()
        overwrite(self.volume, 0, b'\x05' * 10)
        incr = self.create('--incremental')

        _out, err = self.run_cli('backup', 'delete', full['id'], expect=2)
        self.assertIn('dependent', err)
        self.assertIn(incr['id'], err)
        self.assertTrue(os.path.exists(self.object_path(full, 1)))

        self.run_cli('backup', 'delete', incr['id'])
        doc, _err = self.run_json('backup', 'delete', full['id'])
        self.assertEqual({'id': full['id'], 'deleted': True}, doc)
        listing, _err = self.run_json('backup', 'list')
        self.assertEqual([], listing['backups'])
        self.assertEqual([], self.repository_files())

    def test_backup_from_stdin_with_size_restores_identical(self):
        data = write_volume(self.volume, size=3 * CHUNK + 17)
        doc, _err = self.run_json('backup', 'create', '-', '--size',
                                  '1M', '--volume-id', 'stream-volume',
                                  stdin=data)
        self.assertEqual(len(data), doc['volume_size_bytes'])
        self.assertEqual('stream-volume', doc['volume_id'])
        target = os.path.join(self.tmp, 'out.img')
        self.run_cli('restore', doc['id'], target)
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(target))


class TestVerify(CliTestCase):

    def test_verify_names_every_damaged_missing_and_extra_object(self):
        write_volume(self.volume)
        full = self.create()
        # Object 1 holds random data: flip a byte in the middle of it.
        damaged = self.object_path(full, 1)
        with open(damaged, 'r+b') as f:
            f.seek(os.path.getsize(damaged) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xff]))
        os.remove(self.object_path(full, 4))
        shutil.copy(self.object_path(full, 2), self.object_path(full, 9))

        doc, err = self.run_json('verify', full['id'], expect=1)
        self.assertFalse(doc['ok'])
        problems = {p['object']: p['problem']
                    for p in doc['backups'][0]['problems']}
        name = os.path.basename
        self.assertIn(name(self.object_path(full, 1)), problems)
        self.assertIn('missing', problems[name(self.object_path(full, 4))])
        self.assertIn('not in the metadata',
                      problems[name(self.object_path(full, 9))])
        self.assertNotIn(name(self.object_path(full, 2)), problems)
        self.assertIn('verification failed', err)

        # Human output names the damaged object too.
        out, _err = self.run_cli('verify', '--all', expect=1)
        self.assertIn(name(self.object_path(full, 1)), out)

        # A restore refuses, and leaves no half-written new target.
        target = os.path.join(self.tmp, 'restored.img')
        _out, err = self.run_cli('restore', full['id'], target, expect=1)
        self.assertFalse(os.path.exists(target))
        self.assertEqual(1, len(err.strip().splitlines()), err)

    def test_verify_detects_sha256file_claiming_unstored_change(self):
        write_volume(self.volume)
        full = self.create()
        incr = self.create('--incremental')     # nothing changed
        self.assertEqual(0, incr['object_count'])
        shafile = os.path.join(self.repo, incr['container'],
                               incr['service_metadata'] + '_sha256file')
        with open(shafile) as f:
            doc = json.load(f)
        doc['sha256s'][2] = 'f' * 64
        with open(shafile, 'w') as f:
            json.dump(doc, f, sort_keys=True, indent=2)

        report, _err = self.run_json('verify', incr['id'], expect=1)
        problems = report['backups'][0]['problems']
        self.assertEqual(1, len(problems), problems)
        self.assertEqual(incr['id'], problems[0]['backup_id'])
        self.assertIn('changed since backup %s' % full['id'],
                      problems[0]['problem'])
        self.assertIn('block 2', problems[0]['problem'])


class TestDisasterRecovery(CliTestCase):

    def test_scan_and_restore_without_catalog(self):
        write_volume(self.volume)
        full = self.create()
        overwrite(self.volume, 2 * CHUNK, b'\x07' * (SHA + 5))
        expected = demo.file_sha256(self.volume)
        incr = self.create('--incremental')
        os.remove(os.path.join(self.repo, 'catalog.sqlite3'))

        scan, _err = self.run_json('repository', 'scan')
        found = {b['id']: b for b in scan['backups']}
        self.assertEqual({full['id'], incr['id']}, set(found))
        entry = found[incr['id']]
        self.assertEqual(full['id'], entry['parent_id'])
        self.assertFalse(entry['in_catalog'])
        self.assertIsNone(entry['error'])
        self.assertEqual(incr['service_metadata'], entry['prefix'])
        self.assertFalse(os.path.exists(
            os.path.join(self.repo, 'catalog.sqlite3')))

        target = os.path.join(self.tmp, 'dr.img')
        done, _err = self.run_json('restore', '--from-repository',
                                   entry['container'], entry['prefix'],
                                   target)
        self.assertEqual('repository', done['source'])
        self.assertEqual([incr['id'], full['id']], done['chain'])
        self.assertEqual(expected, demo.file_sha256(target))
        self.assertEqual(os.path.getsize(self.volume),
                         os.path.getsize(target))

        report, _err = self.run_json('verify', '--from-repository',
                                     entry['container'], entry['prefix'])
        self.assertTrue(report['ok'])

        _out, err = self.run_cli('restore', '--from-repository',
                                 entry['container'], 'no_such_prefix',
                                 os.path.join(self.tmp, 'x.img'), expect=3)
        self.assertIn('no_such_prefix', err)


@ddt.ddt
class TestBadInput(CliTestCase):
    """Expected errors: one line on stderr, the documented exit status."""

    def check_one_line(self, err, needle):
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertEqual(1, len(lines), err)
        self.assertTrue(lines[0].startswith(PROG + ': error: '), err)
        self.assertIn(needle, lines[0])

    @ddt.unpack
    @ddt.data(
        (['backup', 'create', 'missing.img'], 3, 'does not exist'),
        (['backup', 'show', '0123456789'], 3, 'no backup 0123456789'),
        (['restore', 'deadbeef', 'x.img'], 3, 'no backup deadbeef'),
        (['verify'], 2, 'backup ID or --all'),
        (['backup', 'create', '.'], 2, 'is a directory'),
        (['--compression', 'lzma', 'backup', 'create', 'volume.img'], 2,
         '--compression lzma'),
        (['backup', 'create', '--incremental', 'volume.img'], 2,
         'make a full backup first'),
        (['backup', 'create', '--container', '../up', 'volume.img'], 2,
         'unsafe path'),
    )
    def test_bad_request_exit_status_and_message(self, args, code, needle):
        os.makedirs(self.repo)
        write_volume(self.volume, size=CHUNK)
        _out, err = self.run_cli(*args, expect=code)
        self.check_one_line(err, needle)

    @ddt.unpack
    @ddt.data(
        ({'backup_file_size': 100000}, 'not a positive multiple'),
        ({'backup_compression_algorithm': 'lzma'}, 'configuration'),
    )
    def test_wrong_driver_options_refused(self, options, needle):
        self.conf = self.write_config('bad.conf', **options)
        write_volume(self.volume, size=CHUNK)
        _out, err = self.run_cli('backup', 'create', self.volume, expect=2)
        self.check_one_line(err, needle)
        recorded = catalog.Catalog(os.path.join(self.repo, 'catalog.sqlite3'),
                                   create=False)
        self.assertEqual([], recorded.list())

    def test_missing_and_unparsable_config_file(self):
        missing = os.path.join(self.tmp, 'missing.conf')
        _out, err = self.run_cli('backup', 'list', expect=3,
                                 base=['--config-file', missing])
        self.check_one_line(err, 'missing.conf')
        broken = os.path.join(self.tmp, 'broken.conf')
        with open(broken, 'w') as f:
            f.write('[DEFAULT\nbackup_file_size = 1\n')
        doc, err = self.run_json('backup', 'list', expect=2,
                                 base=['--config-file', broken])
        self.assertEqual(2, doc['exit_code'])
        self.check_one_line(err, 'configuration')

    def test_corrupted_catalog_refused(self):
        os.makedirs(self.repo)
        with open(os.path.join(self.repo, 'catalog.sqlite3'), 'wb') as f:
            f.write(b'garbage' * 1000)
        _out, err = self.run_cli('backup', 'list', expect=2)
        self.check_one_line(err, 'catalog.sqlite3')

    def test_help_documents_json_output_and_exit_status(self):
        out, _err = self.run_cli('--help', base=[])
        for needle in ('JSON output', 'Exit status', '130', 'backup',
                       'restore', 'verify', 'repository', 'demo'):
            self.assertIn(needle, out)


class TestInProcess(CliTestCase):
    """``cli.main(argv)`` called in this process, for faults."""

    def main(self, *argv):
        os.makedirs(self.repo, exist_ok=True)
        self.useFixture(config_fixture.Config())
        self.useFixture(fixtures.EnvironmentVariable(
            'XDG_DATA_HOME', self.env['XDG_DATA_HOME']))
        stdout = io.StringIO()
        stderr = io.StringIO()
        with mock.patch('sys.stdout', stdout), \
                mock.patch('sys.stderr', stderr):
            code = cli.main(list(argv))
        return code, stdout.getvalue(), stderr.getvalue()

    def test_unexpected_error_is_one_line_with_debug_hint(self):
        with mock.patch.object(handlers, 'cmd_backup_list',
                               side_effect=RuntimeError('boom\nsecond')):
            code, _out, err = self.main(*self.base_args(), 'backup', 'list')
        self.assertEqual(1, code)
        self.assertEqual(
            '%s: error: RuntimeError: boom second (unexpected error; run '
            'with --debug for details)\n' % PROG, err)

    def test_debug_shows_the_traceback(self):
        with mock.patch.object(handlers, 'cmd_backup_list',
                               side_effect=RuntimeError('boom')):
            code, _out, err = self.main(*self.base_args(), '--debug',
                                        'backup', 'list')
        self.assertEqual(1, code)
        self.assertIn('Traceback', err)
        self.assertIn('RuntimeError: boom', err)

    def test_os_error_is_expected_error_without_hint(self):
        error = PermissionError(13, 'Permission denied', '/x/y')
        with mock.patch.object(handlers, 'cmd_backup_list', side_effect=error):
            code, _out, err = self.main(*self.base_args(), '--json',
                                        'backup', 'list')
        self.assertEqual(1, code)
        self.assertEqual('%s: error: /x/y: Permission denied\n' % PROG, err)
        self.assertEqual(1, json.loads(_out)['exit_code'])


class TestWithCinder(CliTestCase):
    """The tool with Cinder's own classes, where Cinder is installed."""

    def test_round_trip_with_cinder_imported(self):
        self.env[session.WITH_CINDER_ENV] = '1'
        have_cinder = importlib.util.find_spec('cinder') is not None
        data = write_volume(self.volume)
        full, err = self.run_json('--debug', 'backup', 'create',
                                  self.volume)
        self.assertIn('with Cinder' if have_cinder else 'without Cinder',
                      err)
        self.run_cli('verify', full['id'])
        target = os.path.join(self.tmp, 'restored.img')
        self.run_cli('restore', full['id'], target)
        self.assertEqual(hashlib.sha256(data).hexdigest(),
                         demo.file_sha256(target))
        _out, err = self.run_cli('backup', 'show', 'nope', expect=3)
        self.assertEqual(1, len(err.strip().splitlines()), err)
