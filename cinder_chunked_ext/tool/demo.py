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

"""``cinder-chunked-backup demo``: the tool's round trip on a sample volume.

It makes a sample volume (random data, text and zeros), backs it up,
changes some blocks, makes an incremental backup, verifies it, restores
it to a new file and compares the two files' SHA-256.
"""

import hashlib
import os
import random
import shutil
import tempfile
import time

from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import operations
from cinder_chunked_ext.tool import progress

KiB = 1024
MiB = 1024 ** 2
DEFAULT_SIZE = 64 * MiB

DEMO_TEXT = (b'cinder-chunked-backup demo: a line of text that compresses '
             b'well, line %08d\n')


def file_sha256(path):
    """The SHA-256 of a file's content, in hexadecimal."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            data = f.read(4 * MiB)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


def make_sample_volume(path, size, seed=2026):
    """A volume image of random data, text and zeros (left sparse).

    The volume is made of regions of 1 MiB (smaller for a volume under
    16 MiB, so that it still mixes all three kinds).
    """
    rng = random.Random(seed)
    region = min(MiB, max(4 * KiB, size // 16 // (4 * KiB) * (4 * KiB)))
    kinds = ('random', 'zeros', 'text', 'zeros', 'random', 'text',
             'zeros', 'zeros')
    with open(path, 'wb') as f:
        for index, offset in enumerate(range(0, size, region)):
            length = min(region, size - offset)
            kind = kinds[index % len(kinds)]
            if kind == 'zeros':
                continue
            if kind == 'random':
                data = rng.randbytes(length)
            else:
                data = b''.join(DEMO_TEXT % (offset + n)
                                for n in range(length // 64 + 1))[:length]
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def change_sample_volume(path, size, count=5, seed=7):
    """Overwrite ``count`` regions with new random data; return bytes."""
    rng = random.Random(seed)
    length = min(64 * KiB, max(4 * KiB, size // 64 // (4 * KiB) * (4 * KiB)))
    offsets = sorted({(size * n // count) // length * length
                      for n in range(count)})
    changed = 0
    with open(path, 'r+b') as f:
        for offset in offsets:
            data = rng.randbytes(min(length, size - offset))
            f.seek(offset)
            f.write(data)
            changed += len(data)
    return changed


def cmd_demo(session, args):
    """The ``demo`` command; it configures ``session`` itself."""
    own_dir = args.workdir is None
    workdir = (tempfile.mkdtemp(prefix='cinder-chunked-demo-') if own_dir
               else os.path.abspath(args.workdir))
    os.makedirs(workdir, exist_ok=True)
    session.use_workdir(workdir)
    session.configure()
    demo = _Demo(session, workdir, args.size)
    doc = demo.run()
    if own_dir and doc['ok'] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        doc['workdir_removed'] = True
    if doc['ok']:
        lines = ['Demo succeeded: the restored volume is identical to the '
                 'original.']
        if doc.get('workdir_removed'):
            lines.append('Removed the demo directory %s (--keep or '
                         '--workdir keeps it).' % workdir)
    else:
        lines = ['Demo FAILED: the restored volume differs from the '
                 'original (files kept in %s).' % workdir]
    session.out.result(doc, lines)
    return exit_status.OK if doc['ok'] else exit_status.FAILED


class _Demo(object):
    """The demo's steps, each timed and reported as it ends."""

    def __init__(self, session, workdir, size):
        self.session = session
        self.out = session.out
        self.workdir = workdir
        self.size = size
        self.volume = os.path.join(workdir, 'volume.img')
        self.restored = os.path.join(workdir, 'restored.img')
        self.ids = {}
        self.steps = []
        self.doc = {'ok': False, 'workdir': workdir,
                    'repository': session.repository_text(),
                    'steps': self.steps}

    def run(self):
        """Every step in turn; returns the JSON document."""
        self.out.say('%s demo in %s (repository: %s)'
                     % (self.out.prog, self.workdir,
                        self.session.repository_text()))
        for path in (self.volume, self.restored):
            if os.path.exists(path):
                os.remove(path)
        plan = [('create a sample volume', self.create),
                ('full backup', self.full),
                ('change some blocks', self.change),
                ('incremental backup', self.incremental),
                ('verify', self.check),
                ('restore to a new file', self.restore),
                ('compare', self.compare)]
        for number, (title, func) in enumerate(plan, 1):
            started = time.monotonic()
            detail = func()
            seconds = time.monotonic() - started
            self.steps.append({'step': title, 'seconds': round(seconds, 3),
                               'detail': detail})
            self.out.say('[%d/%d] %s: %s (%.2f s)'
                         % (number, len(plan), title, detail, seconds))
        doc = self.doc
        doc['full_backup_id'] = self.ids['full']
        doc['incremental_backup_id'] = self.ids['incremental']
        doc['ok'] = doc['sha256_original'] == doc['sha256_restored']
        return doc

    def create(self):
        make_sample_volume(self.volume, self.size)
        return 'sample volume %s of %s (zeros, random data, text)' % (
            self.volume, progress.human_bytes(self.size))

    def full(self):
        record, _s = operations.create_backup(self.session, self.volume,
                                              name='demo full')
        self.ids['full'] = record.id
        return 'backup %s, %s' % (
            record.id, progress.plural(record.object_count, 'object'))

    def change(self):
        changed = change_sample_volume(self.volume, self.size)
        return '%s of new data written in place' % (
            progress.human_bytes(changed))

    def incremental(self):
        record, _s = operations.create_backup(
            self.session, self.volume, incremental=True,
            name='demo incremental')
        self.ids['incremental'] = record.id
        return 'backup %s, %s (parent %s)' % (
            record.id, progress.plural(record.object_count, 'object'),
            record.parent_id)

    def _incremental_and_driver(self):
        session = self.session
        record = session.catalog().get(self.ids['incremental'])
        return record, session.driver(session.environment())

    def check(self):
        record, driver = self._incremental_and_driver()
        report = operations.verify_backups(self.session, driver, [record])[0]
        if not report.ok:
            raise exit_status.CliError(
                'verification of backup %s failed: %s'
                % (record.id, '; '.join(str(p) for p in report.problems)))
        return 'chain of %d backups, %s, %s checked, no problems' % (
            len(report.chain),
            progress.plural(report.objects_checked, 'object'),
            progress.human_bytes(report.bytes_checked))

    def restore(self):
        record, driver = self._incremental_and_driver()
        done = operations.restore_backup(self.session, driver, record,
                                         self.restored, 'new',
                                         record.volume_size_bytes)
        return 'backup %s restored to new file %s' % (record.id,
                                                      done['target'])

    def compare(self):
        doc = self.doc
        doc['sha256_original'] = file_sha256(self.volume)
        doc['sha256_restored'] = file_sha256(self.restored)
        same = doc['sha256_original'] == doc['sha256_restored']
        return 'sha256 %s (original) %s %s (restored)' % (
            doc['sha256_original'][:16], '==' if same else '!=',
            doc['sha256_restored'][:16])
