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

"""The file stage of an incremental: durable small files, many at once.

An incremental backup on the POSIX driver stores each changed run as a
file of its own: create a temporary file, write it, fsync it, rename it
into place, fsync the directory (one directory sync started after a
rename covers every rename before it, as the store shares them).  This
measures that stage alone, on the work directory's file system: as
many files as the run's incremental stored, of its typical (median)
size, ``--writers`` at a time per directory (the store's concurrency for
small objects) and ``--groups`` directories at once (one per operation
of the load benchmark).

Run as a process of its own, set up like a phase process
(``cinder.monkey_patch.patch()`` in eventlet mode, the writes on
eventlet's native thread pool; native threads in threading mode), so
that its figure carries the mode of the phase it explains.  Prints one
JSON line: wall and CPU seconds, files, bytes.
"""

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_load_phase  # noqa: E402 - the directory of this script
import benchmark_phase  # noqa: E402

SCRIPT = os.path.abspath(__file__)
DEFAULT_SMALL_WRITES = 4
DEFAULT_IO_THREADS = 16


def store_concurrency(groups=1):
    """Writers per directory when ``groups`` operations store at once.

    Each operation makes the POSIX store's number of small objects at
    once, and every operation of the process shares ``io_threads``
    (their defaults, read from the code under test).
    """
    try:
        from cinder_chunked_ext.engine import settings
        from cinder_chunked_ext.store import posix
    except ImportError:
        per_op, shared = DEFAULT_SMALL_WRITES, DEFAULT_IO_THREADS
    else:
        per_op = getattr(posix.PosixStore, 'max_concurrent_small_writes',
                         DEFAULT_SMALL_WRITES)
        shared = getattr(settings.EngineSettings, 'io_threads',
                         DEFAULT_IO_THREADS)
    return max(1, min(per_op, shared // groups))


# -- what an incremental stored -----------------------------------------------

def file_sizes(top):
    """``{path: size}`` of every file below ``top``."""
    sizes = {}
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                sizes[path] = os.path.getsize(path)
            except OSError:
                pass
    return sizes


def new_objects(before, after):
    """(count, median size, total bytes) of the files in ``after`` only."""
    sizes = sorted(size for path, size in after.items()
                   if path not in before)
    if not sizes:
        return None
    return {'count': len(sizes), 'median_size': sizes[len(sizes) // 2],
            'bytes': sum(sizes)}


# -- the orchestrator side ----------------------------------------------------

def measure(run_process, args, backend, server, mode, objects, groups=1):
    """The file stage for ``objects`` per group, in ``mode``; a dict."""
    import tempfile
    writers = store_concurrency(groups)
    directory = tempfile.mkdtemp(prefix='file-stage-', dir=args.workdir)
    argv = ['--concurrency', mode, '--dir', directory,
            '--groups', str(groups), '--writers', str(writers),
            '--files', str(objects['count']),
            '--size', str(max(1, objects['median_size']))]
    try:
        result = run_process(SCRIPT, argv, args, backend, server,
                             '%s file stage' % mode)
    finally:
        import shutil
        shutil.rmtree(directory, ignore_errors=True)
    result.update(mode=mode, groups=groups, writers=writers)
    return result


def describe(probe):
    """One line saying what the file stage measured and how fast."""
    groups, files = probe['groups'], probe['files']
    how = ('%d files of %.0f KiB, %d at once' % (
        files, probe['size'] / 1024, probe['writers']) if groups == 1 else
        '%d x %d files of %.0f KiB in %d directories at once, %d at once '
        'in each' % (groups, files // groups, probe['size'] / 1024, groups,
                     probe['writers']))
    return ('%s (create + write + fsync + rename + directory fsync), %s '
            'mode: %.2f s wall, %.2f CPU-s, %.0f files/s'
            % (how, probe['mode'], probe['seconds'], probe['cpu'],
               files / probe['seconds']))


# -- the probe process --------------------------------------------------------

class DirectorySync(object):
    """One fsync of the directory, started after a rename, covers it."""

    def __init__(self, path, lock_factory):
        self.path = path
        self.lock = lock_factory()
        self.sync_lock = lock_factory()
        self.renamed = self.synced = 0

    def after_rename(self):
        with self.lock:
            self.renamed += 1
            mine = self.renamed
        with self.sync_lock:
            with self.lock:
                if self.synced >= mine:
                    return
                covered = self.renamed
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with self.lock:
                self.synced = max(self.synced, covered)


def write_files(directory, names, data, sync):
    """Make ``names`` in ``directory`` durably, one after another."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    for name in names:
        temp = os.path.join(directory, '.tmp-' + name)
        fd = os.open(temp, flags, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, os.path.join(directory, name))
        sync.after_rename()


def run_writers(concurrency, tasks):
    """Run every task at once on native threads; wait for them."""
    if concurrency == 'eventlet':
        from eventlet import tpool
        tasks = [functools.partial(tpool.execute, task) for task in tasks]
    benchmark_load_phase.run_all(concurrency, tasks)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--concurrency', choices=('eventlet', 'threading'),
                        default='eventlet')
    parser.add_argument('--dir', required=True)
    for name in ('groups', 'writers', 'files', 'size'):
        parser.add_argument('--' + name, type=int, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    how = benchmark_phase.patch(args.concurrency)

    import functools
    import time

    from cinder_chunked_ext import locks

    data = os.urandom(args.size)
    tasks = []
    for group in range(args.groups):
        directory = os.path.join(args.dir, 'g%03d' % group)
        os.mkdir(directory)
        sync = DirectorySync(directory, locks.native_lock)
        names = ['f%06d' % n for n in range(args.files)]
        for writer in range(args.writers):
            tasks.append(functools.partial(
                write_files, directory, names[writer::args.writers], data,
                sync))
    cpu_start, start = benchmark_phase.cpu_seconds(), time.monotonic()
    run_writers(args.concurrency, tasks)
    seconds = time.monotonic() - start
    print(json.dumps({'seconds': seconds,
                      'cpu': benchmark_phase.cpu_seconds() - cpu_start,
                      'files': args.files * args.groups, 'size': args.size,
                      'patched': how}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
