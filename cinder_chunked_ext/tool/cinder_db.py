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

"""``cinder-chunked-backup cinder adopt|release``: who owns a backup.

cinder-backup records the class path of its driver in ``backups.service``
and refuses to restore or delete a backup recorded under another class.
So after ``backup_driver`` changes from one of upstream's chunked drivers
to ours (or back), the existing backups are locked out until their
records name the new class:

* ``adopt`` records under ours every backup recorded under the upstream
  class ours replaces (the pair is chosen by the configured
  ``backup_driver``: POSIX, NFS, S3 or Swift).
* ``release`` records under upstream's class every backup recorded under
  ours, except those upstream could not restore, which it lists and
  leaves: a backup an operation is running on, a backup in ``error``
  (only ours removes the leftovers of a failed backup), a backup whose
  ``_metadata`` cannot be read or names a format version or a
  compression upstream cannot read here, and an encrypted backup (or
  one whose chain holds an encrypted backup): upstream cannot restore
  those at all, and the line says what to do instead.

Both go through Cinder's own database API, one compare-and-swap update
per backup (only a row that still names the old class and is in a
settled status changes), so they are safe while cinder-backup runs and
idempotent: a second run finds nothing left to do.  ``--dry-run`` prints
the same lines and changes nothing.  See doc/source/admin/migration.rst.
"""

import importlib.util
import os

from oslo_config import cfg

from cinder_chunked_ext.tool import exit_status

UPSTREAM = {
    'posix': 'cinder.backup.drivers.posix.PosixBackupDriver',
    'nfs': 'cinder.backup.drivers.nfs.NFSBackupDriver',
    's3': 'cinder.backup.drivers.s3.S3BackupDriver',
    'swift': 'cinder.backup.drivers.swift.SwiftBackupDriver',
}
OURS = {
    'posix': 'cinder_chunked_ext.drivers.posix.PosixBackupDriver',
    'nfs': 'cinder_chunked_ext.drivers.nfs.NFSBackupDriver',
    's3': 'cinder_chunked_ext.drivers.s3.S3BackupDriver',
    'swift': 'cinder_chunked_ext.drivers.swift.SwiftBackupDriver',
}
# No operation runs on a backup in these statuses.
SETTLED = ('available', 'error', 'error_deleting')
# Format versions upstream (cinder 29) reads.
UPSTREAM_VERSIONS = ('1.0.0',)
# What to do with a backup upstream cannot restore because of encryption.
_KEEP_OR_REDO = ('keep it on this driver (backup_driver = ours) for as '
                 'long as it is needed, or restore it to a volume and back '
                 'that volume up again with [chunked_backup] encryption = '
                 'none (a new full backup), then delete it')
ENCRYPTED = ('it is encrypted, and upstream Cinder cannot restore an '
             'encrypted backup: ' + _KEEP_OR_REDO)
ENCRYPTED_PARENT = ('its parent backup %s is encrypted, and upstream Cinder '
                    'cannot restore a backup whose chain holds an encrypted '
                    'backup: ' + _KEEP_OR_REDO)


def add_parser(commands):
    cinder = commands.add_parser(
        'cinder', help='hand a cloud\'s backups between upstream\'s '
                       'drivers and ours (Cinder\'s database)',
        description=__doc__.split('\n\n')[1].strip())
    actions = cinder.add_subparsers(dest='cinder_command', metavar='ACTION')
    actions.required = True
    for name, func, text in (
            ('adopt', cmd_adopt, 'record under our driver the backups '
                                 'recorded under the upstream driver it '
                                 'replaces'),
            ('release', cmd_release, 'record under the upstream driver the '
                                     'backups recorded under ours that '
                                     'upstream can restore')):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument('--config-file', dest='cinder_config_file',
                            metavar='FILE', action='append',
                            help='cinder.conf (its [database] and '
                                 'backup_driver); may be repeated')
        action.add_argument('--dry-run', action='store_true',
                            help='print what would change; change nothing')
        action.set_defaults(func=func, needs_cinder=True)
    return cinder


def _config_files(args):
    files = args.cinder_config_file or args.config_file or []
    if not files:
        raise exit_status.UsageError('--config-file cinder.conf is needed')
    for path in files:
        if not os.path.isfile(path):
            raise exit_status.NotFoundError(
                'configuration file %s does not exist' % path)
    return [os.path.abspath(p) for p in files]


def configured_kind(files):
    """``(kind, backup_driver)``: which pair the configuration names."""
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt('backup_driver', default=UPSTREAM['swift']))
    conf(args=[], project='cinder', default_config_files=files,
         default_config_dirs=[])
    driver = conf.backup_driver
    for kind in sorted(OURS):
        if driver in (OURS[kind], UPSTREAM[kind]):
            return kind, driver
    raise exit_status.UsageError(
        'backup_driver = %s is neither one of ours (%s) nor an upstream '
        'driver ours replaces' % (driver, ', '.join(sorted(OURS.values()))))


def _upstream_names(kind):
    """The class path and the module path upstream records (pre-Rocky)."""
    path = UPSTREAM[kind]
    return (path, path.rsplit('.', 1)[0])


def _open(args):
    from cinder_chunked_ext import cinder_compat
    files = _config_files(args)
    kind, driver = configured_kind(files)
    context = cinder_compat.open_cinder_database(files)
    return cinder_compat, context, kind, driver


def _line(action, record, old, new, note=''):
    return '%s %s (volume %s, %s): %s -> %s%s' % (
        action, record.id, record.volume_id, record.status, old, new,
        note)


def _change(session, args, cinder_compat, context, moves):
    """Apply ``[(record, old, new)]``; print a line for each."""
    out = session.out
    changed = lost = 0
    for record, old, new in moves:
        if args.dry_run:
            out.say(_line('would record', record, old, new))
            continue
        if cinder_compat.cinder_set_backup_service(context, record.id, old,
                                                   new, SETTLED):
            changed += 1
            out.say(_line('recorded', record, old, new))
        else:
            lost += 1
            out.say(_line('skipped', record, old, new,
                          ' (changed meanwhile; run again)'))
    return changed, lost


def cmd_adopt(session, args):
    cinder_compat, context, kind, driver = _open(args)
    if driver != OURS[kind]:
        raise exit_status.UsageError(
            'backup_driver is %s: set it to %s first (see '
            'doc/source/admin/migration.rst)' % (driver, OURS[kind]))
    theirs = _upstream_names(kind)
    moves, busy = [], []
    for record in cinder_compat.cinder_backup_records(context):
        if record.service not in theirs:
            continue
        if record.status in SETTLED:
            moves.append((record, record.service, OURS[kind]))
        else:
            busy.append(record)
    changed, lost = _change(session, args, cinder_compat, context, moves)
    for record in busy:
        session.out.say('busy %s (volume %s, %s): left under %s; run again '
                        'when its operation ended'
                        % (record.id, record.volume_id, record.status,
                           record.service))
    _summary(session, args, 'adopt', len(moves), changed, lost, busy)
    return exit_status.FAILED if busy or lost else exit_status.OK


def _upstream_can_read(driver, record):
    """None when upstream can restore the backup, else why not."""
    from cinder_chunked_ext.encryption import documents
    from cinder_chunked_ext.engine import manifest
    if record.status != 'available':
        return ('status %s: not restorable (delete it with our driver '
                'first)' % record.status)
    try:
        raw = driver._read_object_fully(
            record.container, manifest.metadata_name(record.prefix))
        if documents.is_sealed(raw):
            return ENCRYPTED
        metadata = manifest.BackupMetadata.from_json(raw,
                                                     backup_id=record.id)
    except Exception as e:  # noqa - any failure to read is the answer
        return 'its metadata cannot be read: %s' % e
    if metadata.version not in UPSTREAM_VERSIONS:
        return 'format version %s' % metadata.version
    for entry in metadata.objects:
        problem = _upstream_decompressor(entry.compression)
        if problem:
            return 'object %s: %s' % (entry.name, problem)
    return None


def _upstream_decompressor(algorithm):
    name = (algorithm or 'none').lower()
    if name in ('none', 'off', 'no', 'zlib', 'gzip', 'bz2', 'bzip2'):
        return None
    if name == 'zstd':
        # Upstream decompresses with the "zstd" module (ours with
        # zstandard): it must be importable where upstream runs.
        if importlib.util.find_spec('zstd') is None:
            return ('compressed with zstd, and upstream\'s "zstd" module '
                    'is not installed here')
        return None
    return 'compression %s is unknown to upstream' % algorithm


def cmd_release(session, args):
    cinder_compat, context, kind, _driver = _open(args)
    from cinder_chunked_ext import opts  # noqa: F401 - registers options
    from cinder_chunked_ext.tool import session as session_lib
    driver = session_lib.load_driver_class(kind)(context=context)
    moves, refused, busy, readable = [], [], [], []
    records = {r.id: r for r in cinder_compat.cinder_backup_records(context)}
    encrypted = set()
    for record in records.values():
        if record.service != OURS[kind]:
            continue
        if record.status not in SETTLED:
            busy.append(record)
            continue
        reason = _upstream_can_read(driver, record)
        if reason == ENCRYPTED:
            encrypted.add(record.id)
        if reason:
            refused.append((record, reason))
        else:
            readable.append(record)
    for record in readable:
        parent = _encrypted_ancestor(record, records, encrypted)
        if parent:
            refused.append((record, ENCRYPTED_PARENT % parent))
        else:
            moves.append((record, OURS[kind], UPSTREAM[kind]))
    changed, lost = _change(session, args, cinder_compat, context, moves)
    for record, reason in refused:
        session.out.say('refused %s (volume %s, %s): upstream could not '
                        'restore it: %s'
                        % (record.id, record.volume_id, record.status,
                           reason))
    for record in busy:
        session.out.say('busy %s (volume %s, %s): left under %s; run again '
                        'when its operation ended'
                        % (record.id, record.volume_id, record.status,
                           record.service))
    _summary(session, args, 'release', len(moves), changed, lost,
             busy + [r for r, _ in refused])
    return exit_status.FAILED if refused or busy or lost else exit_status.OK


def _encrypted_ancestor(record, records, encrypted):
    """The ID of the first encrypted backup below ``record``, or None.

    ``records``: every backup record by ID; ``encrypted``: the IDs of
    the encrypted ones.
    """
    seen = {record.id}
    parent_id = record.parent_id
    while parent_id and parent_id not in seen:
        if parent_id in encrypted:
            return parent_id
        seen.add(parent_id)
        parent = records.get(parent_id)
        parent_id = parent.parent_id if parent is not None else None
    return None


def _summary(session, args, action, planned, changed, lost, left):
    if args.dry_run:
        text = '%s: %d backup(s) would change (dry run)' % (action, planned)
    else:
        text = '%s: %d backup(s) changed' % (action, changed)
    if lost:
        text += ', %d changed meanwhile' % lost
    if left:
        text += ', %d left as they are' % len(left)
    session.out.result({'action': action, 'dry_run': args.dry_run,
                        'planned': planned, 'changed': changed,
                        'changed_meanwhile': lost,
                        'left': sorted(r.id for r in left)}, [text])
