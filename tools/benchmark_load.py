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

"""Many operations at once in one process: ours and upstream under load.

``cinder-backup`` runs every backup and restore it is asked for in one
process, each in a green thread of its own with a driver object of its
own.  For each implementation and each N of ``--operations``, this
runs N full backups of N different volumes at once, then N incremental
backups of them (5% of their 32 KiB blocks rewritten) at once, then the
N chains restored onto N new volumes at once, each phase in a process
of its own (``tools/benchmark_load_phase.py``), so that its peak RSS and
CPU seconds are its own.  Every restored volume is compared with its
source; a difference fails the run.

Modes as in ``tools/benchmark.py``: ``--concurrency eventlet`` (the
default: ``cinder.monkey_patch.patch()`` first, volumes behind
``cinder.utils.tpool_wrap``), ``threading``
(``OS_CINDER_DISABLE_EVENTLET_PATCHING=1``) or ``both``.  It prints,
per phase and N, the aggregate MB/s (all N volumes' bytes over the wall
time of the phase), the wall time, the peak RSS, the CPU seconds and
the slowest operation's seconds; then issue 17's targets for ours (no
throughput collapse from N = 1 to the largest N, and peak RSS at most
1.5 times that at N = 1) and issue 19's (ours' incremental and restore
at least twice upstream's aggregate at the largest N), each beside the
stage bound of the same run (``tools/benchmark_targets.py``).  The
stage rates are measured on the first volume, in the work directory;
after each incremental on POSIX, the file stage too: as many files as
each of ours' N incrementals stored, N directories at once
(``tools/benchmark_files.py``, in the phase's mode).

    tox -e benchmark -- --operations 1,4,8              # the default run
    tox -e benchmark -- --operations 1,2 --volume-mib 64  # smoke run
    tools/benchmark_load.py --replot load.json
"""

import argparse
import datetime
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # noqa: E402 - the directory of this script
import benchmark_data  # noqa: E402
import benchmark_files  # noqa: E402
import benchmark_stages  # noqa: E402
import benchmark_targets  # noqa: E402

MiB = benchmark.MiB
LOAD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'benchmark_load_phase.py')
PHASES = ('full', 'incr', 'restore')
# The phase script's name for a restore onto a new volume.
PHASE_ARG = {'full': 'full', 'incr': 'incr', 'restore': 'restore-new'}
VOLUME_ID = 'b3c0b4e5-0000-4000-8000-%012d'
# Upstream's default object size per backend (backup_file_size,
# backup_s3_object_size, backup_swift_object_size): the most of a
# volume it holds in memory per operation.
UPSTREAM_CHUNK = {'posix': 1999994880, 's3': 52428800, 'swift': 52428800}
# Upstream's growth per operation, in multiples of the object it holds
# (the data read, its compressed copy): measured 1.1 to 1.3 on mixed
# 64 MiB volumes; 1.5 leaves a margin.
UPSTREAM_COPIES = 1.5


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='benchmark.py --operations',
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:]))
    parser.add_argument('--operations', default='1,4,8',
                        help='Comma-separated numbers of operations at once '
                             '(default 1,4,8).')
    parser.add_argument('--volume-mib', type=int, default=256,
                        help='Size of each mixed volume in MiB (default '
                             '256).')
    parser.add_argument('--phases', default=','.join(PHASES),
                        help='Comma-separated phases, among %s (default '
                             'all; full always runs).' % ', '.join(PHASES))
    parser.add_argument('--configs', default='zlib',
                        help='Comma-separated configurations, among %s '
                             '(default zlib; the encrypted ones are for the '
                             'single-operation benchmark).'
                             % ', '.join(benchmark.PLAIN_CONFIGS))
    benchmark.add_run_options(parser)
    parser.add_argument('--upstream-chunk-mib', type=int,
                        help='Upstream\'s object size in MiB (default: its '
                             'driver\'s default, which it holds in memory '
                             'per operation; the run refuses to start '
                             'when N of those would not fit).')
    parser.add_argument('--timeout', type=int, default=1800,
                        help='Seconds a phase may take before its process '
                             'dumps its threads\' stacks and fails the run '
                             '(default 1800).')
    parser.add_argument('--replot', metavar='FILE',
                        help='Print the results saved in FILE by --json, '
                             'without running anything.')
    args = parser.parse_args(argv)
    try:
        args.operations = sorted({int(n) for n in
                                  args.operations.split(',') if n})
    except ValueError:
        parser.error('--operations: expected numbers, got %r'
                     % args.operations)
    if not args.operations or args.operations[0] < 1:
        parser.error('--operations: expected numbers of at least 1')
    benchmark.check_run_options(parser, args, benchmark.PLAIN_CONFIGS)
    args.phases = benchmark._choices(parser, '--phases', args.phases,
                                     PHASES)
    if 'full' not in args.phases:
        args.phases.insert(0, 'full')
    return args


# -- memory -------------------------------------------------------------------

def available_memory():
    """MemAvailable in bytes (None where /proc/meminfo does not say)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def upstream_chunk(args, config):
    """Upstream's object size for ``config``: (bytes, how it was set)."""
    _compression, chunk = benchmark.CONFIGS[config]
    if args.upstream_chunk_mib:
        return args.upstream_chunk_mib * MiB, '--upstream-chunk-mib'
    if chunk:
        return chunk, 'configuration %s' % config
    return UPSTREAM_CHUNK[args.driver], 'driver default'


def check_memory(args):
    """Refuse a run whose upstream phases would not fit in memory."""
    if 'upstream' not in args.impls:
        return
    free = available_memory()
    for config in args.configs:
        chunk, how = upstream_chunk(args, config)
        need = int(args.operations[-1] * UPSTREAM_COPIES *
                   min(chunk, args.volume_mib * MiB))
        print('Upstream objects: %d MiB (%s); about %d MiB at N = %d.'
              % (chunk // MiB, how, need // MiB, args.operations[-1]))
        if free is not None and need > free * 0.9:
            raise SystemExit(
                'Upstream at N = %d would need about %d MiB, and %d MiB are '
                'available: pass --upstream-chunk-mib, smaller volumes or '
                'fewer operations.' % (args.operations[-1], need // MiB,
                                       free // MiB))


# -- running ------------------------------------------------------------------

class LoadRunner(object):
    """Runs the phases of N operations at once for one implementation."""

    def __init__(self, args, backend, server, volumes, changed):
        self.args = args
        self.backend = backend
        self.server = server
        self.volumes = volumes
        self.changed = changed

    def spawn(self, mode, impl, config, phase, location, records, ops):
        compression, chunk = benchmark.CONFIGS[config]
        if impl == 'upstream':
            chunk = upstream_chunk(self.args, config)[0]
        argv = ['--concurrency', mode, '--impl', impl,
                '--phase', PHASE_ARG[phase], '--compression', compression,
                '--records', records, '--backend', self.backend.name,
                '--location', json.dumps(location), '--ops', json.dumps(ops),
                '--timeout', str(self.args.timeout)]
        if chunk:
            argv += ['--chunk-size', str(chunk)]
        label = '%s %s %s N=%d %s' % (mode, impl, config, len(ops), phase)
        print('  %s ...' % label, flush=True)
        return benchmark.run_process(LOAD_SCRIPT, argv, self.args,
                                     self.backend, self.server, label,
                                     timeout=self.args.timeout + 120)

    def run(self, mode, impl, config, count):
        args = self.args
        location = self.backend.new_location(
            self.server, args.workdir, '%s-%s-n%d' % (impl, config, count))
        records = os.path.join(args.workdir, 'records-%s-%d.json'
                               % (impl, count))
        targets = [os.path.join(args.workdir, 'target-%d.img' % n)
                   for n in range(count)]
        ops = [{'volume_id': VOLUME_ID % n, 'source': self.volumes[n]}
               for n in range(count)]
        expected = self.volumes
        results = {}
        try:
            results['full'] = self.spawn(mode, impl, config, 'full',
                                         location, records, ops)
            heads = [op['id'] for op in results['full']['ops']]
            if 'incr' in args.phases:
                ops = [dict(op, source=self.changed[n], parent=heads[n])
                       for n, op in enumerate(ops)]
                results['incr'] = self.incremental(mode, impl, config,
                                                   location, records, ops)
                heads = [op['id'] for op in results['incr']['ops']]
                expected = self.changed
            if 'restore' in args.phases:
                for target in targets:
                    with open(target, 'wb') as f:
                        f.truncate(args.volume_mib * MiB)
                ops = [dict(op, source=targets[n], parent=heads[n])
                       for n, op in enumerate(ops)]
                results['restore'] = self.spawn(mode, impl, config,
                                                'restore', location, records,
                                                ops)
                wrong = [n + 1 for n in range(count)
                         if not benchmark_data.same_file(targets[n],
                                                         expected[n])]
                if wrong:
                    raise SystemExit(
                        '%s %s %s N=%d: restored volume(s) %s of %d differ '
                        'from their source!' % (mode, impl, config, count,
                                                wrong, count))
        finally:
            if not args.keep:
                self.backend.remove_location(self.server, location)
                for path in [records] + targets:
                    if os.path.exists(path):
                        os.unlink(path)
        return {phase: cell(result) for phase, result in results.items()}

    def incremental(self, mode, impl, config, location, records, ops):
        """N incrementals at once; on POSIX, what their files cost apart.

        The files they stored are counted, and for ours the file stage
        (``benchmark_files``) is measured for as many files per
        operation, of their median size, N directories at once.
        """
        if self.backend.name != 'posix':
            return self.spawn(mode, impl, config, 'incr', location,
                              records, ops)
        before = benchmark_files.file_sizes(location['path'])
        result = self.spawn(mode, impl, config, 'incr', location, records,
                            ops)
        objects = benchmark_files.new_objects(
            before, benchmark_files.file_sizes(location['path']))
        if objects:
            result['objects'] = objects
            if impl == 'ours':
                per_op = dict(objects,
                              count=max(1, objects['count'] // len(ops)))
                result['files'] = benchmark_files.measure(
                    benchmark.run_process, self.args, self.backend,
                    self.server, mode, per_op, groups=len(ops))
        return result


def cell(result):
    """One phase's figures, for the table and the JSON."""
    return {
        'mbps': result['bytes'] / result['seconds'] / 1e6,
        'seconds': result['seconds'], 'cpu': result['cpu'],
        'rss': result['peak_rss'], 'bytes': result['bytes'],
        'op_seconds': [op['seconds'] for op in result['ops']],
        'patched': result.get('patched'),
        **{key: result[key] for key in ('objects', 'files') if key in result}
    }


def make_volumes(args):
    """N different mixed volumes, and each one's changed copy.

    Every volume has the same runs of zeros, random data and text, with
    contents of its own: the same work per byte, so that N operations at
    once are compared with one on equal terms (volumes of different
    mixes differed by 28% in CPU per byte), and a restore of the wrong
    volume still shows.
    """
    volumes, changed = [], []
    count = args.operations[-1]
    print('Making %d mixed volumes of %d MiB in %s ...'
          % (count, args.volume_mib, args.workdir), flush=True)
    for n in range(count):
        path = os.path.join(args.workdir, 'volume-%d.img' % n)
        benchmark_data.make_volume(path, args.volume_mib * MiB,
                                   content_seed=20261126 + n)
        volumes.append(path)
        if 'incr' in args.phases:
            changed.append(os.path.join(args.workdir,
                                        'volume-%d-changed.img' % n))
            args.changed_bytes = benchmark_data.make_changed_copy(
                path, changed[-1])
    return volumes, changed


def bench(args, backend, server):
    volumes, changed = make_volumes(args)
    # The stages, on the first volume (all have the same mix).
    cores = len(os.sched_getaffinity(0))
    zeros = benchmark_stages.zero_fraction(volumes[0])
    zero_blocks = benchmark_stages.zero_fraction(volumes[0],
                                                 benchmark_stages.HASH_BLOCK)
    rates, together, write_tries = benchmark_stages.stage_rates(
        volumes[0], args.workdir, cores)
    location = backend.describe(server, args.workdir)
    impls = benchmark.runnable_impls(args.impls, backend)
    report = {
        'meta': {
            'driver': backend.name, 'location': location,
            'cold': benchmark.COLD_LABELS[args.cold], 'impls': impls,
            'operations': args.operations, 'volume_mib': args.volume_mib,
            'phases': args.phases, 'configs': args.configs,
            'upstream_chunk': {c: upstream_chunk(args, c)
                               for c in args.configs},
            'cores': cores,
            'effective_cores': benchmark_stages.effective_cores(
                rates, together, cores),
            'zero_fraction': zeros, 'zero_block_fraction': zero_blocks,
            'changed_zero_block_fraction': (
                benchmark_stages.zero_fraction(changed[0],
                                               benchmark_stages.HASH_BLOCK)
                if changed else zero_blocks),
            'place': benchmark_stages.place(args.workdir),
            'volume_bytes': args.volume_mib * MiB,
            'changed_bytes': getattr(args, 'changed_bytes', 0),
            'command': ' '.join(['tools/benchmark_load.py'] + sys.argv[1:]),
            'zlib_library': benchmark_stages.ZLIB_LIBRARY,
            'date': datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%d %H:%M UTC'),
        },
        'rates': rates,
        'write_before': write_tries,
        'together': together,
        'bounds': benchmark_stages.pipeline_bounds(rates, zeros, cores,
                                                   together, zero_blocks),
        'results': {},
    }
    print('Repository: %s' % location)
    runner = LoadRunner(args, backend, server, volumes, changed)
    for mode in args.modes:
        for config in args.configs:
            table = report['results'].setdefault(mode, {}).setdefault(
                config, {impl: {} for impl in impls})
            for count in args.operations:
                # Alternate the implementations, so that a neighbour's
                # load falls on both alike.
                for impl in impls:
                    table[impl][str(count)] = runner.run(mode, impl, config,
                                                         count)
    benchmark_stages.measure_together_again(report, volumes[0],
                                            args.workdir)
    report['targets'] = benchmark_targets.evaluate_load(report)
    return report


# -- reporting ----------------------------------------------------------------

def print_table(report, mode):
    meta = report['meta']
    configs = report['results'].get(mode)
    if not configs:
        return
    print('\nMode: %s' % benchmark.MODE_LABELS[mode])
    patched = sorted({c.get('patched') for per_impl in configs.values()
                      for counts in per_impl.values()
                      for phases in counts.values()
                      for c in phases.values()} - {None})
    if patched:
        print('Phase processes: %s.' % '; '.join(patched))
    print('Repository: %s; %s; driver %s; N different %d MiB mixed volumes, '
          'N operations at once in one process, each through a driver '
          'object of its own; one run.' % (
              meta['location'], meta['cold'], meta['driver'],
              meta['volume_mib']))
    for config, (chunk, how) in meta['upstream_chunk'].items():
        if 'upstream' in meta['impls']:
            print('Upstream objects (%s): %d MiB (%s).'
                  % (config, chunk // MiB, how))
    print('%-7s %-8s %3s %-9s %9s %8s %10s %7s %9s %7s' % (
        'config', 'phase', 'N', 'impl', 'MB/s', 'wall s', 'peak RSS',
        'CPU s', 'slowest', 'ours/up'))
    for config, per_impl in configs.items():
        for phase in meta['phases']:
            for count in meta['operations']:
                for impl in benchmark.IMPLS:
                    c = per_impl.get(impl, {}).get(str(count), {}).get(phase)
                    if not c:
                        continue
                    up = per_impl.get('upstream', {}).get(
                        str(count), {}).get(phase)
                    ratio = ('%6.2fx' % (c['mbps'] / up['mbps'])
                             if impl == 'ours' and up else '')
                    print('%-7s %-8s %3d %-9s %9.1f %8.2f %7.0f MB %7.1f '
                          '%8.2fs %7s' % (config, phase, count, impl,
                                          c['mbps'], c['seconds'],
                                          c['rss'] / MiB, c['cpu'],
                                          max(c['op_seconds']), ratio))
    print_targets(report, mode)


def print_targets(report, mode):
    """Issue 17's targets (and 19's under load), beside stage bounds."""
    meta = report['meta']
    targets = report.get('targets')
    if not targets or not isinstance(targets[0], dict):
        # Saved by an older benchmark: evaluated again, without bounds.
        targets = report['targets'] = benchmark_targets.evaluate_load(
            report)
    files = []
    for config, per_impl in report['results'][mode].items():
        for count in meta['operations']:
            probe = per_impl.get('ours', {}).get(str(count), {}).get(
                'incr', {}).get('files')
            if probe:
                files.append('Files (%s incr, N=%d): %s.' % (
                    config, count, benchmark_files.describe(probe)))
    benchmark_targets.print_targets(
        targets, mode,
        'Targets of issue 17 (and issue 19 under load), for ours; %s mode, '
        'work dir on %s, driver %s:' % (
            mode, meta.get('place') or meta['location'], meta['driver']),
        benchmark_targets.bound_notes(report, files))


def print_report(report):
    if report.get('rates'):
        benchmark.print_rates(report)
    for mode in benchmark.MODES:
        print_table(report, mode)
    print()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.replot:
        with open(args.replot) as f:
            print_report(json.load(f))
        return 0
    check_memory(args)
    benchmark.run_in_workdir(args, 'cinder-chunked-load-', bench,
                             print_report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
