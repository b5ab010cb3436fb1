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

"""What each stage of a backup or restore costs on this machine.

Measured by the benchmark before its phases, on a sample of the volume
and in the work directory, so that every phase can be set beside what
the machine allows.
"""

import hashlib
import os
import statistics
import tempfile
import threading
import time

from benchmark_data import data_extents

from cinder_chunked_ext.engine import compression

#: What ours makes and reads zlib streams with (zlib-ng where the package
#: requires it, x86_64 and aarch64): the zlib stages measure that library.
#: Upstream's driver uses Python's own ``zlib``.
zlib = compression.zlib
ZLIB_LIBRARY = compression.ZLIB_LIBRARY

MiB = 1024 * 1024


def _rate(func, data, repeat=3):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        func(data)
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return len(data) / best


def zero_fraction(path, unit=MiB):
    """Share of the volume in all-zero units of ``unit`` bytes (holes too)."""
    size = os.path.getsize(path)
    zero_unit = bytes(unit)
    data = 0
    with open(path, 'rb') as f:
        for offset, length in data_extents(path):
            f.seek(offset)
            for _ in range(0, length, MiB):
                piece = f.read(MiB)
                for start in range(0, len(piece), unit):
                    end = min(start + unit, len(piece))
                    if not piece.startswith(zero_unit[:end - start], start):
                        data += end - start
    return 1 - data / size if size else 0


#: The hash block of the benchmark's drivers (Cinder's default).
HASH_BLOCK = 32 * 1024


def data_sample(path, sample=64 * MiB):
    """The first ``sample`` bytes of the volume's data extents."""
    parts, got = [], 0
    with open(path, 'rb') as f:
        for offset, length in data_extents(path):
            f.seek(offset)
            part = f.read(min(length, sample - got))
            parts.append(part)
            got += len(part)
            if got >= sample:
                break
    return b''.join(parts)


WRITE_TRIES = 3


def disk_write_rates(workdir, size=256 * MiB, tries=WRITE_TRIES):
    """Sequential write + fsync of new files in ``workdir``: bytes/s each.

    A file of ``size`` is written, synced and removed ``tries`` times.
    On a virtual disk the first write to a region of the host's file
    that backs it costs many times a write to a region written before
    (on the machine of the performance page: 111 MB/s for one file,
    1,445 MB/s for the next), and which regions a new file gets is the
    file system's choice.  A restore onto a new volume writes new
    blocks as these files do: the best of the tries is what the disk
    allows, the bound; a run whose figures fall below it met the slow
    regions.
    """
    path = os.path.join(workdir, 'write-rate.tmp')
    data = os.urandom(8 * MiB)
    rates = []
    for _ in range(tries):
        start = time.perf_counter()
        with open(path, 'wb') as f:
            for _ in range(size // len(data)):
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        rates.append(size / (time.perf_counter() - start))
        os.unlink(path)
    return rates


CREATE_PROBE_FILES = 1000


def create_probe(workdir, files=CREATE_PROBE_FILES, size=32 * 1024):
    """Create ``files`` files of ``size`` in a new directory, one by one.

    A backup's objects all go into one directory, and a directory takes
    one create at a time: this is the least an incremental of that many
    objects spends creating them, in either implementation.  How much a
    create costs depends on the file system and its recent history (on
    ext4 without a journal, allocating an inode skips the inodes freed in
    the last seconds one by one).  Returns the directory, which the
    caller removes, and the seconds per file.
    """
    directory = tempfile.mkdtemp(prefix='create-probe-', dir=workdir)
    data = os.urandom(size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    start = time.perf_counter()
    for number in range(files):
        fd = os.open(os.path.join(directory, 'f%06d' % number), flags,
                     0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return directory, (time.perf_counter() - start) / files


RANDOM_SAMPLE = 8 * MiB
WRITE_RATE = 'write + fsync (work dir)'


def _stage_functions(volume):
    """``{stage: (func, data, repeat)}`` of the CPU stages."""
    import zstandard
    data = data_sample(volume)
    nonzero = b''.join(data[i:i + MiB] for i in range(0, len(data), MiB)
                       if data[i:i + MiB] != bytes(len(data[i:i + MiB])))
    noise = os.urandom(RANDOM_SAMPLE)
    deflated = zlib.compress(data)
    zframe = zstandard.ZstdCompressor(level=3).compress(data)
    return {
        'sha256': (lambda d: hashlib.sha256(d).digest(), data, 3),
        'md5': (lambda d: hashlib.md5(d).digest(), data, 3),
        'zlib-6 (non-zero data)': (zlib.compress, nonzero, 1),
        'zstd-3 (non-zero data)': (
            lambda d: zstandard.ZstdCompressor(level=3).compress(d),
            nonzero, 3),
        'zlib-6 (random data)': (zlib.compress, noise, 1),
        'zstd-3 (random data)': (
            lambda d: zstandard.ZstdCompressor(level=3).compress(d),
            noise, 3),
        'inflate': (lambda d: zlib.decompress(deflated), data, 3),
        'zstd decompress': (
            lambda d: zstandard.ZstdDecompressor().decompress(zframe),
            data, 3),
        'zero test': (lambda d: d == bytes(len(d)), bytes(len(data)), 3),
    }


def _parallel_rate(func, data, threads, repeat):
    """Bytes/s of ``threads`` native threads each running ``func(data)``.

    Started together; the time is until the last one ends.  Every stage
    here releases the GIL on a large buffer (or holds it only briefly),
    so this is what the machine's cores do at once: less than ``threads``
    times one thread's rate when the host gives a virtual CPU less than
    a core, or when two of them share a core's execution units.
    """
    best = None
    for _ in range(repeat):
        ready = threading.Barrier(threads + 1)

        def work():
            ready.wait()
            func(data)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        ready.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return threads * len(data) / best


def stage_rates(volume, workdir, cores=1):
    """``(rates, together, write tries)``: bytes/s, in ``workdir``.

    ``rates``: each stage on one native thread, and write + fsync (the
    best of the tries, each of which is in ``write tries``).
    ``together``: each CPU stage on ``cores`` threads at once, in all
    (empty for one core).  The codecs run on the volume's non-zero data
    and, for the incremental's changed blocks, on random data as well.
    """
    stages = _stage_functions(volume)
    rates = {name: _rate(func, data, repeat)
             for name, (func, data, repeat) in stages.items()}
    tries = disk_write_rates(workdir)
    rates[WRITE_RATE] = max(tries)
    return rates, _together_rates(stages, cores), tries


def write_tries_line(report):
    """Every try of write + fsync, for the stage rates' block; or None."""
    before, after = report.get('write_before'), report.get('write_after')
    if not before:
        return None
    text = ('write + fsync tries: %s MB/s before the phases'
            % ', '.join('%.0f' % (rate / 1e6) for rate in before))
    if after:
        text += ', %s after' % ', '.join('%.0f' % (rate / 1e6)
                                         for rate in after)
    return text + (' (the best is the bound; a phase that met the disk\'s '
                   'slow regions ran below it)')


def _together_rates(stages, cores):
    """``{stage: bytes/s on cores threads at once}``; empty on one core."""
    if cores < 2:
        return {}
    return {name: _parallel_rate(func, data, cores, repeat)
            for name, (func, data, repeat) in stages.items()}


def measure_together_again(report, volume, workdir=None):
    """Measure the stages on all cores again, after the phases.

    A host's load moves during a run of many minutes: each stage keeps
    the higher of its two all-cores rates, and the bounds and
    ``effective_cores`` are made again from them (the more the machine
    allowed, the harder the bound).  With ``workdir``, write + fsync is
    measured again too, and keeps the best of every try.
    """
    meta = report['meta']
    cores = meta['cores']
    rates = report['rates']
    if workdir is not None:
        after = disk_write_rates(workdir)
        report['write_after'] = after
        rates[WRITE_RATE] = max([rates[WRITE_RATE]] + after)
    if cores >= 2:
        after = _together_rates(_stage_functions(volume), cores)
        report['together_before'] = dict(report.get('together') or {})
        report['together_after'] = after
        report['together'] = {
            name: max(after[name], report['together_before'].get(name, 0))
            for name in after}
        meta['effective_cores'] = effective_cores(rates, report['together'],
                                                  cores)
    report['bounds'] = pipeline_bounds(rates, meta['zero_fraction'], cores,
                                       report.get('together'),
                                       meta.get('zero_block_fraction'))


def effective_cores(rates, together, cores):
    """How many of one thread the cores are worth, by the stages' median.

    ``cores`` when the stages were not measured together (older runs).
    """
    if not together:
        return cores
    median = statistics.median(together[name] / rates[name]
                               for name in together)
    return max(1.0, min(float(cores), median))


def all_cores_rate(rates, together, cores, name):
    """Bytes/s of stage ``name`` on every core at once.

    Measured when ``together`` has it; else ``cores`` times one thread.
    """
    if name in together:
        return together[name]
    return cores * rates[name]


def pipeline_bounds(rates, zeros, cores, together=None, zero_blocks=None):
    """Throughput the stage rates allow on ``cores`` (bytes/s).

    Zero MiB cost only a zero test (their hashes come from a cache); the
    data pays SHA-256, MD5 and the codec; a restore pays the decoder and
    a check of the data (the cheaper of MD5 and SHA-256) and the write +
    fsync of what it writes: the data
    onto a new (sparse) volume, every byte over an existing one.  A zero
    hash block needs no SHA-256 (``zero_blocks``: their share, zero MiB
    included; ``zeros`` when not measured).  The
    objects of a backup are hashed and coded side by side, so no stage
    is counted as serial: the bound is what the machine allows, whatever
    either implementation does with it.  Each stage runs at its rate on
    all cores at once (``together``), measured in the same run: on this
    kind of virtual machine two threads may do no more than one.
    """
    together = together or {}

    def per_byte(name):
        return 1 / all_cores_rate(rates, together, cores, name)

    nz = 1 - zeros
    if zero_blocks is None:
        zero_blocks = zeros
    zero_cost = zero_blocks * per_byte('zero test')
    hashing = ((1 - zero_blocks) * per_byte('sha256') +
               nz * per_byte('md5'))
    write_all = rates[WRITE_RATE]
    write = write_all / nz if nz else float('inf')
    bounds = {}
    for algo, key in (('zlib', 'zlib-6 (non-zero data)'),
                      ('zstd', 'zstd-3 (non-zero data)'),
                      ('none', None)):
        cost = zero_cost + hashing + (nz * per_byte(key) if key else 0)
        bounds['backup ' + algo] = 1 / cost
    # A restore proves its data by the MD5 of the metadata or by the
    # SHA-256 of the sha256file, either one: the cheaper counts.
    check = min(per_byte('md5'), per_byte('sha256'))
    for algo, key in (('zlib', 'inflate'), ('zstd', 'zstd decompress'),
                      ('none', None)):
        cost = zero_cost + nz * ((per_byte(key) if key else 0) + check)
        bounds['restore ' + algo] = min(write, 1 / cost)
        bounds['restore-existing ' + algo] = min(write_all, 1 / cost)
    return bounds


def place(workdir):
    """Where the work directory is: disk or tmpfs, with the type."""
    from benchmark_backends import filesystem_type
    kind = filesystem_type(workdir)
    return 'tmpfs' if kind == 'tmpfs' else 'disk (%s)' % kind
