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

"""cinder-chunked-backup: back up, verify and restore volumes without Cinder.

Usage::

    cinder-chunked-backup [--repository PATH] [--catalog PATH]
                          [--driver posix|nfs|s3] [--config-file FILE]
                          [--compression ALGO] [--json] [--verbose]
                          [--debug] COMMAND ...

Global options come before the command (``--json``, ``--verbose`` and
``--debug`` are also accepted after it).  The drivers are the ones
cinder-backup loads, with the same options: ``--config-file cinder.conf``
points the tool at the repository a cloud writes to.  Without a
configuration file the POSIX repository is
``$XDG_DATA_HOME/cinder-chunked-backup/repository``
(``~/.local/share/...``).  ``--repository`` is the directory
(``backup_posix_path``) for posix, the share (``backup_share``) for nfs
and the bucket (``backup_s3_store_bucket``) for s3.  Backups are recorded
in an SQLite catalog: ``<repository>/catalog.sqlite3`` for posix, else
``$XDG_DATA_HOME/cinder-chunked-backup/catalog.sqlite3``.

Commands::

    backup create VOLUME [--incremental] [--name NAME]
                  [--description TEXT] [--container NAME]
                  [--volume-id ID] [--size SIZE]
    backup list [--volume-id ID] [--status STATUS]
    backup show ID
    backup delete ID [--force]
    restore ID TARGET [--new | --existing]
    restore --from-repository CONTAINER PREFIX TARGET [--new | --existing]
    verify ID | verify --all | verify --from-repository CONTAINER PREFIX
    repository scan [--container NAME ...]
    demo [--workdir DIR] [--size SIZE] [--keep]

VOLUME is a file or a block device (``-`` or a FIFO need ``--size``).
An incremental backup's parent is the newest available backup of the
same volume; a volume is named by ``--volume-id``, by default a uuid5 of
its real path.  An ID may be abbreviated to a unique prefix (4 or more
characters).  ``restore --new`` (the default when TARGET does not exist
or is empty) creates a sparse file of the volume's size; ``--existing``
overwrites TARGET in place.  ``restore --from-repository`` and
``verify --from-repository`` use no catalog: the backup and its parents
are read from the repository (``repository scan`` lists them).

JSON output (--json)
====================

Each command prints one JSON object on stdout:

* ``backup create``, ``backup show``: a *backup*: ``id``, ``volume_id``,
  ``parent_id`` (null for a full backup), ``incremental``, ``status``
  (creating, available, error, deleting, restoring), ``size_gib``,
  ``volume_size_bytes``, ``object_count``, ``container``,
  ``service_metadata`` (the object name prefix), ``name``,
  ``description``, ``created_at``, ``availability_zone``, ``driver``,
  ``source``, ``fail_reason``; ``backup create`` adds ``seconds``;
  ``backup show`` adds ``children`` (ids of backups based on it).
* ``backup list``: ``{"backups": [backup, ...]}``, oldest first.
* ``backup delete``: ``{"id": ID, "deleted": true}``.
* ``restore``: ``backup_id``, ``target``, ``mode`` (new or existing),
  ``size_bytes``, ``chain`` (ids, the requested backup first, its full
  backup last), ``source`` (catalog or repository), ``seconds``.
* ``verify``: ``{"ok": bool, "backups": [report, ...]}``; a *report* has
  ``backup_id``, ``ok``, ``chain``, ``objects_checked``,
  ``bytes_checked`` and ``problems``, a list of ``{"backup_id",
  "object" (an object name or null), "problem"}``.
* ``repository scan``: ``{"repository": TEXT, "backups": [...]}`` with
  ``id``, ``volume_id``, ``parent_id``, ``container``, ``prefix``,
  ``created_at``, ``name``, ``description``, ``object_count``,
  ``in_catalog`` and ``error`` (null, or why the metadata is unreadable).
* ``demo``: ``ok``, ``workdir``, ``repository``, ``full_backup_id``,
  ``incremental_backup_id``, ``sha256_original``, ``sha256_restored``
  and ``steps``, a list of ``{"step", "seconds", "detail"}``.
* On failure: ``{"error": MESSAGE, "exit_code": N}``.

Exit status
===========

* 0: success.
* 1: the operation failed, or verification found a problem (a damaged
  or incomplete repository, a store error, an I/O error).
* 2: usage error or a request refused as invalid (bad option or
  configuration, a backup others depend on, a wrong status).
* 3: not found (the volume file, a backup id, a configuration file, a
  backup in the repository).
* 130: interrupted (Ctrl-C or SIGTERM); a backup in progress is marked
  ``error`` and its objects are removed.

Errors are one line on stderr.  ``--debug`` adds tracebacks and debug
logs; ``--verbose`` adds the engine's progress logs.  A progress bar
(throughput and ETA) is drawn on stderr when it is a terminal.
"""

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
import warnings

from oslo_config import cfg

PROG = 'cinder-chunked-backup'
APP_DIR = 'cinder-chunked-backup'
CATALOG_NAME = 'catalog.sqlite3'
DRIVERS = ('posix', 'nfs', 's3')
DRIVER_NAMESPACE = 'cinder_chunked_ext.backup_drivers'
KNOWN_DRIVERS = {
    'nfs': 'cinder_chunked_ext.drivers.nfs:NFSBackupDriver',
    'posix': 'cinder_chunked_ext.drivers.posix:PosixBackupDriver',
    's3': 'cinder_chunked_ext.drivers.s3:S3BackupDriver',
}
WITH_CINDER_ENV = 'CINDER_CHUNKED_BACKUP_WITH_CINDER'
# What --repository sets, per driver.
REPOSITORY_OPTION = {
    'posix': 'backup_posix_path',
    'nfs': 'backup_share',
    's3': 'backup_s3_store_bucket',
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130

KiB = 1024
MiB = 1024 ** 2

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


class CliError(Exception):
    """An expected failure, reported as one line with an exit status."""

    exit_code = EXIT_FAILED


class UsageError(CliError):
    exit_code = EXIT_USAGE


class NotFoundError(CliError):
    exit_code = EXIT_NOT_FOUND


# -- small helpers -------------------------------------------------------

def user_data_dir():
    base = os.environ.get('XDG_DATA_HOME') or os.path.join(
        os.path.expanduser('~'), '.local', 'share')
    return os.path.join(base, APP_DIR)


def default_repository():
    return os.path.join(user_data_dir(), 'repository')


def parse_size(text):
    """Bytes from ``65536``, ``64K``, ``64M``, ``1G``, ``1.5GiB``..."""
    value = text.strip().upper()
    for suffix in ('IB', 'B'):
        if value.endswith(suffix) and len(value) > len(suffix):
            value = value[:-len(suffix)]
            break
    factor = 1
    if value and value[-1] in 'KMGT':
        factor = 1024 ** ('KMGT'.index(value[-1]) + 1)
        value = value[:-1]
    try:
        size = int(float(value) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a size (e.g. 64M)'
                                         % text)
    if size <= 0:
        raise argparse.ArgumentTypeError('size %r is not positive' % text)
    return size


def human_bytes(count):
    if count is None:
        return '-'
    size = float(count)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(size) < 1024 or unit == 'TiB':
            return ('%d %s' % (size, unit) if unit == 'B'
                    else '%.1f %s' % (size, unit))
        size /= 1024
    return '%d B' % count  # pragma: no cover - unreachable


def human_seconds(seconds):
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60,
                                 seconds % 60)
    return '%d:%02d' % (seconds // 60, seconds % 60)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            data = f.read(4 * MiB)
            if not data:
                break
            digest.update(data)
    return digest.hexdigest()


def _count(number, noun):
    return '%d %s%s' % (number, noun, '' if number == 1 else 's')


def _one_line(text):
    return ' '.join(str(text).split())


# -- output ----------------------------------------------------------------

class Output(object):
    """Human lines or one JSON object on stdout; errors on stderr."""

    def __init__(self, json_mode, stdout=None, stderr=None):
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    def result(self, document, lines=()):
        if self.json_mode:
            self.stdout.write(json.dumps(document, indent=2, sort_keys=True,
                                         default=str) + '\n')
        else:
            for line in lines:
                self.stdout.write(line + '\n')
        self.stdout.flush()

    def say(self, line):
        """A human progress line (stdout; stderr in JSON mode)."""
        stream = self.stderr if self.json_mode else self.stdout
        stream.write(line + '\n')
        stream.flush()

    def error(self, message, code):
        self.stderr.write('%s: error: %s\n' % (PROG, _one_line(message)))
        self.stderr.flush()
        if self.json_mode:
            self.stdout.write(json.dumps({'error': _one_line(message),
                                          'exit_code': code}) + '\n')
            self.stdout.flush()


# -- progress --------------------------------------------------------------

class ProgressBar(object):
    """``label  [#####-----]  45%  29.0 MiB/64.0 MiB  35.2 MiB/s  ETA 0:01``.

    Drawn on ``stream`` only when it is a terminal, at most ten times a
    second; silent otherwise.
    """

    WIDTH = 20
    INTERVAL = 0.1

    def __init__(self, label, total, stream=None, enabled=None):
        self.label = label
        self.total = total or 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = _isatty(self.stream)
        self.enabled = enabled
        self.done = 0
        self.started = time.monotonic()
        self._drawn_at = None

    def update(self, done):
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if self._drawn_at is not None and now - self._drawn_at < \
                self.INTERVAL:
            return
        self._draw(now)

    def add(self, count):
        self.update(self.done + count)

    def _draw(self, now):
        self._drawn_at = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        bar = None
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * self.WIDTH)
            bar = '[%s%s]' % ('#' * filled, '-' * (self.WIDTH - filled))
            amount = '%3d%%  %s/%s' % (int(fraction * 100),
                                       human_bytes(self.done),
                                       human_bytes(self.total))
        else:
            amount = human_bytes(self.done)
        tail = ['%s/s' % human_bytes(rate)]
        if self.total and rate > 0 and self.done < self.total:
            tail.append('ETA %s' % human_seconds(
                (self.total - self.done) / rate))
        else:
            tail.append('%s elapsed' % human_seconds(elapsed))
        columns = shutil.get_terminal_size((80, 24)).columns - 1
        # The bar goes first, then the label, when the terminal is narrow.
        for parts in ([self.label, bar, amount] + tail,
                      [self.label, amount] + tail, [amount] + tail):
            line = '  '.join(p for p in parts if p)
            if len(line) <= columns:
                break
        self.stream.write('\r' + line[:max(10, columns)] + '\x1b[K')
        self.stream.flush()

    def close(self):
        if self.enabled and self._drawn_at is not None:
            self._draw(time.monotonic())
            self.stream.write('\n')
            self.stream.flush()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class MeteredFile(object):
    """A volume file that reports the bytes passing through it.

    The engine sees an ordinary file (read, seek, tell, write, flush,
    fileno); each call is forwarded and the callbacks learn how far the
    data has got.  With ``limit``, reading ends after that many bytes
    (a stream volume of a given size).
    """

    def __init__(self, fileobj, on_read=None, on_write=None,
                 on_flush=None, limit=None):
        self._file = fileobj
        self._limit = limit
        self._on_read = on_read
        self._on_write = on_write
        self._on_flush = on_flush
        self.position = 0
        self.bytes_read = 0
        self.highest = 0
        try:
            self.position = fileobj.tell()
        except (OSError, AttributeError, ValueError):
            self.position = 0

    def read(self, size=-1):
        if self._limit is not None:
            left = max(0, self._limit - self.bytes_read)
            size = left if size is None or size < 0 else min(size, left)
            if size == 0:
                return b''
        data = self._file.read(size)
        self.position += len(data)
        self.bytes_read += len(data)
        if self.position > self.highest:
            self.highest = self.position
        if self._on_read is not None:
            self._on_read(self)
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        result = self._file.seek(offset, whence)
        self.position = result if result is not None else \
            self._file.tell()
        return result

    def tell(self):
        return self._file.tell()

    def write(self, data):
        start = self.position
        written = self._file.write(data)
        count = len(data) if written is None else written
        self.position = start + count
        if self._on_write is not None:
            self._on_write(start, count)
        return written

    def flush(self):
        self._file.flush()
        if self._on_flush is not None:
            self._on_flush()

    def fileno(self):
        return self._file.fileno()

    def truncate(self, size=None):
        return self._file.truncate(size)

    def close(self):
        self._file.close()


class RestoreMeter(object):
    """Progress of a restore: objects are flushed one after the other.

    ``plan`` is ``[(offset, length), ...]`` of the objects in the order
    the engine restores them (full backup first, metadata order); the
    engine flushes the volume after each object.
    """

    def __init__(self, plan, bar):
        self.plan = plan
        self.bar = bar
        self.index = 0
        self.finished = 0
        self.current = 0
        self.bytes_written = 0

    def on_write(self, start, count):
        self.bytes_written += count
        if self.index < len(self.plan):
            offset, length = self.plan[self.index]
            self.current = max(self.current,
                               min(length, start + count - offset))
            self.bar.update(self.finished + self.current)

    def on_flush(self):
        if self.index < len(self.plan):
            self.finished += self.plan[self.index][1]
            self.index += 1
            self.current = 0
            self.bar.update(self.finished)


# -- configuration and drivers --------------------------------------------

def _keep_cinder_out():
    """Run the tool on the package's own stand-ins for Cinder.

    The tool needs nothing from Cinder: the stand-ins in
    :mod:`cinder_chunked_ext.cinder_compat` have the same option names
    and defaults, exceptions and statuses.  Importing Cinder (when it is
    installed beside the package) would cost a second or more at every
    start and print eventlet warnings.  ``CINDER_CHUNKED_BACKUP_WITH_CINDER=1``
    imports it all the same (for example so that the NFS driver mounts
    through Cinder's root helper).
    """
    if os.environ.get(WITH_CINDER_ENV, '').lower() in ('1', 'true', 'yes'):
        return
    if 'cinder' not in sys.modules:
        sys.modules['cinder'] = None   # "import cinder" raises ImportError


def _quiet_import_engine(debug):
    """Import the engine (and Cinder, when used) quietly.

    Cinder's import of eventlet prints a deprecation warning on stderr;
    the tool keeps stderr for its own messages unless ``--debug``.
    """
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter('ignore')
        from cinder_chunked_ext import chunked  # noqa: F401
        from cinder_chunked_ext import cinder_compat
    LOG.debug('%s runs %s.', PROG, 'with Cinder\'s classes'
              if cinder_compat.HAVE_CINDER else 'without Cinder')


def load_driver_class(name):
    """The driver class registered as ``name`` (stevedore, else import)."""
    import stevedore
    from stevedore import exception as stevedore_exception

    def fail(manager, entrypoint, error):
        raise error

    try:
        manager = stevedore.DriverManager(
            DRIVER_NAMESPACE, name, invoke_on_load=False,
            on_load_failure_callback=fail,
            warn_on_missing_entrypoint=False)
        return manager.driver
    except stevedore_exception.NoMatches:
        pass    # not installed (a source tree): import the known path
    except ImportError as e:
        raise UsageError('driver %s cannot be loaded: %s' % (name, e))
    import importlib
    module_name, _sep, class_name = KNOWN_DRIVERS[name].partition(':')
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError('driver %s cannot be loaded: %s' % (name, e))
    return getattr(module, class_name)


class Session(object):
    """Configuration, catalog and drivers of one command run."""

    def __init__(self, args, out):
        self.args = args
        self.out = out
        self.driver_name = args.driver or 'posix'
        self.driver_class = None
        self._catalog = None
        self.repository_override = None
        self.catalog_override = None

    # -- configuration ---------------------------------------------------

    def configure(self):
        args = self.args
        self.driver_class = load_driver_class(self.driver_name)
        files = []
        for path in args.config_file or []:
            if not os.path.exists(path):
                raise NotFoundError('configuration file %s does not exist'
                                    % path)
            if not os.path.isfile(path):
                raise UsageError('configuration file %s is not a file'
                                 % path)
            files.append(os.path.abspath(path))
        CONF(args=[], project='cinder', prog=PROG,
             default_config_files=files, default_config_dirs=[])
        repository = self.repository_override or args.repository
        option = REPOSITORY_OPTION[self.driver_name]
        if repository:
            if self.driver_name == 'posix':
                repository = os.path.abspath(os.path.expanduser(repository))
            self._override(option, repository, '--repository')
        elif self.driver_name == 'posix' and not files:
            self._override(option, default_repository(), '--repository')
        if args.compression:
            self._override('backup_compression_algorithm', args.compression,
                           '--compression')

    def _override(self, name, value, flag):
        try:
            CONF.set_override(name, value)
        except (ValueError, cfg.Error) as e:
            raise UsageError('%s %s: %s' % (flag, value, _one_line(e)))

    def repository_text(self):
        option = REPOSITORY_OPTION[self.driver_name]
        return '%s %s' % (self.driver_name, getattr(CONF, option, None))

    def catalog_path(self):
        if self.catalog_override:
            return self.catalog_override
        if self.args.catalog:
            return os.path.abspath(os.path.expanduser(self.args.catalog))
        if self.driver_name == 'posix':
            return os.path.join(CONF.backup_posix_path, CATALOG_NAME)
        return os.path.join(user_data_dir(), CATALOG_NAME)

    def catalog(self, create=False):
        from cinder_chunked_ext import catalog
        if self._catalog is None or (create and not self._catalog.exists):
            self._catalog = catalog.Catalog(self.catalog_path(),
                                            create=create)
        return self._catalog

    def environment(self, create=False):
        from cinder_chunked_ext import catalog
        return catalog.CatalogEnvironment(self.catalog(create=create))

    def driver(self, environment):
        from cinder_chunked_ext import catalog
        return self.driver_class(catalog.Context(environment))

    def check_record_driver(self, record):
        recorded = getattr(record, 'driver', None)
        if recorded and recorded != self.driver_name:
            raise UsageError('backup %s was made with driver %s; run with '
                             '--driver %s' % (record.id, recorded,
                                              recorded))


# -- backup ----------------------------------------------------------------

def _open_volume(path, size):
    """``(file, size_bytes, seekable)`` of the volume to back up."""
    if path == '-':
        if not size:
            raise UsageError('reading the volume from stdin needs --size')
        return sys.stdin.buffer, size, False
    if not os.path.exists(path):
        raise NotFoundError('volume %s does not exist' % path)
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise UsageError('volume %s is a directory, not a file or a block '
                         'device' % path)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        if not size:
            raise UsageError('volume %s is a stream; give its size with '
                             '--size' % path)
        return open(path, 'rb'), size, False
    volume = open(path, 'rb')
    try:
        actual = volume.seek(0, os.SEEK_END)
        volume.seek(0)
    except OSError:
        volume.close()
        raise
    if actual == 0:
        volume.close()
        raise UsageError('volume %s is empty' % path)
    return volume, actual, True


def _chunk_geometry_check(driver):
    if driver.chunk_size_bytes <= 0 or driver.sha_block_size_bytes <= 0 or \
            driver.chunk_size_bytes % driver.sha_block_size_bytes:
        raise UsageError(
            'the object size %d is not a positive multiple of the hash '
            'block size %d (backup_file_size and '
            'backup_sha_block_size_bytes, or backup_s3_object_size and '
            'backup_s3_block_size)' % (driver.chunk_size_bytes,
                                       driver.sha_block_size_bytes))


def create_backup(session, volume_path, incremental=False, name=None,
                  description=None, container=None, volume_id=None,
                  size=None):
    """Back up a volume; returns ``(record, seconds)``."""
    from cinder_chunked_ext import catalog
    from cinder_chunked_ext import cinder_compat

    volume, size_bytes, seekable = _open_volume(volume_path, size)
    with contextlib.ExitStack() as stack:
        if volume is not sys.stdin.buffer:
            stack.callback(volume.close)
        if volume_path == '-':
            if not volume_id:
                raise UsageError('reading the volume from stdin needs '
                                 '--volume-id')
            source = '-'
        else:
            source = os.path.realpath(volume_path)
        volume_id = volume_id or catalog.volume_id_for_path(volume_path)
        env = session.environment(create=True)
        cat = env.catalog
        driver = session.driver(env)
        _chunk_geometry_check(driver)
        if container is not None:
            driver.validate_container(container)
        driver.check_for_setup_error()
        parent = None
        if incremental:
            parent = cat.latest_available(volume_id)
            if parent is None:
                raise UsageError(
                    'no available backup of volume %s to base an '
                    'incremental backup on; make a full backup first'
                    % volume_id)
            session.check_record_driver(parent)
        cat.put_volume(volume_id, source, size_bytes)
        record = cat.new_backup(
            volume_id=volume_id, size=catalog.size_gib(size_bytes),
            parent_id=parent.id if parent else None, container=container,
            display_name=name, display_description=description,
            availability_zone=CONF.storage_availability_zone,
            volume_size_bytes=size_bytes if seekable else None,
            source_path=source, driver=session.driver_name)
        LOG.info('Backup %s of %s started.', record.id, source)
        bar = ProgressBar('backup %s' % record.id[:8], size_bytes,
                          stream=session.out.stderr)
        start = volume.tell() if seekable else 0
        metered = MeteredFile(volume,
                              on_read=lambda f: bar.update(f.highest - start),
                              limit=None if seekable else size_bytes)
        started = time.monotonic()
        try:
            driver.backup(record, metered)
        except BaseException as e:
            bar.close()
            _backup_failed(driver, record, e)
            raise
        bar.close()
        seconds = time.monotonic() - started
        record.refresh()
        if record.status in (cinder_compat.BackupStatus.DELETING,
                             cinder_compat.BackupStatus.DELETED):
            raise CliError('backup %s was deleted while it ran; nothing was '
                           'kept' % record.id)
        if not seekable:
            record.volume_size_bytes = metered.bytes_read
            if not metered.bytes_read:
                error = UsageError('volume %s was empty' % volume_path)
                _backup_failed(driver, record, error)
                raise error
        record.status = catalog.AVAILABLE
        record.fail_reason = None
        record.save()
        return record, seconds


def _backup_failed(driver, record, error):
    """Mark a failed or interrupted backup and remove what it wrote."""
    from cinder_chunked_ext import catalog
    interrupted = isinstance(error, KeyboardInterrupt)
    try:
        # The metadata object is written last, so nothing here looks like
        # a complete backup; remove the partial objects all the same.
        # First: in a full repository that holds the catalog, this frees
        # the space the catalog needs to record the failure.
        try:
            driver.delete_backup(record)
        except Exception as e:  # noqa - the first error is the one to show
            LOG.warning('Could not remove the objects of failed backup '
                        '%(id)s: %(error)s', {'id': record.id, 'error': e})
    finally:
        record.status = catalog.ERROR
        record.fail_reason = ('interrupted' if interrupted
                              else _one_line(error) or type(error).__name__)
        try:
            record.save()
        except Exception as e:  # noqa - the first error is the one to show
            LOG.warning('Could not record in the catalog that backup '
                        '%(id)s failed: %(error)s',
                        {'id': record.id, 'error': e})


def backup_json(record, children=None):
    doc = {
        'id': record.id,
        'volume_id': record.volume_id,
        'parent_id': record.parent_id,
        'incremental': bool(record.parent_id),
        'status': record.status,
        'size_gib': record.size,
        'volume_size_bytes': getattr(record, 'volume_size_bytes', None),
        'object_count': record.object_count,
        'container': record.container,
        'service_metadata': record.service_metadata,
        'name': record.display_name,
        'description': record.display_description,
        'created_at': (record.created_at.isoformat()
                       if hasattr(record.created_at, 'isoformat')
                       else record.created_at),
        'availability_zone': record.availability_zone,
        'driver': getattr(record, 'driver', None),
        'source': getattr(record, 'source_path', None),
        'fail_reason': getattr(record, 'fail_reason', None),
    }
    if children is not None:
        doc['children'] = [c.id for c in children]
    return doc


def cmd_backup_create(session, args):
    record, seconds = create_backup(
        session, args.volume, incremental=args.incremental, name=args.name,
        description=args.description, container=args.container,
        volume_id=args.volume_id, size=args.size)
    doc = backup_json(record)
    doc['seconds'] = round(seconds, 3)
    size = record.volume_size_bytes or 0
    kind = ('incremental backup (parent %s)' % record.parent_id
            if record.parent_id else 'full backup')
    session.out.result(doc, [
        'Backup %s created: %s of %s: %s read, %s written, %.1f s '
        '(%s/s).' % (record.id, kind, record.source_path, human_bytes(size),
                     _count(record.object_count, 'object'), seconds,
                     human_bytes(size / seconds if seconds else 0))])
    return EXIT_OK


def cmd_backup_list(session, args):
    cat = session.catalog()
    records = cat.list(volume_id=args.volume_id, status=args.status)
    lines = []
    if records:
        rows = [('ID', 'STATUS', 'KIND', 'SIZE', 'OBJECTS', 'CREATED',
                 'NAME', 'SOURCE')]
        for r in records:
            rows.append((r.id, r.status,
                         'incr' if r.parent_id else 'full',
                         human_bytes(r.volume_size_bytes),
                         str(r.object_count),
                         r.created_at.strftime('%Y-%m-%d %H:%M:%S'),
                         r.display_name or '-', r.source_path or '-'))
        widths = [max(len(row[i]) for row in rows) for i in range(7)]
        for row in rows:
            lines.append('  '.join(cell.ljust(widths[i]) if i < 7 else cell
                                   for i, cell in enumerate(row)).rstrip())
    else:
        lines.append('No backups in catalog %s.' % cat.path)
    session.out.result({'backups': [backup_json(r) for r in records]},
                       lines)
    return EXIT_OK


def _resolve(session, backup_id):
    from cinder_chunked_ext import catalog
    from cinder_chunked_ext import exception
    try:
        return session.catalog().resolve(backup_id)
    except exception.BackupNotFound:
        raise NotFoundError('no backup %s in catalog %s'
                            % (backup_id, session.catalog_path()))
    except catalog.AmbiguousBackupId as e:
        raise UsageError(str(e))


def cmd_backup_show(session, args):
    record = _resolve(session, args.id)
    children = session.catalog().children(record.id)
    doc = backup_json(record, children)
    lines = ['%-20s %s' % (key + ':', '-' if value is None else
                           (', '.join(value) or '-')
                           if isinstance(value, list) else value)
             for key, value in doc.items()]
    session.out.result(doc, lines)
    return EXIT_OK


def cmd_backup_delete(session, args):
    from cinder_chunked_ext import catalog
    record = _resolve(session, args.id)
    session.check_record_driver(record)
    dependents = [c for c in session.catalog().children(record.id)
                  if c.status != catalog.DELETED]
    if dependents:
        raise UsageError(
            'backup %s has dependent incremental backups (%s); delete them '
            'first' % (record.id, ', '.join(c.id for c in dependents)))
    if record.status not in (catalog.AVAILABLE, catalog.ERROR) and \
            not args.force:
        raise UsageError('backup %s is %s; only available or error backups '
                         'can be deleted (or use --force)'
                         % (record.id, record.status))
    env = session.environment()
    driver = session.driver(env)
    record.status = catalog.DELETING
    record.save()
    try:
        driver.delete_backup(record)
    except BaseException as e:
        record.status = catalog.ERROR
        record.fail_reason = 'delete failed: %s' % _one_line(e)
        record.save()
        raise
    session.catalog().remove(record.id)
    session.out.result({'id': record.id, 'deleted': True},
                       ['Backup %s deleted.' % record.id])
    return EXIT_OK


# -- restore ---------------------------------------------------------------

def _restore_plan(driver, chain):
    plan = []
    for layer in reversed(chain):
        metadata = getattr(layer, 'metadata', None) or \
            driver._read_metadata(layer)
        layer.metadata = metadata
        plan.extend((obj.offset, obj.length) for obj in metadata.objects)
    return plan


def _open_target(target, mode, size_bytes):
    """``(file, is_new, created)`` for the restore target."""
    kind = None
    if os.path.exists(target):
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError('restore target %s is a directory' % target)
        if stat.S_ISREG(st.st_mode):
            kind = 'empty' if st.st_size == 0 else 'data'
        else:
            kind = 'device'
    if mode == 'auto':
        if kind in ('data', 'device'):
            raise UsageError('restore target %s exists and is not empty; '
                             'use --existing to overwrite it' % target)
        mode = 'new'
    if mode == 'new':
        if kind in ('data', 'device'):
            raise UsageError('restore target %s exists and is not empty '
                             '(--new needs a new or empty file)' % target)
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            raise NotFoundError('directory %s does not exist' % directory)
        handle = open(target, 'r+b' if kind else 'xb')
        handle.truncate(size_bytes)
        return handle, True, kind is None
    if kind is None:
        raise NotFoundError('restore target %s does not exist (--existing)'
                            % target)
    return open(target, 'r+b'), False, False


def restore_backup(session, driver, record, target, mode, size_bytes):
    """Restore ``record`` (and its chain) to ``target``; return details."""
    from cinder_chunked_ext import catalog
    from cinder_chunked_ext import cinder_compat
    chain = driver._backup_chain(record)
    plan = _restore_plan(driver, chain)
    if size_bytes is None:
        from cinder_chunked_ext import recovery
        size_bytes = recovery.volume_size_bytes(chain)
    _check_within(chain, size_bytes)
    volume, is_new, created = _open_target(target, mode, size_bytes)
    bar = ProgressBar('restore %s' % record.id[:8],
                      sum(length for _offset, length in plan),
                      stream=session.out.stderr)
    meter = RestoreMeter(plan, bar)
    metered = MeteredFile(volume, on_write=meter.on_write,
                          on_flush=meter.on_flush)
    previous = record.status
    marked = False
    if getattr(record, 'read_only', False):
        # A read-only repository that holds the catalog: restore all the
        # same, without marking the backup restoring.
        LOG.warning('The catalog %s cannot be written; backup %s is '
                    'restored without being marked restoring in it.',
                    session.catalog_path(), record.id)
        record = _UnrecordedRecord(record)
    started = time.monotonic()
    ok = False
    try:
        record.status = cinder_compat.BackupStatus.RESTORING
        record.save()
        marked = True
        driver.restore(record, catalog.volume_id_for_path(target), metered,
                       is_new)
        if is_new:
            # The volume may have shrunk since its full backup.
            volume.truncate(size_bytes)
        ok = True
    finally:
        bar.close()
        volume.close()
        record.status = previous
        if marked:
            record.save()
        if not ok:
            _restore_failed(session, target, created, is_new, meter)
    return {'backup_id': record.id, 'target': target,
            'mode': 'new' if is_new else 'existing',
            'size_bytes': size_bytes,
            'chain': [layer['id'] for layer in chain],
            'seconds': round(time.monotonic() - started, 3)}


def _check_within(chain, size_bytes):
    """Refuse objects that end beyond their volume, before any write.

    The engine bounds objects by the volume size in GiB, as Cinder sizes
    volumes; the catalog knows, for each backup, the size in bytes of the
    volume it was made from (a parent's may be larger: the volume may
    have shrunk since).
    """
    from cinder_chunked_ext import exception
    for layer in chain:
        limit = getattr(layer, 'volume_size_bytes', None) or size_bytes
        for obj in layer.metadata.objects:
            if obj.end > limit:
                raise exception.CorruptBackup(
                    backup_id=layer['id'],
                    reason='object %s ends at byte %d, beyond the %d-byte '
                           'volume' % (obj.name, obj.end, limit))


class _UnrecordedRecord(object):
    """A catalog record restored while the catalog cannot be written.

    It reads ``restoring`` (the engine checks that status to go on) and
    neither writes to nor re-reads the catalog.
    """

    def __init__(self, record):
        self._record = record
        self.status = record.status

    def __getattr__(self, name):
        return getattr(self._record, name)

    def __getitem__(self, key):
        return getattr(self, key)

    def save(self):
        return None

    def refresh(self):
        return None

    @contextlib.contextmanager
    def as_read_deleted(self):
        yield self


def _restore_failed(session, target, created, is_new, meter):
    try:
        if created:
            os.remove(target)
        elif is_new:
            with open(target, 'r+b') as f:
                f.truncate(0)
        elif meter.bytes_written:
            session.out.stderr.write(
                '%s: warning: %s was partly overwritten: the restore '
                'stopped after %d of %d objects (%s of %s)\n'
                % (PROG, target, meter.index, len(meter.plan),
                   human_bytes(meter.finished),
                   human_bytes(sum(length for _o, length in meter.plan))))
    except OSError as e:
        LOG.warning('Could not clean up %s: %s', target, e)


def _restore_mode(args):
    if args.new:
        return 'new'
    if args.existing:
        return 'existing'
    return 'auto'


def cmd_restore(session, args):
    from cinder_chunked_ext import catalog
    mode = _restore_mode(args)
    if args.from_repository:
        if len(args.args) != 1:
            raise UsageError('restore --from-repository CONTAINER PREFIX '
                             'needs exactly one TARGET')
        target = args.args[0]
        _env, driver, record = _repository_backup(
            session, *args.from_repository)
        source = 'repository'
        size_bytes = None
    else:
        if len(args.args) != 2:
            raise UsageError('restore needs a backup ID and a TARGET (or '
                             '--from-repository CONTAINER PREFIX TARGET)')
        backup_id, target = args.args
        record = _resolve(session, backup_id)
        session.check_record_driver(record)
        if record.status != catalog.AVAILABLE:
            raise UsageError('backup %s is %s; only available backups can '
                             'be restored' % (record.id, record.status))
        driver = session.driver(session.environment())
        source = 'catalog'
        size_bytes = record.volume_size_bytes
    done = restore_backup(session, driver, record, target, mode, size_bytes)
    done['source'] = source
    session.out.result(done, [
        'Restored backup %s (%s) to %s (%s, %s target) in %.1f s.'
        % (record.id, 'full' if len(done['chain']) == 1 else
           'incremental, chain of %d' % len(done['chain']), target,
           human_bytes(done['size_bytes']), done['mode'],
           done['seconds'])])
    return EXIT_OK


def _repository_backup(session, container, prefix):
    from cinder_chunked_ext import catalog
    from cinder_chunked_ext import recovery
    env = recovery.RepositoryEnvironment()
    driver = session.driver_class(catalog.Context(env))
    env.attach(driver)
    try:
        record = env.load(container, prefix)
    except recovery.NotInRepository:
        raise NotFoundError('no backup with prefix %s in container %s of '
                            'the %s repository' % (prefix, container,
                                                   session.repository_text()))
    return env, driver, record


# -- verify ----------------------------------------------------------------

def verify_backups(session, driver, records):
    """Reports of ``records``; progress on stderr."""
    from cinder_chunked_ext import verify
    bar = ProgressBar('verify', 0, stream=session.out.stderr)
    verifier = verify.Verifier(driver, on_bytes=bar.add)
    bar.total = sum(verifier.planned_bytes(r) for r in records)
    reports = []
    try:
        for record in records:
            reports.append(verifier.verify(record))
    finally:
        bar.close()
    return reports


def cmd_verify(session, args):
    from cinder_chunked_ext import catalog
    if args.from_repository:
        if args.id or args.all:
            raise UsageError('verify takes an ID, --all or '
                             '--from-repository CONTAINER PREFIX')
        _env, driver, record = _repository_backup(session,
                                                  *args.from_repository)
        records = [record]
    else:
        if bool(args.id) == bool(args.all):
            raise UsageError('verify takes a backup ID or --all')
        if args.all:
            records = session.catalog().list(status=catalog.AVAILABLE)
        else:
            records = [_resolve(session, args.id)]
        for record in records:
            session.check_record_driver(record)
        driver = session.driver(session.environment())
    reports = verify_backups(session, driver, records)
    ok = all(r.ok for r in reports)
    lines = []
    for report in reports:
        if report.ok:
            lines.append('Backup %s: OK (%s, %s, chain of %d).'
                         % (report.backup_id,
                            _count(report.objects_checked, 'object'),
                            human_bytes(report.bytes_checked),
                            len(report.chain)))
        else:
            lines.append('Backup %s: %d problem(s):'
                         % (report.backup_id, len(report.problems)))
            # Object names include their backup's id.
            lines.extend('  %s: %s' % (p.object_name or
                                       'backup %s' % p.backup_id, p.reason)
                         for p in report.problems)
    if not reports:
        lines.append('No available backups to verify.')
    session.out.result({'ok': ok, 'backups': [r.to_json() for r in reports]},
                       lines)
    if not ok:
        bad = [r.backup_id for r in reports if not r.ok]
        session.out.stderr.write('%s: error: verification failed for %s\n'
                                 % (PROG, ', '.join(bad)))
        return EXIT_FAILED
    return EXIT_OK


# -- repository scan ---------------------------------------------------------

def cmd_repository_scan(session, args):
    from cinder_chunked_ext import catalog
    from cinder_chunked_ext import exception
    from cinder_chunked_ext import recovery
    env = recovery.RepositoryEnvironment()
    driver = session.driver_class(catalog.Context(env))
    env.attach(driver)
    try:
        entries = env.scan(args.container or None)
    except exception.ObjectNotFound as e:
        raise NotFoundError(str(e))
    cat = session.catalog()
    found = []
    for entry in entries:
        r = entry.record
        in_catalog = False
        if r is not None:
            try:
                cat.get(r.id)
                in_catalog = True
            except exception.BackupNotFound:
                in_catalog = False
        found.append({
            'id': r.id if r else None,
            'volume_id': r.volume_id if r else None,
            'parent_id': r.parent_id if r else None,
            'container': entry.container,
            'prefix': entry.prefix,
            'created_at': r.created_at if r else None,
            'name': r.display_name if r else None,
            'description': r.display_description if r else None,
            'object_count': r.object_count if r else None,
            'in_catalog': in_catalog,
            'error': entry.error,
        })
    lines = ['%d backup(s) found in the %s repository.'
             % (len(found), session.repository_text())]
    for item in found:
        if item['error']:
            lines.append('  UNREADABLE %s/%s: %s' % (
                item['container'], item['prefix'], item['error']))
            continue
        lines.append('  %s  %s  %s%s' % (
            item['id'], item['created_at'],
            'incremental of %s' % item['parent_id'] if item['parent_id']
            else 'full', '' if item['in_catalog'] else '  (not in catalog)'))
        lines.append('      restore --from-repository %s %s TARGET'
                     % (item['container'], item['prefix']))
    session.out.result({'repository': session.repository_text(),
                        'backups': found}, lines)
    return EXIT_OK


# -- demo ------------------------------------------------------------------

DEMO_TEXT = (b'cinder-chunked-backup demo: a line of text that compresses '
             b'well, line %08d\n')


def make_sample_volume(path, size, seed=2026):
    """A volume image of random data, text and zeros (left sparse).

    The volume is made of regions of 1 MiB (smaller for a volume under
    16 MiB, so that it still mixes all three kinds).
    """
    rng = random.Random(seed)
    region = min(MiB, max(4 * KiB, size // 16 // (4 * KiB) * (4 * KiB)))
    kinds = ('random', 'zeros', 'text', 'zeros', 'random', 'text',
             'zeros', 'zeros')
    with open(path, 'wb') as f:
        for index, offset in enumerate(range(0, size, region)):
            length = min(region, size - offset)
            kind = kinds[index % len(kinds)]
            if kind == 'zeros':
                continue
            if kind == 'random':
                data = rng.randbytes(length)
            else:
                data = b''.join(DEMO_TEXT % (offset + n)
                                for n in range(length // 64 + 1))[:length]
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def change_sample_volume(path, size, count=5, seed=7):
    """Overwrite ``count`` regions with new random data; return bytes."""
    rng = random.Random(seed)
    length = min(64 * KiB, max(4 * KiB, size // 64 // (4 * KiB) * (4 * KiB)))
    offsets = sorted({(size * n // count) // length * length
                      for n in range(count)})
    changed = 0
    with open(path, 'r+b') as f:
        for offset in offsets:
            data = rng.randbytes(min(length, size - offset))
            f.seek(offset)
            f.write(data)
            changed += len(data)
    return changed


def cmd_demo(session, args):
    own_dir = args.workdir is None
    workdir = (tempfile.mkdtemp(prefix='cinder-chunked-demo-') if own_dir
               else os.path.abspath(args.workdir))
    os.makedirs(workdir, exist_ok=True)
    if not session.args.repository and session.driver_name == 'posix':
        session.repository_override = os.path.join(workdir, 'repository')
    if not session.args.catalog:
        session.catalog_override = os.path.join(workdir, CATALOG_NAME)
    session.configure()
    out = session.out
    steps = []
    total_steps = 7
    doc = {'ok': False, 'workdir': workdir,
           'repository': session.repository_text(), 'steps': steps}
    out.say('%s demo in %s (repository: %s)'
            % (PROG, workdir, session.repository_text()))

    def step(title, func):
        number = len(steps) + 1
        started = time.monotonic()
        detail = func()
        seconds = time.monotonic() - started
        steps.append({'step': title, 'seconds': round(seconds, 3),
                      'detail': detail})
        out.say('[%d/%d] %s: %s (%.2f s)' % (number, total_steps, title,
                                             detail, seconds))
        return detail

    volume = os.path.join(workdir, 'volume.img')
    restored = os.path.join(workdir, 'restored.img')
    for path in (volume, restored):
        if os.path.exists(path):
            os.remove(path)
    size = args.size
    ids = {}

    def create():
        make_sample_volume(volume, size)
        return 'sample volume %s of %s (zeros, random data, text)' % (
            volume, human_bytes(size))

    def full():
        record, _s = create_backup(session, volume, name='demo full')
        ids['full'] = record.id
        return 'backup %s, %s' % (record.id,
                                  _count(record.object_count, 'object'))

    def change():
        changed = change_sample_volume(volume, size)
        return '%s of new data written in place' % human_bytes(changed)

    def incremental():
        record, _s = create_backup(session, volume, incremental=True,
                                   name='demo incremental')
        ids['incremental'] = record.id
        return 'backup %s, %s (parent %s)' % (
            record.id, _count(record.object_count, 'object'),
            record.parent_id)

    def check():
        record = session.catalog().get(ids['incremental'])
        driver = session.driver(session.environment())
        report = verify_backups(session, driver, [record])[0]
        if not report.ok:
            raise CliError('verification of backup %s failed: %s'
                           % (record.id, '; '.join(
                               str(p) for p in report.problems)))
        return 'chain of %d backups, %s, %s checked, no problems' % (
            len(report.chain), _count(report.objects_checked, 'object'),
            human_bytes(report.bytes_checked))

    def restore():
        record = session.catalog().get(ids['incremental'])
        driver = session.driver(session.environment())
        done = restore_backup(session, driver, record, restored, 'new',
                              record.volume_size_bytes)
        return 'backup %s restored to new file %s' % (record.id,
                                                      done['target'])

    def compare():
        doc['sha256_original'] = file_sha256(volume)
        doc['sha256_restored'] = file_sha256(restored)
        same = doc['sha256_original'] == doc['sha256_restored']
        return 'sha256 %s (original) %s %s (restored)' % (
            doc['sha256_original'][:16], '==' if same else '!=',
            doc['sha256_restored'][:16])

    step('create a sample volume', create)
    step('full backup', full)
    step('change some blocks', change)
    step('incremental backup', incremental)
    step('verify', check)
    step('restore to a new file', restore)
    step('compare', compare)
    doc['full_backup_id'] = ids['full']
    doc['incremental_backup_id'] = ids['incremental']
    doc['ok'] = doc['sha256_original'] == doc['sha256_restored']
    if own_dir and doc['ok'] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        doc['workdir_removed'] = True
    if doc['ok']:
        lines = ['Demo succeeded: the restored volume is identical to the '
                 'original.']
    else:
        lines = ['Demo FAILED: the restored volume differs from the '
                 'original (files kept in %s).' % workdir]
    out.result(doc, lines)
    return EXIT_OK if doc['ok'] else EXIT_FAILED


# -- parser and main ---------------------------------------------------------

def _epilog():
    marker = 'JSON output (--json)'
    text = __doc__[__doc__.index(marker):]
    return text.replace('``', '')


def _parser_with(flags):
    """An ArgumentParser class whose instances inherit ``flags``."""
    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault('parents', [flags])
            kwargs.setdefault('formatter_class',
                              argparse.RawDescriptionHelpFormatter)
            super().__init__(*args, **kwargs)
    return Parser


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Back up, verify and restore volumes with the '
                    'cinder_chunked_ext drivers, without a running '
                    'Cinder.',
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repository', metavar='PATH',
                        help='the repository: directory for posix '
                             '(backup_posix_path), share for nfs '
                             '(backup_share), bucket for s3 '
                             '(backup_s3_store_bucket)')
    parser.add_argument('--catalog', metavar='PATH',
                        help='the SQLite catalog of backups (default: '
                             '<repository>/%s for posix, else %s)'
                             % (CATALOG_NAME, os.path.join(
                                 '$XDG_DATA_HOME', APP_DIR, CATALOG_NAME)))
    parser.add_argument('--driver', choices=DRIVERS,
                        help='backup driver (default: posix)')
    parser.add_argument('--config-file', metavar='FILE', action='append',
                        help='a cinder.conf-style file with the drivers\' '
                             'options; may be repeated')
    parser.add_argument('--compression', metavar='ALGO',
                        help='backup_compression_algorithm: none, zlib, '
                             'gzip, bz2, bzip2 or zstd')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object on stdout')
    parser.add_argument('--verbose', '-v', action='store_true',
                        help='show the engine\'s progress logs')
    parser.add_argument('--debug', action='store_true',
                        help='show debug logs and tracebacks')
    # The output flags are also accepted after the command.
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument('--json', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    flags.add_argument('--verbose', '-v', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    flags.add_argument('--debug', action='store_true',
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND',
                                     parser_class=_parser_with(flags))
    commands.required = True

    backup = commands.add_parser('backup', help='create, list, show and '
                                                'delete backups')
    backup_cmds = backup.add_subparsers(dest='backup_command',
                                        metavar='ACTION')
    backup_cmds.required = True
    create = backup_cmds.add_parser('create', help='back up a volume file '
                                                   'or block device')
    create.add_argument('volume', metavar='VOLUME',
                        help='file, block device, FIFO or - for stdin')
    create.add_argument('--incremental', action='store_true',
                        help='only what changed since the newest '
                             'available backup of the volume')
    create.add_argument('--name', help='display name')
    create.add_argument('--description', help='display description')
    create.add_argument('--container',
                        help='container (directory or bucket) to use '
                             'instead of the driver\'s default')
    create.add_argument('--volume-id',
                        help='volume id (default: uuid5 of the real path)')
    create.add_argument('--size', type=parse_size,
                        help='size of a stream volume (FIFO, stdin): at '
                             'most this many bytes are read')
    create.set_defaults(func=cmd_backup_create)

    listing = backup_cmds.add_parser('list', help='list the catalog')
    listing.add_argument('--volume-id')
    listing.add_argument('--status')
    listing.set_defaults(func=cmd_backup_list)

    show = backup_cmds.add_parser('show', help='show one backup')
    show.add_argument('id', metavar='ID')
    show.set_defaults(func=cmd_backup_show)

    delete = backup_cmds.add_parser('delete', help='delete one backup')
    delete.add_argument('id', metavar='ID')
    delete.add_argument('--force', action='store_true',
                        help='also delete a backup in another status than '
                             'available or error')
    delete.set_defaults(func=cmd_backup_delete)

    restore = commands.add_parser(
        'restore', help='restore a backup to a file or device',
        usage='%(prog)s [--new | --existing] ID TARGET\n'
              '       %(prog)s [--new | --existing] --from-repository '
              'CONTAINER PREFIX TARGET')
    restore.add_argument('args', nargs='+', metavar='ID TARGET',
                         help='backup id and target (only the target with '
                              '--from-repository)')
    restore.add_argument('--from-repository', nargs=2,
                         metavar=('CONTAINER', 'PREFIX'),
                         help='restore from the repository alone (no '
                              'catalog), as listed by repository scan')
    modes = restore.add_mutually_exclusive_group()
    modes.add_argument('--new', action='store_true',
                       help='TARGET must not exist or be empty; it is '
                            'created sparse with the volume\'s size')
    modes.add_argument('--existing', action='store_true',
                       help='overwrite TARGET in place')
    restore.set_defaults(func=cmd_restore)

    verify = commands.add_parser(
        'verify', help='check a backup chain against its checksums')
    verify.add_argument('id', metavar='ID', nargs='?')
    verify.add_argument('--all', action='store_true',
                        help='every available backup of the catalog')
    verify.add_argument('--from-repository', nargs=2,
                        metavar=('CONTAINER', 'PREFIX'),
                        help='a backup found in the repository (no '
                             'catalog)')
    verify.set_defaults(func=cmd_verify)

    repository = commands.add_parser(
        'repository', help='find backups in a repository (no catalog)')
    repo_cmds = repository.add_subparsers(dest='repository_command',
                                          metavar='ACTION')
    repo_cmds.required = True
    scan = repo_cmds.add_parser('scan', help='list the backups found')
    scan.add_argument('--container', action='append',
                      help='list this container (default: the whole '
                           'POSIX repository, or the configured bucket)')
    scan.set_defaults(func=cmd_repository_scan)

    demo = commands.add_parser(
        'demo', help='back up, verify and restore a sample volume')
    demo.add_argument('--workdir', metavar='DIR',
                      help='where to put the files (default: a new '
                           'temporary directory, removed on success)')
    demo.add_argument('--size', type=parse_size, default=64 * MiB,
                      help='size of the sample volume (default: 64M)')
    demo.add_argument('--keep', action='store_true',
                      help='keep the temporary directory')
    demo.set_defaults(func=cmd_demo)
    return parser


def _setup_logging(args):
    level = logging.WARNING
    if args.verbose:
        level = logging.INFO
    if args.debug:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(name)s: %(message)s'))
    root = logging.getLogger()
    previous = (list(root.handlers), root.level)
    root.handlers[:] = [handler]
    root.setLevel(level)
    return previous


def _restore_logging(previous):
    root = logging.getLogger()
    root.handlers[:], level = previous
    root.setLevel(level)


def _exit_code_of(error):
    """``(exit code, message)`` of an expected error, else ``None``."""
    from cinder_chunked_ext import cinder_compat
    from cinder_chunked_ext import exception
    if isinstance(error, cfg.ConfigFilesNotFoundError):
        return EXIT_NOT_FOUND, str(error)
    if isinstance(error, cfg.Error):
        return EXIT_USAGE, 'configuration: %s' % error
    if isinstance(error, (exception.ConfigNotFound,
                          exception.InvalidConfigurationValue,
                          exception.UnsafePath)):
        return EXIT_USAGE, str(error)
    if isinstance(error, exception.BackupNotFound):
        return EXIT_NOT_FOUND, str(error)
    if isinstance(error, cinder_compat.CinderException):
        return EXIT_FAILED, str(error)
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        if error.filename:
            text = '%s: %s' % (error.filename, text)
        return EXIT_FAILED, text
    import sqlite3
    if isinstance(error, sqlite3.Error):
        return EXIT_FAILED, 'catalog: %s' % error
    return None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None):
    """Run the tool; returns the exit status.

    Without ``argv`` (the console script, ``python -m``) it runs as the
    program, on the package's stand-ins for Cinder (see
    :func:`_keep_cinder_out`).  With ``argv`` (tests, other callers) it
    leaves the process's imports as they are.
    """
    if argv is None:
        _keep_cinder_out()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging_state = _setup_logging(args)
    out = Output(args.json)
    # Ctrl-C must interrupt even when the parent process ignores SIGINT.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _quiet_import_engine(args.debug)
        session = Session(args, out)
        if args.func is not cmd_demo:
            session.configure()
        return args.func(session, args)
    except KeyboardInterrupt:
        out.error('interrupted', EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except CliError as e:
        if args.debug:
            traceback.print_exc()
        out.error(str(e), e.exit_code)
        return e.exit_code
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        try:
            known = _exit_code_of(e)
        except ImportError:    # the engine itself failed to import
            known = None
        if known is None:
            out.error('%s: %s (unexpected error; run with --debug for '
                      'details)' % (type(e).__name__, e), EXIT_FAILED)
            return EXIT_FAILED
        code, message = known
        out.error(message, code)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        _restore_logging(logging_state)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
