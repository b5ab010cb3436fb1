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

"""Concurrent backup and restore cycles in green threads, as a script.

Run by ``test_concurrent_operations``::

    python concurrent_eventlet_worker.py REPOSITORY [--cycles N]
        [--container NAME]

It monkey-patches with eventlet before importing anything that uses
threads, as ``cinder-backup`` does, then runs N cycles at once, each in
its own green thread with its own :class:`PosixBackupDriver` (and its own
compression) on the one repository: a full backup of a volume, an
incremental backup of a changed copy, and four restores.  It prints one
JSON line: whether eventlet was active, how many cycles ran at the same
time, each cycle's outcome and what is wrong in the repository.

The cycle and the repository checks are plain functions over the standard
library, shared with the native-thread tests: importing this module has
no side effects and imports nothing that starts threads.
"""

import argparse
import bz2
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import zlib

SHA = 4096
CHUNK = 4 * SHA
PIECE = 2 * SHA
ALGORITHMS = ('zlib', 'bz2', 'zstd', 'none')


# -- the data of each cycle --------------------------------------------------

def volume_data(index):
    """Volume ``index``: 5 chunks of mixed data and a tail of its own size.

    Every volume differs from the others in content and size, so a
    restore of the wrong backup cannot go unnoticed.
    """
    rnd = random.Random(1000 + index)
    words = [b'cinder ', b'backup %d ' % index, b'\n', b'\0' * 50]
    parts = []
    for n in range(5):
        kind = (n + index) % 3
        if kind == 0:
            text = b''.join(rnd.choice(words) for _i in range(CHUNK // 4))
            parts.append(text[:CHUNK])
        elif kind == 1:
            parts.append(rnd.randbytes(CHUNK))
        else:
            parts.append(bytes(CHUNK))
    parts.append(rnd.randbytes(1000 * (index + 1)))
    return b''.join(parts)


def changed_data(data, index):
    """A copy of ``data`` with a few regions changed, per ``index``."""
    rnd = random.Random(2000 + index)
    out = bytearray(data)
    for _i in range(2 + index % 3):
        start = rnd.randrange(0, len(out) - 1)
        length = rnd.randrange(1, min(3 * SHA, len(out) - start))
        out[start:start + length] = rnd.randbytes(length)
    return bytes(out)


def changed_runs(old, new, block=SHA, chunk=CHUNK, piece=PIECE):
    """The ``(offset, length)`` an incremental backup stores.

    Runs of changed blocks within a chunk, in objects of at most a piece.
    """
    return [(start + cut, min(piece, length - cut))
            for start, length in _whole_runs(old, new, block, chunk)
            for cut in range(0, length, piece)]


def _whole_runs(old, new, block, chunk):
    runs = []
    for chunk_start in range(0, len(new), chunk):
        chunk_end = min(chunk_start + chunk, len(new))
        run = None
        for off in range(chunk_start, chunk_end, block):
            same = old[off:off + block] == new[off:off + block]
            if not same and run is None:
                run = off
            elif same and run is not None:
                runs.append((run, off - run))
                run = None
        if run is not None:
            runs.append((run, chunk_end - run))
    return runs


def full_runs(data, chunk=CHUNK):
    return [(off, min(chunk, len(data) - off))
            for off in range(0, len(data), chunk)]


def md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


# -- one cycle ---------------------------------------------------------------

def _describe(backup, data, runs, algorithm):
    return {'id': backup.id, 'volume_id': backup.volume_id,
            'container': backup.container,
            'prefix': backup.service_metadata,
            'object_count': backup.object_count,
            'runs': runs, 'algorithm': algorithm, 'md5': md5_hex(data)}


def _restore(driver, backup, target, volume_is_new):
    backup.status = 'restoring'
    try:
        driver.restore(backup, backup.volume_id, target, volume_is_new)
    finally:
        backup.status = 'available'
    return target.getvalue()


def _rollback(driver, backup, old):
    """Restore ``backup`` over a file holding ``old``; the file's bytes.

    The file is handed over write-only, not truncated, and wrapped as
    Cinder's backup manager wraps a device (``tpool_wrap`` under
    eventlet): the restore reads it through a descriptor of its own and
    writes only the blocks that differ.
    """
    from cinder_chunked_ext.engine import concurrency
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, 'volume')
        with open(path, 'wb') as f:
            f.write(old)
        with io.open(os.open(path, os.O_WRONLY), 'wb') as f:
            backup.status = 'restoring'
            try:
                driver.restore(backup, backup.volume_id,
                               concurrency.tpool_wrap(f), False)
            finally:
                backup.status = 'available'
        with open(path, 'rb') as f:
            return f.read()


def run_cycle(driver, env, index, algorithm, container=None, wrap=None):
    """Full backup, incremental backup, four restores; a JSON report.

    ``container`` is the container the user asked for (None: the
    driver's choice).  ``wrap(file_object, phase)`` may wrap the volume
    files the driver reads and writes (``phase`` is ``'backup'`` or
    ``'restore'``).
    """
    wrap = wrap or (lambda f, phase: f)
    data = volume_data(index)
    changed = changed_data(data, index)
    volume_id = 'volume-%d' % index

    full = env.new_backup(volume_id=volume_id, container=container,
                          display_name='cycle %d full' % index)
    driver.backup(full, wrap(io.BytesIO(data), 'backup'))
    full.status = 'available'
    inc = env.new_backup(volume_id=volume_id, parent_id=full.id,
                         container=container,
                         display_name='cycle %d incremental' % index)
    driver.backup(inc, io.BytesIO(changed))
    inc.status = 'available'

    size = len(data)
    garbage = random.Random(3000 + index).randbytes(size)
    target = wrap(io.BytesIO(bytes(size)), 'restore')
    full_new = _restore(driver, full, target, True)
    inc_existing = _restore(driver, inc, io.BytesIO(garbage), False)
    inc_new = _restore(driver, inc, io.BytesIO(bytes(size)), True)
    rollback = _rollback(driver, inc, data)
    return {
        'index': index,
        'algorithm': algorithm,
        'size': size,
        'restored_full_new': full_new == data,
        'restored_incremental_existing': inc_existing == changed,
        'restored_incremental_new': inc_new == changed,
        'restored_incremental_rollback': rollback == changed,
        'full': _describe(full, data, full_runs(data), algorithm),
        'incremental': _describe(inc, changed, changed_runs(data, changed),
                                 algorithm),
    }


# -- the repository after the cycles -----------------------------------------

def _decode(compression, blob):
    name = compression.lower()
    if name in ('zlib', 'gzip'):
        return zlib.decompress(blob)
    if name in ('bz2', 'bzip2'):
        return bz2.decompress(blob)
    if name == 'zstd':
        import zstandard
        return zstandard.ZstdDecompressor().decompress(blob)
    return blob


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def repository_problems(repo, results, deleted=()):
    """What is wrong in ``repo`` after the cycles in ``results``; [] if ok.

    Every file of a container belongs to exactly one backup (by prefix);
    each backup's files are its metadata, its sha256file and the objects
    its metadata lists, numbered from 1, with the ranges the backup had to
    store; each object decodes to its own volume's data.  Backups in
    ``deleted`` (ids) must have left nothing behind.
    """
    problems = []
    backups = []
    for result in results:
        data = volume_data(result['index'])
        versions = {'full': data,
                    'incremental': changed_data(data, result['index'])}
        for kind, content in versions.items():
            backups.append((result[kind], content))
    containers = sorted({b['container'] for b, _d in backups})
    listing = {}
    for container in containers:
        path = os.path.join(repo, container)
        listing[container] = sorted(os.listdir(path))
        for name in listing[container]:
            owners = [b['id'] for b, _d in backups
                      if b['container'] == container
                      and name.startswith(b['prefix'])]
            if len(owners) != 1:
                problems.append('%s/%s belongs to %d backups'
                                % (container, name, len(owners)))
    for backup, content in backups:
        mine = [n for n in listing[backup['container']]
                if n.startswith(backup['prefix'])]
        if backup['id'] in deleted:
            if mine:
                problems.append('deleted backup %s left %s'
                                % (backup['id'], mine))
            continue
        problems.extend(_backup_problems(repo, backup, content, mine))
    return problems


def _backup_problems(repo, backup, content, mine):
    problems = []
    prefix = backup['prefix']
    folder = os.path.join(repo, backup['container'])
    meta = json.loads(_read(os.path.join(folder, prefix + '_metadata')))
    objects = [(name, fields) for entry in meta['objects']
               for name, fields in entry.items()]
    names = [name for name, _f in objects]
    expected = sorted(names + [prefix + '_metadata', prefix + '_sha256file'])
    if sorted(mine) != expected:
        problems.append('backup %s: files %s, expected %s'
                        % (backup['id'], mine, expected))
    if names != ['%s-%05d' % (prefix, n) for n in range(1, len(names) + 1)]:
        problems.append('backup %s: object names %s' % (backup['id'], names))
    if len(names) != backup['object_count']:
        problems.append('backup %s: %d objects, object_count %d'
                        % (backup['id'], len(names),
                           backup['object_count']))
    runs = [[f['offset'], f['length']] for _n, f in objects]
    if runs != [list(r) for r in backup['runs']]:
        problems.append('backup %s: object ranges %s, expected %s'
                        % (backup['id'], runs, backup['runs']))
    if (meta['backup_id'], meta['volume_id']) != (backup['id'],
                                                  backup['volume_id']):
        problems.append('backup %s: metadata names backup %s of volume %s'
                        % (backup['id'], meta['backup_id'],
                           meta['volume_id']))
    for name, fields in objects:
        if fields['compression'] not in (backup['algorithm'], 'none'):
            problems.append('%s: compression %s, configured %s'
                            % (name, fields['compression'],
                               backup['algorithm']))
        data = _decode(fields['compression'],
                       _read(os.path.join(folder, name)))
        start = fields['offset']
        if data != content[start:start + fields['length']]:
            problems.append('%s: data is not its volume\'s' % name)
        if md5_hex(data) != fields['md5']:
            problems.append('%s: md5 differs from the metadata' % name)
    return problems


# -- the script --------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('repository')
    parser.add_argument('--cycles', type=int, default=4)
    parser.add_argument('--container', default=None,
                        help='the container every backup asks for '
                             '(default: the driver picks one per backup)')
    args = parser.parse_args(argv)

    import eventlet
    eventlet.monkey_patch()

    import warnings
    warnings.simplefilter('ignore')

    from oslo_config import cfg

    from cinder_chunked_ext.drivers import posix
    from cinder_chunked_ext.engine import concurrency
    from cinder_chunked_ext.engine import driver as chunked
    from cinder_chunked_ext.tests import fakes

    conf = cfg.CONF
    conf([], project='cinder')
    chunked.PIECE_BYTES = PIECE
    conf.set_override('backup_file_size', CHUNK)
    conf.set_override('backup_sha_block_size_bytes', SHA)
    conf.set_override('backup_enable_progress_timer', False)
    conf.set_override('workers', 2, group=chunked.PIPELINE_GROUP)

    env = fakes.FakeEnvironment()
    context = fakes.FakeContext(env)
    cycles = []
    for index in range(args.cycles):
        algorithm = ALGORITHMS[index % len(ALGORITHMS)]
        conf.set_override('backup_compression_algorithm', algorithm)
        driver = posix.PosixBackupDriver(context,
                                         backup_path=args.repository)
        cycles.append((driver, index, algorithm))

    state = {'active': 0, 'max_active': 0, 'ticks': 0, 'done': False}

    def ticker():
        while not state['done']:
            state['ticks'] += 1
            eventlet.sleep(0.001)

    def cycle(driver, index, algorithm):
        state['active'] += 1
        state['max_active'] = max(state['max_active'], state['active'])
        try:
            return run_cycle(driver, env, index, algorithm,
                             container=args.container)
        finally:
            state['active'] -= 1

    eventlet.spawn(ticker)
    pool = eventlet.GreenPool(len(cycles))
    threads = [pool.spawn(cycle, *c) for c in cycles]
    results = []
    errors = []
    for thread in threads:
        try:
            results.append(thread.wait())
        except Exception as e:
            errors.append('%s: %s' % (type(e).__name__, e))
    state['done'] = True

    report = {
        'eventlet_active': concurrency.eventlet_active(),
        'green_pool': concurrency.WorkerPool(1)._green,
        'max_concurrent_cycles': state['max_active'],
        'ticks': state['ticks'],
        'errors': errors,
        'results': results,
        'problems': (repository_problems(args.repository, results)
                     if not errors else []),
    }
    sys.stdout.write(json.dumps(report) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
