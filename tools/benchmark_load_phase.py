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

"""N operations of one phase at once, in one process of their own.

Started by ``tools/benchmark_load.py``; prints one JSON line with the
wall time from the first operation's start to the last one's end, the
CPU seconds and peak RSS of the whole process, and each operation's id
and seconds.

The process is set up as ``cinder-backup`` is, by the same code as
``tools/benchmark_phase.py``: ``cinder.monkey_patch.patch()`` first.
Each operation then runs as the backup manager runs one: in a green
thread of its own (``eventlet.spawn``; a native thread in threading
mode), it builds a new driver object from the shared configuration,
opens its own volume and wraps it with ``cinder.utils.tpool_wrap``.
An operation that fails makes the process fail, with every traceback.
"""

import argparse
import faulthandler
import json
import os
import sys

import benchmark_phase


def parse_args(argv):
    parser = argparse.ArgumentParser()
    for name in ('impl', 'compression', 'records', 'backend', 'location'):
        parser.add_argument('--' + name)
    parser.add_argument('--phase', choices=('full', 'incr', 'restore-new'))
    parser.add_argument('--ops', required=True,
                        help='JSON list of {"volume_id", "source", '
                             '"parent"}: one operation each.')
    parser.add_argument('--chunk-size', type=int)
    parser.add_argument('--timeout', type=int, default=0)
    parser.add_argument('--concurrency', choices=('eventlet', 'threading'),
                        default='eventlet')
    return parser.parse_args(argv)


def run_all(concurrency, functions):
    """Start every function at once; wait for them all."""
    if concurrency == 'eventlet':
        import eventlet
        threads = [eventlet.spawn(func) for func in functions]
        for thread in threads:
            thread.wait()
        return
    import threading
    threads = [threading.Thread(target=func) for func in functions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def dump_and_exit(timeout):
    """Every green thread's stack and every native thread's; exit."""
    import gc
    import traceback

    import greenlet
    print('Not done after %d s; the green threads:' % timeout,
          file=sys.stderr)
    for thing in gc.get_objects():
        if isinstance(thing, greenlet.greenlet) and thing.gr_frame:
            print('\nGreen thread %#x:' % id(thing), file=sys.stderr)
            traceback.print_stack(thing.gr_frame, file=sys.stderr)
    print('\nThe native threads:', file=sys.stderr)
    faulthandler.dump_traceback(all_threads=True)
    sys.stderr.flush()
    os._exit(3)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Before anything else is imported, as cinder/cmd/backup.py does.
    how = benchmark_phase.patch(args.concurrency)
    if args.timeout:
        # A hang shows where every thread is, then ends the run: the green
        # threads too if the hub still runs, else the native ones only.
        faulthandler.dump_traceback_later(args.timeout + 30, exit=True)
        if args.concurrency == 'eventlet':
            import eventlet
            eventlet.spawn_after(args.timeout, dump_and_exit, args.timeout)

    import functools
    import time
    import traceback

    import benchmark_backends
    import benchmark_records

    backend = benchmark_backends.BACKENDS[args.backend]
    location = json.loads(args.location)
    book = benchmark_records.RecordBook(args.records)
    ops = json.loads(args.ops)
    sizes = [os.path.getsize(op['source']) for op in ops]
    size_gib = max(1, -(-max(sizes) // benchmark_records.GiB))
    build = benchmark_phase.driver_builder(args, backend, location, book,
                                           size_gib)
    wrap = benchmark_phase.tpool_wrapper()
    results = [None] * len(ops)

    def one(number, op):
        start = time.monotonic()
        try:
            driver = build()
            rec = benchmark_phase.run_operation(
                args.phase, driver, book, wrap, op['source'],
                op['volume_id'], op.get('parent'), size_gib)
            results[number] = {'id': rec.id,
                               'seconds': time.monotonic() - start}
        except BaseException:
            results[number] = {'error': traceback.format_exc()}

    cpu_start, start = benchmark_phase.cpu_seconds(), time.monotonic()
    run_all(args.concurrency, [functools.partial(one, n, op)
                               for n, op in enumerate(ops)])
    seconds = time.monotonic() - start
    cpu_used = benchmark_phase.cpu_seconds() - cpu_start
    faulthandler.cancel_dump_traceback_later()
    if any(r is None or 'error' in r for r in results):
        for n, result in enumerate(results):
            print('operation %d of %d: %s' % (
                n + 1, len(ops), (result or {}).get('error', 'ok')),
                file=sys.stderr)
        return 1
    if args.phase in ('full', 'incr'):
        book.save()
    print(json.dumps({'seconds': seconds, 'cpu': cpu_used,
                      'bytes': sum(sizes),
                      'peak_rss': benchmark_phase.peak_rss(),
                      'ops': results, 'patched': how}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
