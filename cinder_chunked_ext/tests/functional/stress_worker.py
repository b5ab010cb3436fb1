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

"""Many backups and restores at once on three stores, as a script.

Run by ``test_stress_operations``::

    python stress_worker.py CONFIG.json

It patches the process first, as ``cinder-backup`` does
(``cinder.monkey_patch.patch()`` when Cinder is importable, else
``eventlet.monkey_patch()``), then, on a POSIX repository, an S3 bucket
and a Swift container together, in three phases of green threads:

1. *setup*: per store, full backups of volumes ``a`` and ``b`` and an
   incremental of ``a`` (one chain per store, the stores side by side);
2. *stress*, everything at once (6 operations per store, 18 in all):
   a full backup of a new volume ``c``, an incremental of ``a`` on the
   incremental (a chain of three), an incremental of ``b`` whose long
   changed run spans several pieces, and three restores (the chain of
   ``a`` onto a new and onto an existing volume, ``b``'s full backup onto
   an existing volume).  Each operation's backup record meets the others
   at its first status check, which the engine makes inside the
   operation's share of the process budget, so none can finish before
   all have started;
3. *verify*: the three backups of phase 2 restored, all at once.

Every operation has a driver object of its own, built as the backup
manager builds one (``DriverClass(context)``), and its volume file
behind ``tpool_wrap``.  Volumes mix random data, text, written zeros and
holes.  Every restore is compared byte for byte with the volume it
should reproduce.  The script prints one JSON line: how the process was
patched, ``ProcessBudget.most_running``, how many operations met,
each check, the errors, and the peak resident memory.
"""

import hashlib
import json
import os
import random
import resource
import sys
import time
import traceback

SHA = 16 * 1024
PIECE = 4 * SHA
CHUNK = 16 * SHA
# Volumes: kinds per run of hash blocks, 160 blocks, then a partial one.
LAYOUT = (('t', 6), ('r', 10), ('h', 20), ('z', 12), ('t', 8), ('r', 24),
          ('h', 40), ('t', 4), ('z', 4), ('r', 30), ('h', 2))
TAIL = 1234
STORES = ('posix', 's3', 'swift')
ALGORITHMS = {'posix': 'zlib', 's3': 'zstd', 'swift': 'bz2'}
MiB = 1024 * 1024


# -- volumes -----------------------------------------------------------------

class Volume(object):
    """Bytes of a volume and which of its hash blocks are holes."""

    def __init__(self, data, holes):
        self.data = bytes(data)
        self.holes = set(holes)

    @classmethod
    def make(cls, seed):
        rnd = random.Random(seed)
        data = bytearray()
        holes = set()
        shift = seed % len(LAYOUT)
        for kind, blocks in LAYOUT[shift:] + LAYOUT[:shift]:
            first = len(data) // SHA
            data += _fill(rnd, kind, blocks * SHA)
            if kind == 'h':
                holes.update(range(first, first + blocks))
        data += rnd.randbytes(TAIL)
        return cls(data, holes)

    def changed(self, seed, edits):
        """A copy with ``(first block, kind, blocks)`` edits applied."""
        rnd = random.Random(seed)
        data = bytearray(self.data)
        holes = set(self.holes)
        for first, kind, blocks in edits:
            data[first * SHA:(first + blocks) * SHA] = _fill(
                rnd, kind, blocks * SHA)
            span = set(range(first, first + blocks))
            holes = holes | span if kind == 'h' else holes - span
        data[-7:] = rnd.randbytes(7)
        return Volume(data, holes)

    def write(self, path):
        """Write the file, leaving the hole blocks unwritten."""
        with open(path, 'wb') as f:
            for block in range(0, -(-len(self.data) // SHA)):
                if block not in self.holes:
                    f.seek(block * SHA)
                    f.write(self.data[block * SHA:(block + 1) * SHA])
            f.truncate(len(self.data))
        return path


def _fill(rnd, kind, size):
    if kind == 'r':
        return rnd.randbytes(size)
    if kind == 't':
        words = [b'volume ', b'backup %d ' % rnd.randrange(99), b'chunk\n']
        text = b''.join(rnd.choice(words) for _i in range(size // 4))
        return text[:size].ljust(size, b'.')
    return bytes(size)          # 'z' written zeros, 'h' a hole


def volumes(store_index):
    """The versions of the volumes of one store, by name."""
    base = 100 * store_index
    a0 = Volume.make(base + 1)
    # A long random run over two and a half chunks, a hole filled in,
    # data zeroed: runs of changed blocks cut into objects of a piece.
    a1 = a0.changed(base + 2, [(20, 'r', 40), (70, 'r', 5), (100, 'z', 3)])
    a2 = a1.changed(base + 3, [(1, 't', 9), (90, 'h', 6), (150, 'r', 1)])
    b0 = Volume.make(base + 4)
    b1 = b0.changed(base + 5, [(40, 'r', 48), (130, 't', 2)])
    c0 = Volume.make(base + 6)
    return {'a0': a0, 'a1': a1, 'a2': a2, 'b0': b0, 'b1': b1, 'c0': c0}


def md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def first_difference(expected, actual):
    if expected == actual:
        return None
    return next((i for i, (x, y) in enumerate(zip(expected, actual))
                 if x != y), min(len(expected), len(actual)))


# -- the script --------------------------------------------------------------

def patch_process():
    """Patch as cinder-backup does; return who patched."""
    try:
        from cinder import monkey_patch
    except ImportError:
        import eventlet
        eventlet.monkey_patch()
        return 'eventlet'
    monkey_patch.patch()
    return 'cinder'


class Stress(object):
    """The stores, the records and the operations of one run."""

    def __init__(self, config, patched_by):
        import threading

        from oslo_config import cfg

        from cinder_chunked_ext.drivers import posix
        from cinder_chunked_ext.drivers import s3
        from cinder_chunked_ext.drivers import swift
        from cinder_chunked_ext.engine import concurrency
        from cinder_chunked_ext.engine import driver as chunked
        from cinder_chunked_ext.tests import fakes

        self.threading = threading
        self.fakes = fakes
        self.concurrency = concurrency
        if patched_by == 'cinder':
            from cinder import utils as cinder_utils
            self.tpool_wrap = cinder_utils.tpool_wrap
        else:
            self.tpool_wrap = concurrency.tpool_wrap
        self.workdir = config['workdir']
        conf = cfg.CONF
        conf([], project='cinder')
        chunked.PIECE_BYTES = PIECE
        conf.set_override('backup_posix_path', config['posix_repo'])
        conf.set_override('backup_file_size', CHUNK)
        conf.set_override('backup_sha_block_size_bytes', SHA)
        conf.set_override('backup_s3_object_size', CHUNK)
        conf.set_override('backup_s3_block_size', SHA)
        conf.set_override('backup_swift_object_size', CHUNK)
        conf.set_override('backup_swift_block_size', SHA)
        for name, value in (list(config['s3'].items()) +
                            list(config['swift'].items())):
            conf.set_override(name, value)
        conf.set_override('workers', 2, group=chunked.PIPELINE_GROUP)
        conf.set_override('io_threads', 4, group=chunked.PIPELINE_GROUP)
        conf.set_override('max_bytes_in_flight', 8 * MiB,
                          group=chunked.PIPELINE_GROUP)
        self.conf = conf
        self.classes = {'posix': posix.PosixBackupDriver,
                        's3': s3.S3BackupDriver,
                        'swift': swift.SwiftBackupDriver}
        self.env = fakes.FakeEnvironment()
        self.context = fakes.FakeContext(self.env)
        self.volumes = {store: volumes(n) for n, store in enumerate(STORES)}
        self.records = {}
        self.building = threading.Lock()
        self.barrier = None
        self.met = 0
        self.checks = []
        self.errors = []

    # -- drivers, records and files ----------------------------------------

    def driver(self, store):
        """A driver of its own, built as the backup manager builds one.

        The store's compression is set just before: one driver is built
        at a time, so no other operation's setting can come between.
        """
        with self.building:
            self.conf.set_override('backup_compression_algorithm',
                                   ALGORITHMS[store])
            return self.classes[store](self.context)

    def record(self, status, **fields):
        """A backup record; it meets the others at its first refresh."""
        stress = self

        class Record(self.fakes.FakeBackup):
            barrier = self.barrier
            met = False

            def refresh(self):
                if self.barrier is not None and not self.met:
                    self.met = True
                    stress.met += 1
                    self.barrier.wait()
                super().refresh()

        return Record(self.env, status=status, **fields)

    def new_record(self, store, version, parent):
        volume_id = '%s-%s' % (store, version[0])
        backup = self.record('creating', volume_id=volume_id,
                             parent_id=parent.id if parent else None,
                             display_name='stress %s %s' % (store, version))
        self.env.backups[backup.id] = backup
        self.env.volume_sizes[volume_id] = 1
        return backup

    def restoring_record(self, store, version):
        """The restore's own record of a backup, as the manager loads it."""
        known = self.records[store, version]
        fields = {f: getattr(known, f) for f in known.FIELDS}
        del fields['status']
        return self.record('restoring', **fields)

    def path(self, store, name):
        return os.path.join(self.workdir, '%s-%s' % (store, name))

    # -- operations ----------------------------------------------------------

    def backup(self, store, version, parent_key=None):
        parent = self.records[store, parent_key] if parent_key else None
        record = self.new_record(store, version, parent)
        path = self.volumes[store][version].write(self.path(store, version))
        driver = self.driver(store)
        with open(path, 'rb') as f:
            driver.backup(record, self.tpool_wrap(f))
        record.status = 'available'
        self.records[store, version] = record
        # What the backup wrote, as a restore reads it.
        objects = driver._read_metadata(record).objects
        self.checks.append({'op': 'backup %s %s' % (store, version),
                            'ok': True, 'object_count': record.object_count,
                            'spans': [[o.offset, o.length] for o in objects],
                            'compressions': sorted({o.compression
                                                    for o in objects})})
        return record

    def restore(self, store, key, expected, is_new):
        volume = self.volumes[store][expected]
        size = len(volume.data)
        name = 'restore-%s-%s-%s' % (key, expected,
                                     'new' if is_new else 'existing')
        path = self.path(store, name)
        with open(path, 'wb') as f:
            if is_new:
                f.truncate(size)
            else:
                f.write(random.Random(size).randbytes(size))
        record = self.restoring_record(store, key)
        with open(path, 'r+b') as f:
            self.driver(store).restore(record, 'target-' + name,
                                       self.tpool_wrap(f), is_new)
        with open(path, 'rb') as f:
            restored = f.read()
        at = first_difference(volume.data, restored)
        self.checks.append({'op': 'restore %s %s onto a %s volume' % (
            store, key, 'new' if is_new else 'existing'),
            'ok': at is None, 'first_difference': at,
            'expected_md5': md5_hex(volume.data),
            'restored_md5': md5_hex(restored)})

    def run_at_once(self, calls, rendezvous):
        """Run each ``(func, args)`` in a green thread of its own."""
        import eventlet
        self.barrier = (self.threading.Barrier(len(calls),
                                               timeout=rendezvous)
                        if rendezvous else None)
        self.met = 0

        def run(func, args):
            try:
                func(*args)
            except BaseException as e:  # noqa - reported in the JSON line
                self.errors.append('%s%r: %s' % (
                    func.__name__, args,
                    traceback.format_exc(limit=-6)[-1500:]))
                if self.barrier is not None:
                    self.barrier.abort()
                if not isinstance(e, Exception):
                    raise
        threads = [eventlet.spawn(run, func, args) for func, args in calls]
        for thread in threads:
            thread.wait()
        met = self.met
        self.barrier = None
        return met

    def phases(self, rendezvous):
        setup = [(self.chain_setup, (store,)) for store in STORES]
        self.run_at_once(setup, None)
        if self.errors:
            return 0, 0
        stress = []
        for store in STORES:
            stress += [(self.backup, (store, 'c0')),
                       (self.backup, (store, 'a2', 'a1')),
                       (self.backup, (store, 'b1', 'b0')),
                       (self.restore, (store, 'a1', 'a1', True)),
                       (self.restore, (store, 'a1', 'a1', False)),
                       (self.restore, (store, 'b0', 'b0', False))]
        met = self.run_at_once(stress, rendezvous)
        if self.errors:
            return len(stress), met
        verify = []
        for store in STORES:
            verify += [(self.restore, (store, 'c0', 'c0', True)),
                       (self.restore, (store, 'a2', 'a2', False)),
                       (self.restore, (store, 'b1', 'b1', True))]
        self.run_at_once(verify, None)
        return len(stress), met

    def chain_setup(self, store):
        self.backup(store, 'a0')
        self.backup(store, 'a1', 'a0')
        self.backup(store, 'b0')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        config = json.load(f)
    patched_by = patch_process()

    import warnings
    warnings.simplefilter('ignore')
    import eventlet

    from cinder_chunked_ext.engine import budget

    stress = Stress(config, patched_by)
    state = {'ticks': 0, 'done': False}

    def ticker():
        while not state['done']:
            state['ticks'] += 1
            eventlet.sleep(0.001)

    eventlet.spawn(ticker)
    started = time.monotonic()
    operations, met = stress.phases(config['rendezvous_seconds'])
    state['done'] = True
    settings = stress.driver('posix').settings
    report = {
        'patched_by': patched_by,
        'eventlet_active': stress.concurrency.eventlet_active(),
        'stress_operations': operations,
        'met': met,
        'most_running': budget.for_settings(settings).most_running,
        'ticks': state['ticks'],
        'seconds': round(time.monotonic() - started, 1),
        'maxrss_mib': resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss // 1024,
        'errors': stress.errors,
        'checks': stress.checks,
    }
    sys.stdout.write(json.dumps(report) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
