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

"""Our drivers against upstream Cinder's, under identical conditions.

Both implementations run the same way, in the same run, each phase in a
process of its own (``tools/benchmark_phase.py``) so that its peak RSS
and CPU time are its own:

* ``--concurrency eventlet`` (the default, as ``cinder-backup`` runs):
  the phase process calls Cinder's ``cinder.monkey_patch.patch()`` first,
  and the volume is opened and wrapped by ``cinder.utils.tpool_wrap`` as
  Cinder 29's backup manager does; ``threading``: both with native
  threads (``OS_CINDER_DISABLE_EVENTLET_PATCHING=1``); ``both``: one
  table for each.
* The volume, the repositories and the restore targets are in the work
  directory, on disk by default (``--workdir`` chooses; /dev/shm only
  when named).  ``--cold`` evicts the volume and repository files from
  the page cache before every phase (``posix_fadvise(DONTNEED)``, or
  ``--cold drop``: ``/proc/sys/vm/drop_caches`` as root).

Phases: ``full`` backup; ``incr``, an incremental backup of a copy with
5% of its 32 KiB blocks rewritten; ``restore-new``, the chain restored
onto a new (sparse) volume; ``restore-existing``, the chain restored over
a copy of the original volume.  Scenarios: a mixed volume (``--size``
MiB: 40% zero runs, 30% random data, 30% log-like text) or ``--sparse``
(a sparse file of ``--sparse-size`` GiB holding ``--sparse-percent`` %
data in scattered 2 MiB extents).  ``--driver`` picks the backend (see
``tools/benchmark_backends.py``): ``posix`` (a directory), ``s3``
(one SeaweedFS server on 127.0.0.1 for the run, a bucket per
repository) or ``swift`` (a one-node OpenStack Swift on 127.0.0.1 with
tempauth, a container per repository, both drivers in ``single_user``
mode).

It prints, per phase, MB/s (of the volume's size), ours/upstream, peak
RSS and CPU seconds (medians of ``--repeat`` runs; RSS is the maximum),
and the machine's stage rates measured in the same run.  ``--json FILE``
keeps the results; ``--plot FILE`` draws them (matplotlib);
``--replot FILE`` prints and plots saved results without running.
``--keep`` leaves the work directory in place, with the command of
every phase in its ``commands.jsonl``, to run one phase again (an A/B
of two commits on the same repository, or a profile).

    tox -e benchmark                                   # eventlet, disk
    tox -e benchmark -- --concurrency both --repeat 3 --plot bench.svg
    tox -e benchmark -- --sparse --configs zlib
    tox -e benchmark -- --driver s3 --configs zlib
    tox -e benchmark -- --driver swift --configs zlib
    tox -e benchmark -- --size 32 --configs zlib       # smoke run
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_backends  # noqa: E402 - the directory of this script
from benchmark_data import make_changed_copy  # noqa: E402
from benchmark_data import make_sparse_volume  # noqa: E402
from benchmark_data import make_volume  # noqa: E402
from benchmark_data import same_file  # noqa: E402
from benchmark_data import sparse_copy  # noqa: E402
import benchmark_files  # noqa: E402
from benchmark_stages import create_probe  # noqa: E402
from benchmark_stages import effective_cores  # noqa: E402
from benchmark_stages import HASH_BLOCK  # noqa: E402
from benchmark_stages import measure_together_again  # noqa: E402
from benchmark_stages import pipeline_bounds  # noqa: E402
from benchmark_stages import place  # noqa: E402
from benchmark_stages import stage_rates  # noqa: E402
from benchmark_stages import write_tries_line  # noqa: E402
from benchmark_stages import zero_fraction  # noqa: E402
from benchmark_stages import ZLIB_LIBRARY  # noqa: E402
import benchmark_targets  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'benchmark_phase.py')
IMPLS = ('ours', 'upstream')
MODES = ('eventlet', 'threading')
MODE_LABELS = {
    'eventlet': 'eventlet (as cinder-backup runs: cinder.monkey_patch.'
                'patch(), volume behind cinder.utils.tpool_wrap)',
    'threading': 'threading (both native: OS_CINDER_DISABLE_EVENTLET_'
                 'PATCHING=1)',
}
CONFIGS = {
    # name: (compression, chunk size or None for the driver default)
    'zlib': ('zlib', None),
    'zstd': ('zstd', None),
    'none': ('none', None),
    'zlib-64m': ('zlib', 64 * MiB),
    # Encrypted ([chunked_backup] encryption = aes-256-gcm), ours only:
    # keys wrapped under a password, as the standalone tool does.
    'zstd-aes': ('zstd', None),
    'zlib-aes': ('zlib', None),
    # The same with each backup's key a secret of a key manager, as
    # cinder-backup keeps them (castellan's in-process key manager, its
    # keys in a file of the work dir: tools/benchmark_keys.py).
    'zstd-aes-km': ('zstd', None),
}
ENCRYPTED_CONFIGS = ('zstd-aes', 'zlib-aes', 'zstd-aes-km')
PLAIN_CONFIGS = tuple(c for c in CONFIGS if c not in ENCRYPTED_CONFIGS)
KEY_MANAGER_CONFIGS = ('zstd-aes-km',)
PHASES = ('full', 'incr', 'restore-new', 'restore-existing')


# -- the page cache -----------------------------------------------------------

def evict(paths, how):
    """Drop the page cache of every file under ``paths``; say how."""
    os.sync()
    if how == 'drop':
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        return
    for top in paths:
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                try:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def check_cold(how):
    """``how`` if this process may do it, else exit with the reason."""
    if how == 'drop':
        if not os.access('/proc/sys/vm/drop_caches', os.W_OK):
            raise SystemExit('--cold drop needs to write '
                             '/proc/sys/vm/drop_caches (root); use --cold '
                             'to evict only the files of the run.')
        return how
    if not hasattr(os, 'posix_fadvise'):
        raise SystemExit('--cold: posix_fadvise is not available here.')
    return how


COLD_LABELS = {
    None: 'warm page cache',
    'fadvise': 'cold: posix_fadvise(DONTNEED) on the volume and repository '
               'files before each phase',
    'drop': 'cold: sync + /proc/sys/vm/drop_caches=3 before each phase',
}


# -- running the phases -------------------------------------------------------

def have_upstream(backend):
    """Whether upstream's driver for ``backend`` can run here."""
    import importlib
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            module = importlib.import_module(backend.upstream_module)
    except ImportError:
        return False
    # Upstream's S3 and Swift drivers import without their client
    # libraries but cannot be built.
    return all(getattr(module, client, True) is not None
               for client in ('boto3', 'swift'))


def config_impls(impls, config):
    """The implementations that can run ``config``.

    Upstream has no client-side encryption: an encrypted configuration
    is ours alone, compared with our plain run of the same codec
    (:func:`benchmark_targets.evaluate`).
    """
    if config in ENCRYPTED_CONFIGS:
        return [impl for impl in impls if impl != 'upstream']
    return list(impls)


def runnable_impls(impls, backend):
    """``impls`` without upstream where it cannot run; never empty."""
    impls = list(impls)
    if 'upstream' in impls and not have_upstream(backend):
        print('(upstream skipped: cinder is not importable; run '
              '"tox -e benchmark" to compare)')
        impls.remove('upstream')
    if not impls:
        raise SystemExit('nothing to run')
    return impls


def run_process(script, argv, args, backend, server, label, timeout=None):
    """Run ``script`` in a process of its own; its last line, as JSON.

    Before it starts, the page cache is written back (and evicted with
    ``--cold``).  A failure or ``timeout`` seconds exits with its output.
    """
    cmd = [sys.executable, '-W', 'ignore', script] + argv
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    env.update(backend.phase_environment(server))
    if args.keep:
        # To run a phase again, alone or under a profiler.
        with open(os.path.join(args.workdir, 'commands.jsonl'), 'a') as f:
            f.write(json.dumps({'label': label, 'cmd': cmd,
                                'env': backend.phase_environment(server)})
                    + '\n')
    # Earlier phases leave gigabytes dirty in the page cache: write them
    # back now, so that no phase pays for another's writeback.
    os.sync()
    if args.cold:
        evict(backend.cold_paths(server, args.workdir), args.cold)
    try:
        out = subprocess.run(cmd, capture_output=True, env=env, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = subprocess.CompletedProcess(cmd, 'killed after %d s' % timeout,
                                          e.stdout, e.stderr or '')
    if out.returncode:
        stderr = out.stderr
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors='replace')
        # Beside the work directory, which goes when the run ends.
        log = os.path.join(os.path.dirname(args.workdir),
                           'benchmark-failed.log')
        with open(log, 'w') as f:
            f.write(stderr)
        raise SystemExit('%s failed (exit status %s); all it wrote is in '
                         '%s, which ends:\n%s'
                         % (label, out.returncode, log, stderr[-8000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


class Runner(object):
    """Runs the phases of one configuration for one implementation."""

    def __init__(self, args, backend, server):
        self.args = args
        self.backend = backend
        self.server = server

    def spawn(self, mode, impl, config, phase, location, records, source,
              parent):
        compression, chunk = CONFIGS[config]
        argv = ['--concurrency', mode, '--impl', impl, '--phase', phase,
                '--compression', compression, '--volume', self.args.volume,
                '--source', source, '--records', records,
                '--backend', self.backend.name,
                '--location', json.dumps(location)]
        if chunk:
            argv += ['--chunk-size', str(chunk)]
        if config in ENCRYPTED_CONFIGS:
            argv += ['--encryption', 'aes-256-gcm']
        if config in KEY_MANAGER_CONFIGS:
            argv += ['--key-manager-file',
                     os.path.join(os.path.dirname(records), 'keys.json')]
        if parent:
            argv += ['--parent', parent]
        if impl == 'ours':
            for option in self.args.ours_option:
                argv += ['--option', option]
        return run_process(PHASE_SCRIPT, argv, self.args, self.backend,
                           self.server, '%s %s %s %s' % (mode, impl, config,
                                                         phase))

    def run(self, mode, impl, config):
        args = self.args
        location = self.backend.new_location(self.server, args.workdir,
                                             '%s-%s' % (impl, config))
        records = os.path.join(args.workdir,
                               'records-%s-%s.json' % (impl, config))
        target = os.path.join(args.workdir, 'target.img')
        results = {}
        try:
            full = self.spawn(mode, impl, config, 'full', location, records,
                              args.volume, None)
            results['full'] = full
            head = full
            if 'incr' in args.phases:
                head = self.incremental(mode, impl, config, location,
                                        records, full['id'])
                results['incr'] = head
            expected = args.changed if 'incr' in args.phases else args.volume
            for phase in ('restore-new', 'restore-existing'):
                if phase not in args.phases:
                    continue
                if phase == 'restore-new':
                    with open(target, 'wb') as f:
                        f.truncate(os.path.getsize(args.volume))
                else:
                    sparse_copy(args.volume, target)
                results[phase] = self.spawn(mode, impl, config, phase,
                                            location, records, target,
                                            head['id'])
                if not same_file(target, expected):
                    raise SystemExit('%s %s %s %s: the restored volume '
                                     'differs!' % (mode, impl, config,
                                                   phase))
        finally:
            if not args.keep:
                self.backend.remove_location(self.server, location)
                for path in (records, target):
                    if os.path.exists(path):
                        os.unlink(path)
        return results

    def incremental(self, mode, impl, config, location, records, parent):
        """The incremental phase; on POSIX, what its files cost apart.

        Just before it, a file create in a new directory (one at a
        time, no fsync); after it, the files it stored, and for ours
        the file stage (``benchmark_files``) for as many of that size,
        in the same mode and work directory.
        """
        if self.backend.name != 'posix':
            return self.spawn(mode, impl, config, 'incr', location,
                              records, self.args.changed, parent)
        probe, per_file = create_probe(self.args.workdir)
        before = benchmark_files.file_sizes(location['path'])
        head = self.spawn(mode, impl, config, 'incr', location, records,
                          self.args.changed, parent)
        head['create_seconds_per_file'] = per_file
        shutil.rmtree(probe, ignore_errors=True)
        objects = benchmark_files.new_objects(
            before, benchmark_files.file_sizes(location['path']))
        if objects:
            head['objects'] = objects
            if impl == 'ours':
                head['files'] = benchmark_files.measure(
                    run_process, self.args, self.backend, self.server,
                    mode, objects)
        return head


def summarise(runs, phases):
    """Medians over repeated runs (the maximum of peak RSS)."""
    out = {}
    for phase in phases:
        cells = [r[phase] for r in runs if phase in r]
        if not cells:
            continue
        out[phase] = {
            'mbps': statistics.median(c['bytes'] / c['seconds'] / 1e6
                                      for c in cells),
            'seconds': statistics.median(c['seconds'] for c in cells),
            'cpu': statistics.median(c['cpu'] for c in cells),
            'rss': max(c['peak_rss'] for c in cells),
            'runs': len(cells),
            'patched': cells[0].get('patched'),
        }
        creates = [c['create_seconds_per_file'] for c in cells
                   if 'create_seconds_per_file' in c]
        if creates:
            out[phase]['create_seconds_per_file'] = statistics.median(
                creates)
        # What the incremental stored, and the file stage of its run of
        # median duration.
        for key, order in (('objects', 'count'), ('files', 'seconds')):
            found = sorted((c[key] for c in cells if key in c),
                           key=lambda v: v[order])
            if found:
                out[phase][key] = found[len(found) // 2]
    return out


# -- reporting ----------------------------------------------------------------

def print_rates(report):
    meta = report['meta']
    # Runs saved before the write rate was measured again kept one try.
    tries = ('the best of 3 before and %d after the phases'
             % len(report['write_after']) if 'write_after' in report
             else 'one try')
    print('\nStage rates on this machine, this run (%d cores; %.1f%% of the '
          'volume is zero MiB or holes, %.1f%% zero 32 KiB hash blocks; '
          'one native thread of the unpatched orchestrator, so the same '
          'for either mode; write + fsync of a new 256 MiB file in the '
          'work dir, on %s, %s):'
          % (meta['cores'], meta['zero_fraction'] * 100,
             meta.get('zero_block_fraction', meta['zero_fraction']) * 100,
             meta.get('place') or meta['location_kind'], tries))
    together = report.get('together') or {}
    if together:
        print('  (and on %d threads at once, in all: what the cores do '
              'together)' % meta['cores'])
    for name, rate in report['rates'].items():
        line = '  %-28s %9.0f MB/s' % (name, rate / 1e6)
        if name in together:
            line += '   %d at once: %6.0f MB/s (%.2fx one)' % (
                meta['cores'], together[name] / 1e6, together[name] / rate)
        print(line)
    tries = write_tries_line(report)
    if tries:
        print('  ' + tries)
    if meta.get('zlib_library'):
        print('  (zlib and inflate by %s, what ours uses; upstream uses '
              "Python's own zlib)" % meta['zlib_library'])
    if together:
        print('The cores are worth %.2f of one thread here (median of the '
              'stages above; each stage measured on all cores before and '
              'after the phases, the higher kept).'
              % meta['effective_cores'])
    print('Pipeline bounds (every stage at its all-cores rate; zero hash '
          'blocks cost a zero test, no SHA-256):')
    for name, rate in report['bounds'].items():
        print('  %-28s %9.0f MB/s' % (name, rate / 1e6))


def print_table(report, mode):
    meta = report['meta']
    table = report['results'].get(mode)
    if not table:
        return
    print('\nMode: %s' % MODE_LABELS[mode])
    patched = sorted({cell.get('patched') for per_impl in table.values()
                      for phases in per_impl.values()
                      for cell in phases.values()} - {None})
    if patched:
        print('Phase processes: %s.' % '; '.join(patched))
    print('Repository: %s; %s; driver %s; %s; %s.'
          % (meta['location'], meta['cold'], meta['driver'],
             meta['scenario_label'],
             'median of %d runs' % meta['repeat'] if meta['repeat'] > 1
             else 'one run'))
    if meta.get('ours_options'):
        print('Ours with options: %s.' % ', '.join(meta['ours_options']))
    impls = [i for i in IMPLS if i in meta['impls']]
    both = len(impls) == 2
    head = '%-11s %-17s' % ('config', 'phase')
    for impl in impls:
        head += '%14s %9s' % (impl + ' MB/s', 'seconds')
    if both:
        head += '%8s' % 'ratio'
    for impl in impls:
        head += '%14s %7s' % (impl + ' RSS', 'CPU s')
    print(head)
    for config, per_impl in table.items():
        for phase in PHASES:
            # An encrypted configuration has no upstream cells.
            cells = {i: per_impl.get(i, {}).get(phase) for i in impls}
            if not any(cells.values()):
                continue
            row = '%-11s %-17s' % (config, phase)
            for impl in impls:
                cell = cells[impl]
                row += ('%14.1f %9.2f' % (cell['mbps'], cell['seconds'])
                        if cell else '%14s %9s' % ('-', '-'))
            if both:
                row += ('%7.2fx' % (cells['ours']['mbps'] /
                                    cells['upstream']['mbps'])
                        if all(cells.values()) else '%8s' % '-')
            for impl in impls:
                cell = cells[impl]
                row += ('%11.0f MB %7.1f' % (cell['rss'] / MiB, cell['cpu'])
                        if cell else '%14s %7s' % ('-', '-'))
            print(row)
    print_create_probes(table, impls)
    print_targets(report, mode)


def print_targets(report, mode):
    """Issue 19's targets for ``mode``, each beside its stage bound."""
    meta = report['meta']
    if 'targets' not in report:
        report['targets'] = benchmark_targets.evaluate(report)
    files = []
    for config, per_impl in report['results'][mode].items():
        probe = per_impl.get('ours', {}).get('incr', {}).get('files')
        if probe:
            stored = per_impl.get('upstream', {}).get('incr', {}).get(
                'objects')
            files.append('Files (%s incr): %s%s.' % (
                config, benchmark_files.describe(probe),
                '; upstream\'s incr stored %d files' % stored['count']
                if stored else ''))
    benchmark_targets.print_targets(
        report['targets'], mode,
        'Targets of issues 19 and 21 (set for: %s)\nthis run: %s mode, '
        'work dir on %s, driver %s, %s:' % (
            benchmark_targets.CONDITIONS, mode,
            (meta.get('place') or meta['location_kind']), meta['driver'],
            meta['scenario_label']),
        benchmark_targets.bound_notes(report, files))


def print_create_probes(table, impls):
    """The file creation cost measured just before each incremental."""
    probes = []
    for config, per_impl in table.items():
        for impl in impls:
            cell = per_impl.get(impl, {}).get('incr', {})
            if 'create_seconds_per_file' in cell:
                probes.append('%s %s %.0f us' % (
                    config, impl, cell['create_seconds_per_file'] * 1e6))
    if probes:
        print('Creating a file in a new directory of the work dir, just '
              'before each incremental (one directory creates one file at '
              'a time; median): %s.' % ', '.join(probes))


def print_report(report):
    print_rates(report)
    for mode in MODES:
        print_table(report, mode)
    print()


def plot(report, path):
    """Ours against upstream, MB/s per phase, one panel per mode."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit('--plot needs matplotlib (it is in the tox '
                         '"benchmark" environment).')
    matplotlib.use('Agg')
    from matplotlib import pyplot

    modes = [m for m in MODES if report['results'].get(m)]
    fig, axes = pyplot.subplots(len(modes), 1, squeeze=False,
                                figsize=(10, 3.6 * len(modes)))
    meta = report['meta']
    for ax, mode in zip(axes[:, 0], modes):
        table = report['results'][mode]
        labels, values = [], {impl: [] for impl in meta['impls']}
        for config, per_impl in table.items():
            for phase in PHASES:
                if not all(phase in per_impl.get(i, {})
                           for i in meta['impls']):
                    continue
                labels.append('%s\n%s' % (config, phase))
                for impl in meta['impls']:
                    values[impl].append(per_impl[impl][phase]['mbps'])
        width = 0.8 / max(1, len(values))
        for n, (impl, vals) in enumerate(values.items()):
            xs = [i + (n - (len(values) - 1) / 2) * width
                  for i in range(len(labels))]
            bars = ax.bar(xs, vals, width, label=impl)
            ax.bar_label(bars, fmt='%.0f', fontsize=7)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel('MB/s')
        ax.set_title('%s, %s, %s (%s)' % (
            mode, meta['driver'], meta['scenario_label'],
            meta['location_kind']), fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print('Chart written to %s' % path)


# -- the command line ---------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('--size', type=int, default=1024,
                        help='Size of the mixed volume in MiB (default '
                             '1024).')
    parser.add_argument('--sparse', action='store_true',
                        help='Use a sparse volume instead of the mixed one.')
    parser.add_argument('--sparse-size', type=int, default=16,
                        help='Size of the sparse volume in GiB (default 16).')
    parser.add_argument('--sparse-percent', type=float, default=3.0,
                        help='Percentage of the sparse volume holding data, '
                             'in 2 MiB extents (default 3).')
    parser.add_argument('--configs', default='zlib,zstd',
                        help='Comma-separated configurations to run, among '
                             '%s (default zlib,zstd).' % ', '.join(CONFIGS))
    parser.add_argument('--phases', default=','.join(PHASES),
                        help='Comma-separated phases to run, among %s '
                             '(default all; full always runs).'
                             % ', '.join(PHASES))
    add_run_options(parser)
    parser.add_argument('--repeat', type=int, default=1,
                        help='Runs of every phase; medians are reported '
                             '(default 1).')
    parser.add_argument('--plot', metavar='FILE',
                        help='Draw ours against upstream per phase to FILE '
                             '(.svg, .png; needs matplotlib).')
    parser.add_argument('--replot', metavar='FILE',
                        help='Print and plot the results saved in FILE by '
                             '--json, without running anything.')
    args = parser.parse_args(argv)
    check_run_options(parser, args)
    args.phases = _choices(parser, '--phases', args.phases, PHASES)
    if 'full' not in args.phases:
        args.phases.insert(0, 'full')
    if args.repeat < 1:
        parser.error('--repeat must be at least 1')
    return args


def add_run_options(parser):
    """The options this benchmark and ``benchmark_load.py`` share."""
    parser.add_argument('--driver', choices=sorted(benchmark_backends
                                                   .BACKENDS),
                        default='posix',
                        help='The backend whose drivers are compared '
                             '(default posix).')
    parser.add_argument('--impls', default='ours,upstream',
                        help='Comma-separated implementations to run, among '
                             '%s (default both).' % ', '.join(IMPLS))
    parser.add_argument('--concurrency', default='eventlet',
                        choices=MODES + ('both',),
                        help='How both implementations run: eventlet (as '
                             'cinder-backup runs by default), threading, '
                             'or both, one table each (default eventlet).')
    parser.add_argument('--workdir', default=None,
                        help='Directory under which the volumes and '
                             'repositories go (default: the current '
                             'directory, so they are on its disk; name '
                             '/dev/shm to leave the disk out).')
    parser.add_argument('--cold', nargs='?', const='fadvise', default=None,
                        choices=('fadvise', 'drop'),
                        help='Evict the run\'s files from the page cache '
                             'before every phase: with posix_fadvise '
                             '(default) or, as root, by writing '
                             '/proc/sys/vm/drop_caches ("drop"), which '
                             'empties the cache of everyone on the '
                             'machine.')
    parser.add_argument('--json', metavar='FILE',
                        help='Also save the results as JSON to FILE.')
    parser.add_argument('--ours-option', action='append', default=[],
                        metavar='GROUP.NAME=VALUE',
                        help='Set an option of ours in every phase (as '
                             'cinder.conf would; repeatable), e.g. '
                             'chunked_backup.restore_spool_dir=/var/tmp. '
                             'Upstream runs with its defaults.')
    parser.add_argument('--keep', action='store_true',
                        help='Keep the work directory (volumes, '
                             'repositories, records) and write the '
                             'command of every phase to commands.jsonl '
                             'in it, to run a phase again alone or under '
                             'a profiler.')


def check_run_options(parser, args, configs=CONFIGS):
    """Check the shared options; set ``args.modes``.

    ``--configs`` is checked against ``configs``.
    """
    args.impls = _choices(parser, '--impls', args.impls, IMPLS)
    args.configs = _choices(parser, '--configs', args.configs, configs)
    args.modes = list(MODES) if args.concurrency == 'both' else [
        args.concurrency]


def _choices(parser, flag, value, allowed):
    chosen = [c for c in value.split(',') if c]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        parser.error('%s: expected some of %s, got %r'
                     % (flag, ', '.join(allowed), value))
    return [c for c in allowed if c in chosen]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a.split('=')[0] == '--operations' for a in argv):
        # Many operations at once in one process: a mode of its own.
        import benchmark_load
        return benchmark_load.main(argv)
    args = parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            report = json.load(f)
        print_report(report)
        if args.plot:
            plot(report, args.plot)
        return 0
    report = run_in_workdir(args, 'cinder-chunked-bench-', bench,
                            print_report)
    if args.plot:
        plot(report, args.plot)
    return 0


def run_in_workdir(args, prefix, bench_func, print_func):
    """``bench_func(args, backend, server)`` in a new work directory.

    The directory (under ``--workdir``) and the backend's server last
    for the run; the report is printed and saved (``--json``).
    """
    if args.cold:
        check_cold(args.cold)
    backend = benchmark_backends.BACKENDS[args.driver]
    parent = os.path.abspath(args.workdir or os.getcwd())
    if not os.path.isdir(parent):
        raise SystemExit('--workdir %s: no such directory (the benchmark '
                         'makes its work directory inside it)' % parent)
    args.workdir = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        with backend.server(args.workdir) as server:
            report = bench_func(args, backend, server)
    finally:
        if args.keep:
            print('Work directory kept: %s (phase commands in '
                  'commands.jsonl)' % args.workdir)
        else:
            shutil.rmtree(args.workdir, ignore_errors=True)
    # Saved first: a long run is never lost to its printing.
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    print_func(report)
    if args.json:
        print('Results saved to %s' % args.json)
    return report


def bench(args, backend, server):
    args.volume = os.path.join(args.workdir, 'volume.img')
    args.changed = os.path.join(args.workdir, 'volume-changed.img')
    if args.sparse:
        label = '%d GiB sparse volume, %g%% data' % (args.sparse_size,
                                                     args.sparse_percent)
        print('Making a %s in %s ...' % (label, args.workdir))
        make_sparse_volume(args.volume, args.sparse_size * GiB,
                           args.sparse_percent)
    else:
        label = '%d MiB mixed volume' % args.size
        print('Making a %s in %s ...' % (label, args.workdir))
        make_volume(args.volume, args.size * MiB)
    changed = make_changed_copy(args.volume, args.changed)
    cores = len(os.sched_getaffinity(0))
    zeros = zero_fraction(args.volume)
    zero_blocks = zero_fraction(args.volume, HASH_BLOCK)
    changed_zero_blocks = zero_fraction(args.changed, HASH_BLOCK)
    rates, together, write_tries = stage_rates(args.volume, args.workdir,
                                               cores)
    location = backend.describe(server, args.workdir)
    impls = runnable_impls(args.impls, backend)
    report = {
        'meta': {
            'driver': backend.name, 'scenario_label': label,
            'location': location,
            'location_kind': location.split(':')[0] + (
                ' (tmpfs)' if 'tmpfs' in location else ''),
            'cold': COLD_LABELS[args.cold], 'repeat': args.repeat,
            'place': place(args.workdir),
            'volume_bytes': os.path.getsize(args.volume),
            'changed_bytes': changed,
            'cores': cores,
            'effective_cores': effective_cores(rates, together, cores),
            'zero_fraction': zeros, 'zero_block_fraction': zero_blocks,
            'changed_zero_block_fraction': changed_zero_blocks,
            'impls': impls,
            'configs': args.configs, 'phases': args.phases,
            'command': ' '.join(['tools/benchmark.py'] + sys.argv[1:]),
            'ours_options': args.ours_option,
            'zlib_library': ZLIB_LIBRARY,
            'date': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%d %H:%M UTC'),
        },
        'rates': rates,
        'write_before': write_tries,
        'together': together,
        'bounds': pipeline_bounds(rates, zeros, cores, together,
                                  zero_blocks),
        'results': {},
    }
    print('Repository: %s' % location)
    runner = Runner(args, backend, server)
    for mode in args.modes:
        table = report['results'].setdefault(mode, {})
        for config in args.configs:
            runs = {impl: [] for impl in config_impls(impls, config)}
            # Alternate the implementations, so that a neighbour's load
            # falls on both alike.
            for n in range(args.repeat):
                for impl in runs:
                    print('  %s %s %s run %d/%d ...' % (
                        mode, config, impl, n + 1, args.repeat), flush=True)
                    runs[impl].append(runner.run(mode, impl, config))
            table[config] = {impl: summarise(runs[impl], args.phases)
                             for impl in runs}
    measure_together_again(report, args.volume, args.workdir)
    report['targets'] = benchmark_targets.evaluate(report)
    return report


if __name__ == '__main__':
    sys.exit(main())
