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

"""Back up, restore and verify volume files for ``cinder-chunked-backup``.

Each operation runs a driver of the session on a file or a device, with
a progress bar, and keeps the catalog true to what happened: a failed
backup is marked ``error`` and its objects removed; a restore marks its
backup ``restoring`` while it runs and cleans up a target it created.
The engine is imported inside the functions (see
:mod:`cinder_chunked_ext.tool.session`).
"""

import contextlib
import logging
import os
import select
import stat
import sys
import time

from oslo_config import cfg

from cinder_chunked_ext.engine import objects
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import records
from cinder_chunked_ext.tool import repository

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


# -- backup ----------------------------------------------------------------

#: The longest a read of a stream volume waits for data between two
#: chances for the interpreter to run a signal handler (Ctrl-C, SIGTERM).
STREAM_POLL_SECONDS = 0.25


class StreamVolume(object):
    """A FIFO, pipe or character device, read so that Ctrl-C ends it.

    Python runs a signal's handler on the main thread between bytecodes;
    a blocking ``read()`` is cut short (EINTR) only by a signal that
    lands while the thread is inside it.  One that lands just before
    (say while a buffered read waits for the GIL between two of its
    ``read()`` calls, which a busy machine and the backup's workers make
    last milliseconds) only marks the signal pending, and the next
    ``read()`` then waits for data that may never come: the writer keeps
    the stream open and the backup hangs.  So each read waits for data
    with ``poll`` in steps of :data:`STREAM_POLL_SECONDS`, back in the
    interpreter between steps, then makes one ``read()`` of what is
    there (the engine reads until it has what it asked for).
    """

    def __init__(self, fileobj):
        self._file = fileobj
        self._fd = fileobj.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def read(self, size):
        """At most ``size`` bytes, as soon as there are some (b'': EOF)."""
        if size == 0:
            return b''
        while not self._poll.poll(STREAM_POLL_SECONDS * 1000):
            pass
        return os.read(self._fd, size)

    def fileno(self):
        return self._fd


def _open_volume(path, size):
    """``(file, size_bytes, seekable)`` of the volume to back up."""
    if path == '-':
        if not size:
            raise exit_status.UsageError(
                'reading the volume from stdin needs --size')
        return sys.stdin.buffer, size, False
    if not os.path.exists(path):
        raise exit_status.NotFoundError('volume %s does not exist' % path)
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise exit_status.UsageError(
            'volume %s is a directory, not a file or a block device' % path)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        if not size:
            raise exit_status.UsageError(
                'volume %s is a stream; give its size with --size' % path)
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
        raise exit_status.UsageError('volume %s is empty' % path)
    return volume, actual, True


def _chunk_geometry_check(driver):
    if driver.chunk_size_bytes <= 0 or driver.sha_block_size_bytes <= 0 or \
            driver.chunk_size_bytes % driver.sha_block_size_bytes:
        raise exit_status.UsageError(
            'the object size %d is not a positive multiple of the hash '
            'block size %d (backup_file_size and '
            'backup_sha_block_size_bytes, backup_s3_object_size and '
            'backup_s3_block_size, or backup_swift_object_size and '
            'backup_swift_block_size)' % (driver.chunk_size_bytes,
                                          driver.sha_block_size_bytes))


def create_backup(session, volume_path, incremental=False, name=None,
                  description=None, container=None, volume_id=None,
                  size=None):
    """Back up a volume; returns ``(record, seconds)``."""
    from cinder_chunked_ext import cinder_compat
    from cinder_chunked_ext.tool import catalog

    volume, size_bytes, seekable = _open_volume(volume_path, size)
    with contextlib.ExitStack() as stack:
        if volume is not sys.stdin.buffer:
            stack.callback(volume.close)
        if volume_path == '-':
            if not volume_id:
                raise exit_status.UsageError(
                    'reading the volume from stdin needs --volume-id')
            source = '-'
        else:
            source = os.path.realpath(volume_path)
        volume_id = volume_id or catalog.volume_id_for_path(volume_path)
        if repository.create_posix(session):
            session.out.say('Created the repository %s.'
                            % session.repository_name())
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
                raise exit_status.UsageError(
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
        bar = progress.ProgressBar('backup %s' % record.id[:8], size_bytes,
                                   stream=session.out.stderr)
        start = volume.tell() if seekable else 0
        metered = progress.MeteredFile(
            volume if seekable else StreamVolume(volume),
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
            raise exit_status.CliError('backup %s was deleted while it ran; '
                                       'nothing was kept' % record.id)
        if not seekable:
            record.volume_size_bytes = metered.bytes_read
            if not metered.bytes_read:
                error = exit_status.UsageError('volume %s was empty'
                                               % volume_path)
                _backup_failed(driver, record, error)
                raise error
        record.status = catalog.AVAILABLE
        record.fail_reason = None
        record.save()
        return record, seconds


def stored_sizes(session, record):
    """What a backup occupies in the store, and how well it compressed.

    ``stored_bytes``: every object of the backup (data, ``_sha256file``,
    ``_metadata``) as stored; ``changed_bytes``: the volume data its
    objects hold (all of it for a full backup, what changed for an
    incremental one); ``compression_ratio``: ``changed_bytes`` over the
    data objects' stored size.  ``None`` where the store cannot tell.
    """
    from cinder_chunked_ext import exception
    sizes = {'stored_bytes': None, 'changed_bytes': None,
             'compression_ratio': None}
    try:
        driver = session.driver(session.environment())
        metadata = driver._read_metadata(record)
        infos = driver.store.list_object_info(record.container,
                                              record.service_metadata)
    except (exception.StoreError, AttributeError) as e:
        LOG.debug('No stored size for backup %s: %s', record.id, e)
        return sizes
    stored = {i.name: i.size for i in infos}
    if any(size is None for size in stored.values()):
        return sizes
    changed = sum(o.length for o in metadata.objects)
    data = sum(stored.get(o.name, 0) for o in metadata.objects)
    sizes['stored_bytes'] = sum(stored.values())
    sizes['changed_bytes'] = changed
    if data:
        sizes['compression_ratio'] = round(changed / data, 2)
    return sizes


def _backup_failed(driver, record, error):
    """Mark a failed or interrupted backup and remove what it wrote."""
    from cinder_chunked_ext.tool import catalog
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
                              else progress.one_line(error) or
                              type(error).__name__)
        try:
            record.save()
        except Exception as e:  # noqa - the first error is the one to show
            LOG.warning('Could not record in the catalog that backup '
                        '%(id)s failed: %(error)s',
                        {'id': record.id, 'error': e})


# -- delete ----------------------------------------------------------------

def _check_listing(driver, record):
    """Refuse a prefix that also lists objects not of ``record``.

    Done before the ``_metadata`` object goes, so that a refused delete
    removes nothing; a listing that fails is left to the driver's
    delete, which warns and goes on.
    """
    from cinder_chunked_ext.engine import prefixes
    from cinder_chunked_ext import exception
    try:
        names = driver.get_container_entries(record.container,
                                             record.service_metadata)
    except exception.StoreError:
        return
    prefixes.check_listing(record.id, record.service_metadata, names)


def delete_backup(session, driver, record):
    """Delete a backup's objects, then its record.

    The ``_metadata`` object goes first: a delete stopped half-way (a
    SIGKILL, a crash) then never leaves a backup that looks complete
    without all of its objects; what remains is objects with no metadata,
    which ``repository check`` finds, and a record left ``deleting``.
    A prefix that is not the backup's own is refused before anything is
    deleted, and the record is left ``error`` with the reason.
    """
    from cinder_chunked_ext.engine import manifest
    from cinder_chunked_ext.engine import prefixes
    from cinder_chunked_ext.tool import catalog
    record.status = catalog.DELETING
    record.save()
    try:
        if record.container is not None:
            prefixes.check(record.id, record.service_metadata)
        if record.container and record.service_metadata:
            _check_listing(driver, record)
            driver.delete_object(
                record.container,
                manifest.metadata_name(record.service_metadata))
        driver.delete_backup(record)
    except BaseException as e:
        record.status = catalog.ERROR
        record.fail_reason = 'delete failed: %s' % progress.one_line(e)
        record.save()
        raise
    session.catalog().remove(record.id)
    try:
        repository.remove_empty_container(driver, record.container)
    except Exception as e:  # noqa - the backup is gone; check finds it
        LOG.warning('Backup %s was deleted but its directory could not be '
                    'removed (repository check --delete removes empty '
                    'directories): %s', record.id, progress.one_line(e))


# -- restore ---------------------------------------------------------------

def _restore_plan(driver, chain):
    plan = []
    for layer in reversed(chain):
        metadata = getattr(layer, 'metadata', None) or \
            driver._read_metadata(layer)
        layer.metadata = metadata
        plan.extend((obj.offset, obj.length) for obj in metadata.objects)
    return plan


def _device_size(target):
    with open(target, 'rb') as device:
        return device.seek(0, os.SEEK_END)


def _existing_note(target, kind, actual, size_bytes, resize):
    """Refuse a target of another size; else what the restore leaves."""
    if actual == size_bytes:
        return None
    if kind == 'device':
        if actual < size_bytes:
            raise exit_status.UsageError(
                'restore target %s (%d bytes) is smaller than the backup\'s '
                '%d-byte volume' % (target, actual, size_bytes))
        return ('The last %s of device %s (after byte %d) were left as they '
                'were.' % (progress.human_bytes(actual - size_bytes), target,
                           size_bytes))
    if not resize:
        raise exit_status.UsageError(
            'restore target %s is %d bytes and the backup\'s volume %d '
            'bytes; --existing --resize makes it %d bytes (%s)'
            % (target, actual, size_bytes, size_bytes,
               'its last %d bytes are cut off' % (actual - size_bytes)
               if actual > size_bytes else 'it grows'))
    return ('%s was %s %d bytes to %d bytes, the volume\'s size.'
            % (target, 'cut from' if actual > size_bytes else 'grown from',
               actual, size_bytes))


def _open_target(target, mode, size_bytes, resize=False):
    """``(file, is_new, created, note)`` for the restore target."""
    kind = None
    if os.path.exists(target):
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            raise exit_status.UsageError('restore target %s is a directory'
                                         % target)
        if stat.S_ISREG(st.st_mode):
            kind = 'empty' if st.st_size == 0 else 'data'
        else:
            kind = 'device'
    if mode != 'existing' and kind in ('data', 'device'):
        raise exit_status.UsageError(
            'restore target %s exists and is not empty%s'
            % (target, '; use --existing to overwrite it' if mode == 'auto'
               else ' (--new needs a new or empty file)'))
    if mode in ('auto', 'new'):
        directory = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(directory):
            raise exit_status.NotFoundError('directory %s does not exist'
                                            % directory)
        handle = open(target, 'r+b' if kind else 'xb')
        handle.truncate(size_bytes)
        return handle, True, kind is None, None
    if kind is None:
        raise exit_status.NotFoundError(
            'restore target %s does not exist (--existing)' % target)
    actual = (_device_size(target) if kind == 'device'
              else os.path.getsize(target))
    note = _existing_note(target, kind, actual, size_bytes, resize)
    handle = open(target, 'r+b')
    if kind != 'device' and actual != size_bytes:
        handle.truncate(size_bytes)
    return handle, False, False, note


def restore_backup(session, driver, record, target, mode, size_bytes,
                   resize=False):
    """Restore ``record`` (and its chain) to ``target``; return details."""
    from cinder_chunked_ext import cinder_compat
    from cinder_chunked_ext.tool import catalog
    chain = objects.backup_chain(driver.env, record)
    plan = _restore_plan(driver, chain)
    if size_bytes is None:
        from cinder_chunked_ext.tool import recovery
        size_bytes = recovery.volume_size_bytes(chain)
    _check_within(chain, size_bytes)
    volume, is_new, created, note = _open_target(target, mode, size_bytes,
                                                 resize)
    bar = progress.ProgressBar('restore %s' % record.id[:8], 0,
                               stream=session.out.stderr)
    meter = progress.RestoreMeter(plan, bar)
    bar.total = meter.total
    metered = progress.MeteredFile(volume, on_write=meter.on_write,
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
            'seconds': round(time.monotonic() - started, 3),
            'target_note': note}


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


class _UnrecordedRecord(records.DetachedRecord):
    """A catalog record restored while the catalog cannot be written.

    It reads ``restoring`` (the engine checks that status to go on) and
    neither writes to nor re-reads the catalog.
    """

    def __init__(self, record):
        self._record = record
        self.status = record.status

    def __getattr__(self, name):
        return getattr(self._record, name)


def _restore_failed(session, target, created, is_new, meter):
    try:
        if created:
            os.remove(target)
        elif is_new:
            with open(target, 'r+b') as f:
                f.truncate(0)
        elif meter.bytes_written:
            session.out.problem(
                'warning', '%s was partly overwritten: the restore stopped '
                'after %d of %d objects (%s of %s)'
                % (target, meter.index, len(meter.plan),
                   progress.human_bytes(meter.finished),
                   progress.human_bytes(meter.total)))
    except OSError as e:
        LOG.warning('Could not clean up %s: %s', target, e)


# -- verify ----------------------------------------------------------------

def verify_backups(session, driver, records):
    """Reports of ``records``; progress on stderr."""
    from cinder_chunked_ext.tool import verify
    bar = progress.ProgressBar('verify', 0, stream=session.out.stderr)
    verifier = verify.Verifier(driver, on_bytes=bar.add)
    bar.total = sum(verifier.planned_bytes(r) for r in records)
    reports = []
    try:
        for record in records:
            bar.label = 'verify %s' % record.id[:8]
            reports.append(verifier.verify(record))
    finally:
        bar.close()
    return reports
