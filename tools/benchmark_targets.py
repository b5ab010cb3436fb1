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

"""The targets of issues 19, 17 and 21, each beside the stage bound it meets.

Issue 21's (what encryption costs) has no stage bound: it compares two
runs of ours, encrypted and plain, of the same codec in the same run.

A target says what ours must reach; the stage bound says what this
machine allows for that phase, from the stage rates measured in the
same run (SHA-256, MD5, the codecs, the zero test, write + fsync in the
work directory, and for incrementals on the POSIX driver the file
stage of ``benchmark_files``).  A bound is never derived from our own
CPU seconds: that would take our current cost as given.

Evaluated once when the run ends and kept in the report (``--json``),
so that ``--replot`` prints exactly what the run printed.
"""

import textwrap

import benchmark_stages

MiB = 1024 * 1024
RSS_LIMIT = 256 * MiB
RSS_GROWTH = 1.5
LOAD_UPSTREAM_RATIO = 2.0
CONDITIONS = ('eventlet mode, repository on disk, default options, '
              '1 GiB mixed volume')
# Codec rates on data that does not compress: an incremental's changed
# blocks (random bytes in the benchmark).
RANDOM_CODEC = {'zlib': 'zlib-6 (random data)',
                'zstd': 'zstd-3 (random data)'}
DECODER = {'zlib': 'inflate', 'zstd': 'zstd decompress'}

# Issue 19, one operation: (drivers, phase, configs, kind, value).
# kind: 'ratio' to upstream's MB/s, 'mbps' absolute, 'write' a share of
# the write + fsync rate of the work directory.
SINGLE_TARGETS = (
    (('posix',), 'incr', ('zlib', 'zstd'), 'ratio', 3.0),
    (('s3',), 'incr', ('zlib', 'zstd'), 'ratio', 2.0),
    (('posix',), 'restore-new', ('zlib',), 'ratio', 4.0),
    (('posix',), 'restore-new', ('zstd',), 'mbps', 500.0),
    (('posix',), 'restore-existing', ('zlib',), 'ratio', 2.5),
    (('posix',), 'restore-existing', ('zstd',), 'write', 0.9),
)
WRITE_RATE = 'write + fsync (work dir)'
# Issue 21: encryption's share of the wall time, against our plain run
# of the same codec in the same run (upstream cannot encrypt).
ENCRYPTION_COST = 0.10
ENCRYPTION_TARGET_CODECS = ('zstd',)


# -- the bounds ---------------------------------------------------------------

def _volume_and_changes_seconds(meta, rates, together, zeros, codec,
                                restoring=False):
    """Seconds to hash the volume and code and check its changed bytes.

    A zero test for the ``zeros`` share of hash blocks, SHA-256 for the
    others; ``codec`` (a stage rate's name, or None) and MD5 for the
    changed bytes (a backup records it); each stage at its rate on all
    cores at once.  ``restoring``: the changed bytes are checked by the
    cheaper of MD5 and SHA-256 (either record proves them).
    """
    together = together or {}

    def seconds_per_byte(name):
        return 1 / benchmark_stages.all_cores_rate(
            rates, together, meta['cores'], name)

    size, changed = meta['volume_bytes'], meta.get('changed_bytes', 0)
    seconds = size * (zeros * seconds_per_byte('zero test') +
                      (1 - zeros) * seconds_per_byte('sha256'))
    check = seconds_per_byte('md5')
    if restoring:
        check = min(check, seconds_per_byte('sha256'))
    return seconds + changed * ((seconds_per_byte(codec) if codec in rates
                                 else 0) + check)


def incremental_bound(meta, rates, algo, files=None, count=1,
                      together=None):
    """MB/s of ``count`` incrementals at once the stages allow; and why.

    Every zero hash block costs a zero test, every other a SHA-256, every
    changed byte the codec and an MD5; all cores share that, each stage
    at its rate on all cores at once (``together``, measured in the same
    run).  On the POSIX driver the files the run's incremental stored
    must also be made durable (``files``, measured with ``count``
    operations at once): its wall time is a floor, and its CPU joins the
    rest, on what the cores are worth together.
    """
    # The incremental hashes the changed copy of the volume.
    zeros = meta.get('changed_zero_block_fraction',
                     meta.get('zero_block_fraction', meta['zero_fraction']))
    seconds = _volume_and_changes_seconds(meta, rates, together, zeros,
                                          RANDOM_CODEC.get(algo))
    seconds *= count
    why = 'CPU stages'
    if files:
        worth = meta.get('effective_cores', meta['cores'])
        with_files = seconds + files['cpu'] / worth
        seconds, why = max((files['seconds'], 'files'),
                           (with_files, 'CPU stages + files'))
    return count * meta['volume_bytes'] / seconds / 1e6, why


def changed_blocks_bound(meta, rates, algo, together=None):
    """MB/s of a restore over the volume the chain started from; and why.

    As ours restores over an existing volume
    (``restore_changed_blocks_only``): the volume is read and hashed
    (a zero test for its zero hash blocks, SHA-256 for the others), the
    changed bytes are decoded and checked (the cheaper of MD5 and
    SHA-256), and written with an fsync.  Nothing is written before every
    object needed is proved, so the three add up rather than overlap.
    """
    zeros = meta.get('zero_block_fraction', meta['zero_fraction'])
    seconds = _volume_and_changes_seconds(meta, rates, together, zeros,
                                          DECODER.get(algo), restoring=True)
    changed = meta.get('changed_bytes', 0)
    seconds += changed / rates[WRITE_RATE]
    return (meta['volume_bytes'] / seconds / 1e6,
            'hash the volume, decode + write changes')


def phase_bound(report, algo, phase, cell=None, count=1):
    """(MB/s, what bounds it) for ``phase``, or None when unmeasured."""
    rates, bounds = report.get('rates'), report.get('bounds', {})
    if not rates:
        return None
    if phase == 'incr':
        if 'volume_bytes' not in report['meta']:
            return None     # saved by an older benchmark
        return incremental_bound(report['meta'], rates, algo,
                                 (cell or {}).get('files'), count,
                                 report.get('together'))
    if (phase == 'restore-existing' and count == 1
            and report['meta'].get('changed_bytes')):
        return changed_blocks_bound(report['meta'], rates, algo,
                                    report.get('together'))
    key = {'full': 'backup', 'restore': 'restore',
           'restore-new': 'restore', 'restore-existing':
           'restore-existing'}[phase] + ' ' + algo
    if key not in bounds:
        return None
    write = rates[WRITE_RATE] / 1e6
    nonzero = 1 - report['meta']['zero_fraction']
    limit = {'restore-existing': write,
             'restore': write / nonzero if nonzero else None,
             'restore-new': write / nonzero if nonzero else None}.get(phase)
    mbps = bounds[key] / 1e6
    why = ('write + fsync' if limit and abs(mbps - limit) < 1e-6 * limit
           else 'CPU stages')
    return mbps, why


def _row(mode, config, phase, target, measured, ok, bound=None, ours=None,
         upstream=None):
    """A target's line, formatted once (kept as text in the JSON)."""
    text = pct = None
    if bound:
        mbps, why = bound
        if upstream:
            text = '%.2fx (%.0f MB/s, %s)' % (mbps / upstream, mbps, why)
        else:
            text = '%.0f MB/s (%s)' % (mbps, why)
        pct = '%.0f%%' % (100 * ours / mbps) if ours else None
    return {'mode': mode, 'config': config, 'phase': phase,
            'target': target, 'measured': measured, 'ok': ok,
            'bound': text, 'ours_of_bound': pct}


# -- one operation (tools/benchmark.py) ---------------------------------------

def evaluate(report):
    """Issues 19's and 21's targets for every mode and configuration."""
    meta = report['meta']
    rows = []
    for mode, table in report['results'].items():
        for config, per_impl in table.items():
            ours = per_impl.get('ours', {})
            theirs = per_impl.get('upstream', {})
            algo = config.split('-')[0]
            for drivers, phase, configs, kind, value in SINGLE_TARGETS:
                if (meta['driver'] not in drivers or config not in configs
                        or phase not in ours):
                    continue
                rows.append(_single_row(report, mode, config, phase, kind,
                                        value, algo, ours[phase],
                                        theirs.get(phase)))
            plain = table.get(algo, {}).get('ours', {})
            if config != algo and algo in ENCRYPTION_TARGET_CODECS:
                rows.extend(_encryption_rows(mode, config, algo, ours,
                                             plain))
            if ours:
                phase = max(ours, key=lambda p: ours[p]['rss'])
                rss = ours[phase]['rss']
                rows.append(_row(mode, config, 'peak RSS',
                                 '<= %d MB' % (RSS_LIMIT // MiB),
                                 '%.0f MB (%s)' % (rss / MiB, phase),
                                 rss <= RSS_LIMIT))
    return rows


def _encryption_rows(mode, config, algo, ours, plain):
    """Issue 21: each phase of ``config`` against ours with ``algo``."""
    rows = []
    for phase, cell in ours.items():
        if phase not in plain:
            continue
        base = plain[phase]['seconds']
        cost = cell['seconds'] / base - 1
        rows.append(_row(mode, config, phase,
                         '<= +%.0f%% of %s\'s time' % (
                             100 * ENCRYPTION_COST, algo),
                         '%+.0f%% (%.2f vs %.2f s)' % (
                             100 * cost, cell['seconds'], base),
                         cost <= ENCRYPTION_COST))
    return rows


def _single_row(report, mode, config, phase, kind, value, algo, cell,
                upstream):
    bound = phase_bound(report, algo, phase, cell)
    mbps = cell['mbps']
    if kind == 'ratio':
        target = '>= %gx upstream' % value
        if not upstream:
            return _row(mode, config, phase, target, 'no upstream run',
                        None, bound, mbps)
        ratio = mbps / upstream['mbps']
        return _row(mode, config, phase, target,
                    '%.2fx (%.0f MB/s)' % (ratio, mbps), ratio >= value,
                    bound, mbps, upstream['mbps'])
    if kind == 'mbps':
        return _row(mode, config, phase, '>= %.0f MB/s' % value,
                    '%.0f MB/s' % mbps, mbps >= value, bound, mbps)
    write = report['rates'][WRITE_RATE] / 1e6
    return _row(mode, config, phase,
                '>= %.0f%% of write+fsync' % (100 * value),
                '%.0f MB/s (%.0f%%)' % (mbps, 100 * mbps / write),
                mbps >= value * write, bound, mbps)


# -- many operations (tools/benchmark_load.py) --------------------------------

def evaluate_load(report):
    """Issue 17's targets, and issue 19's at the largest N, for ours."""
    rows = []
    for mode, configs in report['results'].items():
        for config, per_impl in configs.items():
            ours = per_impl.get('ours', {})
            counts = sorted(int(n) for n in ours)
            if not counts or counts[0] != 1 or counts[-1] == 1:
                continue
            top = counts[-1]
            for phase in report['meta']['phases']:
                rows.extend(_load_rows(report, mode, config, phase, top,
                                       ours, per_impl.get('upstream', {})))
    return rows


def _load_rows(report, mode, config, phase, top, ours, theirs):
    algo = config.split('-')[0]
    low, high = ours['1'][phase], ours[str(top)][phase]
    low_bound = phase_bound(report, algo, phase, low, 1)
    high_bound = phase_bound(report, algo, phase, high, top)
    rows = [_row(mode, config, phase,
                 'MB/s at N=%d >= at N=1' % top,
                 '%.1f vs %.1f MB/s (%.2fx)' % (
                     high['mbps'], low['mbps'], high['mbps'] / low['mbps']),
                 high['mbps'] >= low['mbps'], high_bound, high['mbps'])]
    if low_bound and high_bound:
        rows[0]['bound'] = 'N=1: %.0f, N=%d: %s' % (
            low_bound[0], top, rows[0]['bound'])
    rows.append(_row(mode, config, phase,
                     'peak RSS at N=%d <= %gx N=1' % (top, RSS_GROWTH),
                     '%.0f vs %.0f MB (%.2fx)' % (
                         high['rss'] / MiB, low['rss'] / MiB,
                         high['rss'] / low['rss']),
                     high['rss'] <= RSS_GROWTH * low['rss']))
    up = theirs.get(str(top), {}).get(phase)
    if phase != 'full' and up:
        ratio = high['mbps'] / up['mbps']
        rows.append(_row(mode, config, phase,
                         'MB/s at N=%d >= %gx upstream' % (
                             top, LOAD_UPSTREAM_RATIO),
                         '%.2fx (%.1f vs %.1f)' % (ratio, high['mbps'],
                                                   up['mbps']),
                         ratio >= LOAD_UPSTREAM_RATIO, high_bound,
                         high['mbps'], up['mbps']))
    return rows


# -- printing -----------------------------------------------------------------

def print_targets(rows, mode, heading, notes=()):
    """The targets block of ``mode``: one line per target."""
    rows = [r for r in rows if r['mode'] == mode]
    if not rows:
        return
    print(heading)
    columns = [('config', 'config'), ('phase', 'phase'),
               ('target', 'target'), ('measured', 'measured'),
               ('result', 'result'), ('stage bound, same run', 'bound'),
               ('ours/bound', 'ours_of_bound')]
    cells = [[h for h, _key in columns]]
    for r in rows:
        values = dict(r, result={True: 'PASS', False: 'MISS',
                                 None: '-'}[r['ok']])
        cells.append([values[key] or '-' for _h, key in columns])
    widths = [max(len(line[n]) for line in cells)
              for n in range(len(columns))]
    for line in cells:
        print('  ' + '  '.join(cell.ljust(width) for cell, width
                               in zip(line, widths)).rstrip())
    for note in notes:
        print(textwrap.fill(note, 100, initial_indent='  ',
                            subsequent_indent='    '))


def bound_notes(report, files_lines):
    """What the bounds count, with this run's rates, as lines."""
    meta, rates = report['meta'], report.get('rates')
    if not rates:
        return []
    together = ('each at its rate on the %d cores at once, measured '
                'above (they are worth %.2f threads)'
                % (meta['cores'], meta['effective_cores'])
                if report.get('together') else
                'each at %d times its rate on one thread' % meta['cores'])
    notes = [
        'Stage bounds, rates above, %s: CPU stages = zero test of '
        'the zero hash blocks (%.0f%%) + SHA-256 of the rest%s; restores '
        'onto a new volume: decoder + check of the data (the cheaper of '
        'MD5 and SHA-256), and write + fsync (%.0f MB/s, the best new '
        'file) of the data; over an existing one (ours writes the '
        'changed blocks only): the zero test and SHA-256 of the volume, '
        'then decoder, check and write + fsync of the changed bytes, one '
        'after the other.' % (
            together, 100 * meta.get('zero_block_fraction',
                                     meta['zero_fraction']),
            ' + codec (on random data) and MD5 of the %.1f MB changed'
            % (meta['changed_bytes'] / 1e6)
            if meta.get('changed_bytes') else '',
            rates[WRITE_RATE] / 1e6)]
    if files_lines:
        notes.append(
            'An incremental on POSIX is bound by the slower of its files '
            '(wall time) and the CPU stages + the files\' CPU (on what '
            'the cores are worth together); the '
            'files are as many as ours stored, of their median size, made '
            'as the store makes them (fewer, larger objects would raise '
            'this bound):')
    notes.extend(files_lines)
    return notes
