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

"""One benchmark phase of one implementation, in a process of its own.

Started by ``tools/benchmark.py``; prints one JSON line with the wall
time, the CPU seconds (every thread of the process), the peak RSS and
the id of the backup made or restored.

The process is set up as ``cinder-backup`` sets itself up: the first
thing it does is call Cinder's own ``cinder.monkey_patch.patch()``, with
``OS_CINDER_DISABLE_EVENTLET_PATCHING`` unset (``--concurrency
eventlet``, Cinder's default) or set to ``1`` (``threading``).  The
volume is then opened and wrapped as Cinder 29's backup manager does
(``open(path, 'rb')`` then ``cinder.utils.tpool_wrap`` for a backup,
``open(path, 'wb')`` then ``tpool_wrap`` for a restore).  Both
implementations get exactly the same treatment.
"""

import argparse
import json
import os
import sys


def patch(concurrency):
    """Monkey-patch (or not) as cinder-backup does; describe what we did."""
    if concurrency == 'threading':
        os.environ['OS_CINDER_DISABLE_EVENTLET_PATCHING'] = '1'
    else:
        os.environ.pop('OS_CINDER_DISABLE_EVENTLET_PATCHING', None)
    try:
        from cinder import monkey_patch
    except ImportError:
        # Only our driver can run then; patch as Cinder would.
        if concurrency == 'eventlet':
            import eventlet
            eventlet.monkey_patch()
            return 'eventlet.monkey_patch() (cinder not importable)'
        return 'native threads (cinder not importable)'
    monkey_patch.patch()
    return 'cinder.monkey_patch.patch() %s' % (
        'patched' if monkey_patch.is_patched() else 'native threads')


def parse_args(argv):
    parser = argparse.ArgumentParser()
    for name in ('impl', 'phase', 'compression', 'volume', 'source',
                 'records', 'parent', 'backend', 'location'):
        parser.add_argument('--' + name)
    parser.add_argument('--chunk-size', type=int)
    parser.add_argument('--encryption', default='none')
    parser.add_argument('--key-manager-file',
                        help='Encrypted backups keep their keys in a key '
                             'manager (tools/benchmark_keys.py) whose keys '
                             'are in this file, not under a password.')
    parser.add_argument('--concurrency', choices=('eventlet', 'threading'),
                        default='eventlet')
    parser.add_argument('--option', action='append', default=[],
                        help='GROUP.NAME=VALUE: an option of ours to set.')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Before anything else is imported, as cinder/cmd/backup.py does.
    how = patch(args.concurrency)

    import time

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import benchmark_backends
    import benchmark_records

    backend = benchmark_backends.BACKENDS[args.backend]
    location = json.loads(args.location)
    book = benchmark_records.RecordBook(args.records)
    size = os.path.getsize(args.volume)
    size_gib = max(1, -(-size // benchmark_records.GiB))
    driver = make_driver(args, backend, location, book, size_gib)
    wrap = tpool_wrapper()
    volume_id = 'b3c0b4e5-0000-4000-8000-000000000001'

    cpu_start, start = cpu_seconds(), time.monotonic()
    rec = run_operation(args.phase, driver, book, wrap, args.source,
                        volume_id, args.parent, size_gib)
    seconds = time.monotonic() - start
    cpu_used = cpu_seconds() - cpu_start
    if args.phase in ('full', 'incr'):
        book.save()
    print(json.dumps({'seconds': seconds, 'cpu': cpu_used,
                      'bytes': size, 'peak_rss': peak_rss(),
                      'id': rec.id, 'patched': how}))


def run_operation(phase, driver, book, wrap, source, volume_id, parent_id,
                  size_gib):
    """One backup (``full``, ``incr``) or restore, as the manager runs it.

    A backup adds its record to ``book`` (not saved); a restore restores
    the chain ending at ``parent_id``.  Returns the record.
    """
    import uuid

    import benchmark_records
    if phase in ('full', 'incr'):
        parent = book.records.get(parent_id) if parent_id else None
        rec = benchmark_records.Record(
            id=str(uuid.uuid4()), volume_id=volume_id,
            parent_id=parent.id if parent else None, size=size_gib,
            status='creating', display_name='bench',
            created_at='2026-11-26 00:00:00', object_count=0,
            availability_zone='nova')
        book.records[rec.id] = rec
        with open(source, 'rb') as device_file:
            driver.backup(rec, wrap(device_file))
        rec.status = 'available'
        return rec
    rec = book.get(parent_id)
    rec.status = 'restoring'
    # The manager opens the device 'wb', which on a block device writes
    # in place.  Our volume is a regular file, which 'wb' would truncate:
    # 'r+b' is what 'wb' is on a device.
    with open(source, 'r+b') as device_file:
        driver.restore(rec, volume_id, wrap(device_file),
                       phase == 'restore-new')
    return rec


def cpu_seconds():
    """CPU seconds of every thread of this process so far."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tpool_wrapper():
    """``cinder.utils.tpool_wrap`` when Cinder is importable."""
    try:
        from cinder import utils
    except ImportError:
        from cinder_chunked_ext.engine import concurrency
        return concurrency.tpool_wrap
    return utils.tpool_wrap


def make_driver(args, backend, location, book, size_gib):
    return driver_builder(args, backend, location, book, size_gib)()


def driver_builder(args, backend, location, book, size_gib):
    """Configure once; return what builds a new driver object per call.

    Cinder's backup manager builds a driver for every operation
    (``self.service(context)``), all from the same configuration.
    """
    from oslo_config import cfg
    conf = cfg.CONF
    # Phase processes of the load benchmark have no --encryption.
    encryption = getattr(args, 'encryption', 'none')
    key_file = getattr(args, 'key_manager_file', None)
    if args.impl == 'upstream':
        driver_factory = upstream_factory(backend, book)
    else:
        driver_factory = ours_factory(backend, book, size_gib,
                                      encryption != 'none' and not key_file)
    conf([], project='cinder')
    if args.impl == 'upstream':
        # The drivers' base class disposes of the database engine when it
        # is built: an in-memory one it never queries will do.
        conf.set_override('connection', 'sqlite://', group='database')
    conf.set_override('backup_compression_algorithm', args.compression)
    if encryption != 'none':
        conf.set_override('encryption', encryption,
                          group='chunked_backup')
    if args.impl != 'upstream' and key_file:
        import benchmark_keys
        os.environ[benchmark_keys.PATH_VARIABLE] = key_file
        from castellan import options as castellan_options
        castellan_options.set_defaults(conf, backend=benchmark_keys.BACKEND)
    backend.configure(conf, location, args.chunk_size)
    for option in getattr(args, 'option', None) or ():
        key, _eq, value = option.partition('=')
        group, _dot, name = key.rpartition('.')
        conf.set_override(name, value, group=group or None)
    patched = []

    def build():
        driver = driver_factory(location)
        if args.impl == 'upstream' and not patched:
            # Every driver's ``db`` is the same module: patch it once.
            from unittest import mock
            mock.patch.object(driver.db, 'volume_get',
                              return_value={'size': size_gib}).start()
            patched.append(driver.db)
        return driver

    return build


def ours_factory(backend, book, size_gib, encrypted=False):
    import importlib

    import benchmark_records
    from cinder_chunked_ext.encryption import keys
    # Its options are registered when the module is imported.
    importlib.import_module(backend.ours_module)

    class Context(object):
        chunked_environment = benchmark_records.BenchEnvironment(
            book, size_gib)
        # Encrypted: each backup's key wrapped under a password (scrypt
        # once per phase process), as the standalone tool keeps them.
        password_keys = (keys.PasswordKeys(b'benchmark password')
                         if encrypted else None)

    return lambda location: backend.ours(Context(), location)


def upstream_factory(backend, book):
    """Upstream's driver; only its database and notifier are stand-ins.

    The backup records come from the record book; the notifier and the
    volume metadata API are patched out.  The data path is upstream's.
    """
    import importlib
    from unittest import mock

    from cinder import objects
    # Its options are registered when the module is imported.
    importlib.import_module(backend.upstream_module)
    objects.register_all()
    mock.patch('cinder.objects.Backup.get_by_id',
               side_effect=lambda ctx, bid: book.get(bid)).start()
    mock.patch('cinder.volume.volume_utils.notify_about_backup_usage'
               ).start()
    mock.patch('cinder.backup.driver.BackupMetadataAPI.get',
               return_value=None).start()
    return backend.upstream


def peak_rss():
    """This process's peak RSS in bytes.

    VmHWM starts afresh at exec, unlike ru_maxrss, which Linux carries
    over from the parent that forked us.
    """
    import resource
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == '__main__':
    sys.exit(main())
