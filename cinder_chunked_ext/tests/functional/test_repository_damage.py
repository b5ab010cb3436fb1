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

"""A damaged or tampered POSIX repository, end to end.

A repository with a full backup and an incremental one on top is made
once per test process with the real command line, then copied for each
test, damaged on disk and read three ways: the driver's ``restore`` (as
cinder-backup runs it, in this process), the command's ``restore`` and
its ``verify`` (subprocesses).  Each kind of damage must be detected with
an error naming the backup and the object or document, and a restore
must write nothing at all: restores go onto an existing target filled
with a marker, so every byte written shows, and every object of the
chain is checked before the first write.

The full backup has five objects (test geometry: 64 KiB hash blocks,
256 KiB objects): 1 random data (stored raw), 2 zeros and 3 text (zlib),
4 random data (raw) and 5 a 1000-byte tail (raw).
"""

import atexit
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from unittest import mock

import ddt
from oslo_config import cfg
from oslo_config import fixture as config_fixture

from cinder_chunked_ext.drivers import posix
from cinder_chunked_ext.engine import driver as chunked
from cinder_chunked_ext import exception
from cinder_chunked_ext.tests import fakes
from cinder_chunked_ext.tests.functional import test_cli
from cinder_chunked_ext.tool import session

KiB = test_cli.KiB
MiB = test_cli.MiB
GiB = 1024 * MiB
SHA = test_cli.SHA
CHUNK = test_cli.CHUNK
PROG = test_cli.PROG
MARK = b'\xee'
OBJECTS = 5

_TEMPLATE = {}


def _build_template():
    """The repository every test starts from (made once per process)."""
    root = tempfile.mkdtemp(prefix='cinder-chunked-damage-')
    atexit.register(shutil.rmtree, root, True)
    case = test_cli.CliTestCase('run')
    case.tmp = root
    case.repo = os.path.join(root, 'repo')
    case.conf = case.write_config()
    case.volume = os.path.join(root, 'volume.img')
    case.env = dict(os.environ, XDG_DATA_HOME=os.path.join(root, 'xdg'))
    case.env['PYTHONPATH'] = os.pathsep.join(
        [test_cli.SOURCE_ROOT] + [p for p in os.environ.get(
            'PYTHONPATH', '').split(os.pathsep) if p])
    full_data = test_cli.write_volume(case.volume)
    full = _create(case)
    test_cli.overwrite(case.volume, SHA, b'\x01' * 100)
    test_cli.overwrite(case.volume, 3 * CHUNK + SHA, b'\x02' * SHA)
    with open(case.volume, 'rb') as f:
        incr_data = f.read()
    incr = _create(case, '--incremental')
    assert incr['object_count'] == 2, incr
    _TEMPLATE.update(repo=case.repo, conf=case.conf, full=full, incr=incr,
                     full_data=full_data, incr_data=incr_data)
    return _TEMPLATE


def _create(case, *args):
    cmd = [sys.executable, '-m', 'cinder_chunked_ext', '--json',
           '--config-file', case.conf, '--repository', case.repo,
           'backup', 'create', case.volume] + list(args)
    proc = subprocess.run(cmd, env=case.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=test_cli.TIMEOUT)
    if proc.returncode:
        raise RuntimeError('cannot build the test repository: %s'
                           % proc.stderr.decode(errors='replace'))
    return json.loads(proc.stdout)


def template():
    return _TEMPLATE or _build_template()


def flip_bit(path, index, mask=0x01):
    with open(path, 'r+b') as f:
        f.seek(index)
        byte = f.read(1)
        f.seek(index)
        f.write(bytes([byte[0] ^ mask]))


class DamageTestCase(test_cli.CliTestCase):
    """A fresh copy of the template repository, and ways to read it."""

    def setUp(self):
        super().setUp()
        tpl = template()
        shutil.copytree(tpl['repo'], self.repo, symlinks=True)
        shutil.copy(tpl['conf'], self.conf)
        self.full = dict(tpl['full'])
        self.incr = dict(tpl['incr'])
        self.full_data = tpl['full_data']
        self.incr_data = tpl['incr_data']
        self.target = os.path.join(self.tmp, 'target.img')
        self.conf_fixture = self.useFixture(config_fixture.Config(cfg.CONF))
        self.before = None

    # -- the repository ------------------------------------------------

    def container(self, doc):
        return os.path.join(self.repo, doc['container'])

    def object_name(self, doc, number):
        return '%s-%05d' % (doc['service_metadata'], number)

    def object_path(self, doc, number):
        return os.path.join(self.container(doc),
                            self.object_name(doc, number))

    def document_name(self, doc, kind):
        return '%s_%s' % (doc['service_metadata'], kind)

    def document_path(self, doc, kind):
        return os.path.join(self.container(doc),
                            self.document_name(doc, kind))

    def load(self, doc, kind='metadata'):
        with open(self.document_path(doc, kind)) as f:
            return json.load(f)

    def save(self, doc, document, kind='metadata'):
        with open(self.document_path(doc, kind), 'w') as f:
            json.dump(document, f, sort_keys=True, indent=2)

    def edit_objects(self, doc, change):
        """Apply ``change(entries)`` to the metadata's object entries.

        ``entries`` is a list of ``[name, fields]``; the change may edit
        both, they are written back in order.
        """
        document = self.load(doc)
        entries = [list(next(iter(e.items()))) for e in document['objects']]
        change(entries)
        document['objects'] = [{name: fields} for name, fields in entries]
        self.save(doc, document)

    # -- what may change -----------------------------------------------

    def snapshot(self):
        """Every file of the scratch directory but the target: contents."""
        found = {}
        for dirpath, _dirs, names in os.walk(self.tmp):
            for name in names:
                path = os.path.join(dirpath, name)
                if path == self.target or name.startswith(
                        session.CATALOG_NAME):
                    continue
                if os.path.islink(path):
                    found[path] = 'link:' + os.readlink(path)
                    continue
                with open(path, 'rb') as f:
                    found[path] = hashlib.sha256(f.read()).hexdigest()
        return found

    def fill_target(self, size):
        with open(self.target, 'wb') as f:
            f.write(MARK * size)

    def target_bytes(self):
        with open(self.target, 'rb') as f:
            return f.read()

    # -- three readers -------------------------------------------------

    def driver(self):
        self.conf_fixture.config(
            backup_file_size=CHUNK, backup_sha_block_size_bytes=SHA,
            backup_compression_algorithm='zlib', backup_container=None)
        self.conf_fixture.config(workers=2, group=chunked.PIPELINE_GROUP)
        self.fake_env = fakes.FakeEnvironment()
        return posix.PosixBackupDriver(fakes.FakeContext(self.fake_env),
                                       backup_path=self.repo)

    def records(self, driver, doc, parents=()):
        """Driver-side records of ``doc`` and its ``parents``."""
        for parent in parents:
            self.fake_env.new_backup(
                parent['size_gib'], id=parent['id'],
                volume_id=parent['volume_id'],
                container=parent['container'],
                service_metadata=parent['service_metadata'],
                parent_id=parent['parent_id'], status='available')
        return self.fake_env.new_backup(
            doc['size_gib'], id=doc['id'], volume_id=doc['volume_id'],
            container=doc['container'],
            service_metadata=doc['service_metadata'],
            parent_id=doc['parent_id'], status='restoring')

    def driver_restore(self, doc, parents=(), size=None):
        """Restore onto the marker-filled target; the error or None."""
        driver = self.driver()
        backup = self.records(driver, doc, parents)
        self.fill_target(size or len(self.full_data))
        with open(self.target, 'r+b') as f:
            try:
                driver.restore(backup, doc['volume_id'], f, False)
            except Exception as e:
                return e
        return None

    def cli_restore(self, doc, expect, *extra):
        self.fill_target(len(self.full_data))
        _out, err = self.run_cli('restore', '--existing', doc['id'],
                                 self.target, *extra, expect=expect)
        return err

    def cli_verify(self, doc, expect=1, *extra):
        report, err = self.run_json('verify', doc['id'], *extra,
                                    expect=expect)
        return report, err

    # -- checks --------------------------------------------------------

    def error_line(self, err):
        lines = [line for line in err.splitlines()
                 if line.startswith(PROG + ': error: ')]
        self.assertEqual(1, len(lines), err)
        return lines[0]

    def assert_names(self, text, *names):
        for name in names:
            self.assertIn(name, text)

    def assert_written_up_to(self, data, objects_done):
        """Data up to ``objects_done`` objects, the marker after.

        Nothing of the damaged object, nor after it, was written.
        """
        content = self.target_bytes()
        self.assertEqual(len(data), len(content))
        end = min(objects_done * CHUNK, len(data))
        self.assertEqual(data[:end], content[:end])
        self.assertEqual(MARK * (len(data) - end), content[end:])

    def problems(self, report):
        self.assertFalse(report['ok'])
        return [p for b in report['backups'] for p in b['problems']]

    def problem_text(self, report):
        return '\n'.join('%s %s %s' % (p['backup_id'], p['object'],
                                       p['problem'])
                         for p in self.problems(report))


def _flip_object(number, where=0.5):
    def damage(test, doc):
        path = test.object_path(doc, number)
        flip_bit(path, int(os.path.getsize(path) * where), 0x10)
        return test.object_name(doc, number)
    return damage


def _truncate_object(number):
    def damage(test, doc):
        path = test.object_path(doc, number)
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
        return test.object_name(doc, number)
    return damage


def _remove_object(number):
    def damage(test, doc):
        os.remove(test.object_path(doc, number))
        return test.object_name(doc, number)
    return damage


def _extra_object(number, copy_of):
    def damage(test, doc):
        shutil.copy(test.object_path(doc, copy_of),
                    test.object_path(doc, number))
        return test.object_name(doc, number)
    return damage


def _flip_document(kind, find):
    """Flip the low bit of the byte ``find(test, doc)`` points at.

    ``find`` returns ``(unique bytes of the document, index in them)``,
    or ``(None, index in the document)``.
    """
    def damage(test, doc):
        path = test.document_path(doc, kind)
        wanted, offset = find(test, doc)
        start = 0
        if wanted is not None:
            with open(path, 'rb') as f:
                content = f.read()
            test.assertEqual(1, content.count(wanted), wanted)
            start = content.index(wanted)
        flip_bit(path, start + offset)
        return test.document_name(doc, kind)
    return damage


def _first_byte(test, doc):
    """The opening brace (it becomes a 'z')."""
    return None, 0


def _digit(digest):
    """The quoted digest, and a digit whose low bit flips to a digit."""
    position = next(i for i, c in enumerate(digest) if c in '0123456789bcde')
    return ('"%s"' % digest).encode(), position + 1


def _md5_digit(test, doc):
    """A digit of object 1's MD5 in the metadata."""
    return _digit(
        test.load(doc)['objects'][0][test.object_name(doc, 1)]['md5'])


def _sha_digit(test, doc):
    """A digit of block 2's SHA-256 in the sha256file."""
    return _digit(test.load(doc, 'sha256file')['sha256s'][2])


def _replace_document(kind, content):
    def damage(test, doc):
        with open(test.document_path(doc, kind), 'wb') as f:
            f.write(content)
        return test.document_name(doc, kind)
    return damage


def _set_field(key, value):
    def damage(test, doc):
        document = test.load(doc)
        document[key] = value
        test.save(doc, document)
        return test.document_name(doc, 'metadata')
    return damage


def _set_compression(number, name):
    def damage(test, doc):
        test.edit_objects(
            doc, lambda e: e[number - 1][1].update(compression=name))
        return test.object_name(doc, number)
    return damage


# Damage to the full backup.  ``fails_at``: the object whose check
# fails (0 when the documents are refused first), None when a restore
# does not need what was damaged.  Over an existing target nothing is
# written either way.  ``names``:
# what the restore error must contain besides the backup id (the name
# the damage returns is always checked).  ``verify``: what a problem
# must say.
DAMAGE = {
    'data_bit_compressed': dict(damage=_flip_object(3), fails_at=3,
                                error=exception.CorruptBackup,
                                verify=''),
    'data_bit_raw': dict(damage=_flip_object(4), fails_at=4,
                         error=exception.ChecksumMismatch,
                         verify='does not match its md5'),
    'data_truncated_compressed': dict(damage=_truncate_object(3),
                                      fails_at=3,
                                      error=exception.CorruptBackup,
                                      verify=''),
    'data_truncated_raw': dict(damage=_truncate_object(1), fails_at=1,
                               error=exception.CorruptBackup,
                               verify='holds'),
    'data_missing': dict(damage=_remove_object(2), fails_at=0,
                         error=exception.InvalidBackup,
                         verify='missing from the repository'),
    'data_extra': dict(damage=_extra_object(9, 2), fails_at=0,
                       error=exception.InvalidBackup,
                       verify='not in the metadata'),
    'metadata_bit_syntax': dict(
        damage=_flip_document('metadata', _first_byte),
        fails_at=0, error=exception.CorruptBackup, names=['metadata'],
        verify='not valid JSON'),
    # Over an existing target the object is proved by the SHA-256 of its
    # blocks (sha256file), which match: restored, and verify reports it.
    'metadata_bit_md5': dict(
        damage=_flip_document('metadata', _md5_digit),
        fails_at=None, error=exception.ChecksumMismatch,
        verify='does not match its md5', object_number=1),
    'metadata_not_json': dict(
        damage=_replace_document('metadata', b'<html>gone</html>\n'),
        fails_at=0, error=exception.CorruptBackup, names=['metadata'],
        verify='not valid JSON'),
    'metadata_unknown_version': dict(
        damage=_set_field('version', '9.9.9'), fails_at=0,
        error=exception.UnsupportedBackupVersion, names=['9.9.9'],
        verify='9.9.9', restore_names_document=False),
    'metadata_unknown_compression': dict(
        damage=_set_compression(3, 'lzma'), fails_at=0,
        error=exception.CorruptBackup, names=['lzma'],
        verify='unsupported compression'),
    'sha256file_bit_digest': dict(
        damage=_flip_document('sha256file', _sha_digit),
        fails_at=None, verify='do not match the sha256file',
        object_number=1),
    'sha256file_bit_syntax': dict(
        damage=_flip_document('sha256file', _first_byte),
        fails_at=None, verify='not valid JSON'),
}


@ddt.ddt
class TestDamagedRepository(DamageTestCase):
    """Each kind of damage, seen by a restore (driver, CLI) and verify."""

    def damage(self, case):
        spec = DAMAGE[case]
        named = spec['damage'](self, self.full)
        if 'object_number' in spec:
            # The document was damaged, the object is where it shows.
            shows_in = self.object_name(self.full, spec['object_number'])
        else:
            shows_in = named
        return spec, named, shows_in

    def restore_names(self, spec, shows_in):
        """What a restore error must name."""
        names = [self.full['id']] + list(spec.get('names', ()))
        if spec.get('restore_names_document', True):
            names.append(shows_in)
        return names

    @ddt.data(*sorted(DAMAGE))
    def test_driver_restore_damage_detected_nothing_written(self, case):
        spec, named, shows_in = self.damage(case)
        before = self.snapshot()
        error = self.driver_restore(self.full)
        self.assertEqual(before, self.snapshot())
        if spec['fails_at'] is None:
            self.assertIsNone(error)
            self.assertEqual(self.full_data, self.target_bytes())
            return
        self.assertIsInstance(error, spec['error'])
        self.assert_names(str(error), *self.restore_names(spec, shows_in))
        self.assert_written_up_to(self.full_data, 0)

    @ddt.data(*sorted(DAMAGE))
    def test_cli_restore_damage_one_line_nothing_written(self, case):
        spec, named, shows_in = self.damage(case)
        before = self.snapshot()
        if spec['fails_at'] is None:
            self.cli_restore(self.full, 0)
            self.assertEqual(self.full_data, self.target_bytes())
            self.assertEqual(before, self.snapshot())
            return
        err = self.cli_restore(self.full, 1)
        line = self.error_line(err)
        self.assert_names(line, *self.restore_names(spec, shows_in))
        self.assert_written_up_to(self.full_data, 0)
        self.assertNotIn('warning', err)
        self.assertEqual(before, self.snapshot())

    @ddt.data(*sorted(DAMAGE))
    def test_cli_verify_damage_names_backup_and_object(self, case):
        spec, named, shows_in = self.damage(case)
        before = self.snapshot()
        report, err = self.cli_verify(self.full)
        problems = self.problems(report)
        self.assertIn(shows_in, self.problem_text(report))
        self.assertEqual({self.full['id']},
                         {p['backup_id'] for p in problems})
        self.assertIn(spec['verify'], self.problem_text(report))
        self.assertIn('verification failed for %s' % self.full['id'], err)
        self.assertEqual(before, self.snapshot())

    def test_driver_and_cli_restore_damaged_parent_nothing_written(self):
        name = _flip_object(4)(self, self.full)
        error = self.driver_restore(self.incr, parents=[self.full])
        self.assertIsInstance(error, exception.ChecksumMismatch)
        self.assert_names(str(error), self.full['id'], name)
        self.assert_written_up_to(self.full_data, 0)

        err = self.cli_restore(self.incr, 1)
        self.assert_names(self.error_line(err), self.full['id'], name)
        self.assertNotIn('warning', err)
        self.assert_written_up_to(self.full_data, 0)

        report, _err = self.cli_verify(self.incr)
        bad = {(p['backup_id'], p['object']) for p in self.problems(report)}
        self.assertIn((self.full['id'], name), bad)


def _tamper(change):
    def damage(test, doc):
        test.edit_objects(doc, change)
    return damage


def _rename(number, name):
    def change(entries):
        entries[number - 1][0] = name
    return change


# Metadata that would make a restore write out of bounds or read outside
# the backup: refused before any byte is written.  ``needle`` must be in
# the restore error and in a verify problem.  ``driver``: False when only
# the command line refuses (the engine bounds objects by the volume size
# in GiB, as Cinder sizes volumes; the tool knows the size in bytes).
# ``repository``: what ``restore --from-repository`` says (no catalog:
# the full backup's objects, which must tile the volume from byte 0,
# give its size), or None when it cannot refuse before writing (a last
# object claiming more data than it holds: the restore stops at that
# object, before writing any of it).
TAMPER = {
    'offset_beyond_volume': dict(
        change=lambda e: e[2][1].update(offset=2 * GiB), needle='beyond',
        repository='gap'),
    'offset_beyond_file': dict(
        change=lambda e: e[4][1].update(offset=4 * MiB), needle='beyond',
        driver=False, repository='gap'),
    'length_beyond_volume': dict(
        change=lambda e: e[4][1].update(length=2 * GiB), needle='beyond',
        repository=None),
    'length_huge': dict(
        change=lambda e: e[4][1].update(length=2 ** 70), needle='beyond',
        repository=None),
    'length_negative': dict(
        change=lambda e: e[1][1].update(length=-CHUNK),
        needle='not positive'),
    'length_zero': dict(
        change=lambda e: e[1][1].update(length=0), needle='not positive'),
    'offset_negative': dict(
        change=lambda e: e[0][1].update(offset=-1), needle='negative'),
    'overlap': dict(
        change=lambda e: e[1][1].update(offset=CHUNK - 1),
        needle='overlaps'),
    'name_with_slash': dict(
        change=_rename(2, '../../../../escaped-00002'),
        needle='../../../../escaped-00002'),
    'name_dotdot': dict(change=_rename(2, '..'), needle="'..'"),
    'name_with_nul': dict(change=_rename(2, 'x\x00-00002'),
                          needle='does not belong'),
    'name_of_other_backup': dict(change=None, needle='does not belong'),
}


@ddt.ddt
class TestTamperedMetadata(DamageTestCase):
    """Hostile metadata: refused before any byte is written."""

    def tamper(self, case):
        spec = TAMPER[case]
        change = spec['change']
        if change is None:      # an object of the incremental backup
            change = _rename(1, self.object_name(self.incr, 1))
        _tamper(change)(self, self.full)
        return spec

    @ddt.data(*sorted(TAMPER))
    def test_restore_and_verify_tampered_metadata_refused_unchanged(
            self, case):
        spec = self.tamper(case)
        before = self.snapshot()
        untouched = MARK * len(self.full_data)

        if spec.get('driver', True):
            error = self.driver_restore(self.full)
            self.assertIsInstance(error, exception.InvalidBackup)
            self.assert_names(str(error), self.full['id'], spec['needle'])
            self.assertEqual(untouched, self.target_bytes())
            self.assertEqual(before, self.snapshot())

        err = self.cli_restore(self.full, 1)
        self.assert_names(self.error_line(err), self.full['id'],
                          spec['needle'])
        self.assertNotIn('warning', err)
        self.assertEqual(untouched, self.target_bytes())
        self.assertEqual(before, self.snapshot())

        report, _err = self.cli_verify(self.full)
        self.assertIn(spec['needle'], self.problem_text(report))
        self.assertEqual(before, self.snapshot())

        # From the repository alone (no catalog), too.
        needle = spec.get('repository', spec['needle'])
        self.fill_target(len(self.full_data))
        _out, err = self.run_cli(
            'restore', '--existing', '--from-repository',
            self.full['container'], self.full['service_metadata'],
            self.target, expect=2 if needle is None else 1)
        line = self.error_line(err)
        if needle is None:
            # Not the target's size: refused before any write.
            self.assertIn('--resize', line)
            self.assertEqual(untouched, self.target_bytes())
        else:
            self.assertIn(needle, line)
            self.assertEqual(untouched, self.target_bytes())
        self.assertEqual(before, self.snapshot())


@ddt.ddt
class TestParentCycle(DamageTestCase):
    """A chain of parents that loops is refused before any write."""

    def loop_catalog(self, parent_of_full):
        conn = sqlite3.connect(os.path.join(self.repo, session.CATALOG_NAME))
        with conn:
            conn.execute('UPDATE backups SET parent_id = ? WHERE id = ?',
                         (parent_of_full, self.full['id']))
        conn.close()

    @ddt.data('incr', 'full')
    def test_restore_and_verify_catalog_parent_loop_refused(self, loop_to):
        loop_to_id = self.incr['id'] if loop_to == 'incr' else \
            self.full['id']
        self.loop_catalog(loop_to_id)
        before = self.snapshot()
        untouched = MARK * len(self.full_data)

        full = dict(self.full, parent_id=loop_to_id)
        error = self.driver_restore(self.incr, parents=[full])
        self.assertIsInstance(error, exception.CorruptBackup)
        self.assert_names(str(error), self.incr['id'], 'loops', loop_to_id)
        self.assertEqual(untouched, self.target_bytes())

        err = self.cli_restore(self.incr, 1)
        self.assert_names(self.error_line(err), 'loops', loop_to_id)
        self.assertEqual(untouched, self.target_bytes())
        report, _err = self.cli_verify(self.incr)
        self.assert_names(self.problem_text(report), 'broken chain',
                          'loops')
        self.assertEqual(before, self.snapshot())

    def test_restore_and_verify_repository_parent_loop_refused(self):
        # Without a catalog the chain comes from the metadata documents.
        _set_field('parent_id', self.incr['id'])(self, self.full)
        os.remove(os.path.join(self.repo, session.CATALOG_NAME))
        untouched = MARK * len(self.full_data)
        source = ['--from-repository', self.incr['container'],
                  self.incr['service_metadata']]
        self.fill_target(len(self.full_data))
        _out, err = self.run_cli('restore', '--existing', *source,
                                 self.target, expect=1)
        self.assert_names(self.error_line(err), 'loops', self.incr['id'])
        self.assertEqual(untouched, self.target_bytes())
        report, _err = self.run_json('verify', *source, expect=1)
        self.assert_names(self.problem_text(report), 'loops')


@ddt.ddt
class TestUnsafeContainer(DamageTestCase):
    """Records naming a container outside the repository."""

    def setUp(self):
        super().setUp()
        self.outside_dir = os.path.join(self.tmp, 'outside')
        os.makedirs(os.path.join(self.outside_dir, 'sub'))
        # What a delete or restore would find there, if it got there.
        self.bait = os.path.join(self.outside_dir,
                                 self.full['service_metadata'] + '-00001')
        shutil.copy(self.object_path(self.full, 1), self.bait)
        shutil.copy(self.document_path(self.full, 'metadata'),
                    os.path.join(self.outside_dir, self.document_name(
                        self.full, 'metadata')))
        os.symlink(self.outside_dir, os.path.join(self.repo, 'link'))

    def containers(self):
        return {
            'absolute': self.outside_dir,
            'dotdot': '../outside',
            'dotdot_inside': 'a/../../outside',
            'symlink_out': 'link',
            'symlink_out_below': 'link/sub',
            'long_name': 'x' * 256,
            'nul': 'a\x00b',
            'empty_component': 'a//b',
        }

    @ddt.data('absolute', 'dotdot', 'dotdot_inside', 'symlink_out',
              'symlink_out_below', 'long_name', 'nul', 'empty_component')
    def test_import_record_unsafe_container_refused_nothing_outside(
            self, case):
        container = self.containers()[case]
        driver = self.driver()
        backup = self.records(driver, dict(self.full, container=container))
        before = self.snapshot()
        opened = []
        real_open = os.open

        def spy(path, *args, **kwargs):
            opened.append(os.fspath(path))
            return real_open(path, *args, **kwargs)

        with mock.patch('os.open', side_effect=spy):
            self.assertRaises(exception.UnsafePath, driver.import_record,
                              backup, {})
            # Were it imported all the same: nothing read, written or
            # deleted through it.
            self.fill_target(len(self.full_data))
            with open(self.target, 'r+b') as f:
                self.assertRaises(exception.UnsafePath, driver.restore,
                                  backup, self.full['volume_id'], f, False)
            driver.delete_backup(backup)
            backup.status = 'creating'
            with open(self.volume, 'wb') as f:
                f.write(b'\x05' * CHUNK)
            with open(self.volume, 'rb') as f:
                self.assertRaises(exception.UnsafePath, driver.backup,
                                  backup, f)
        real_outside = os.path.realpath(self.outside_dir)
        self.assertEqual([], [p for p in opened
                              if os.path.realpath(p).startswith(
                                  real_outside)])
        before.pop(self.volume, None)
        after = self.snapshot()
        after.pop(self.volume, None)
        self.assertEqual(before, after)
        self.assertEqual(MARK * len(self.full_data), self.target_bytes())
        self.assertTrue(os.path.exists(self.bait))
