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

"""The handlers of the core commands: backup, restore, verify, scan.

Each ``cmd_*`` takes the run's session and the parsed arguments, does
its work through :mod:`cinder_chunked_ext.tool.operations` and reports
through the session's output (plain text or ``--json``).  The day-2
commands keep their handlers beside their logic (``prune``,
``catalog_import``, ``repository_check``).
"""

from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import operations
from cinder_chunked_ext.tool import progress

#: The statuses a catalog record can have (``backup list --status``).
STATUSES = ('creating', 'available', 'error', 'deleting', 'restoring')


# -- backup ----------------------------------------------------------------

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
    record, seconds = operations.create_backup(
        session, args.volume, incremental=args.incremental, name=args.name,
        description=args.description, container=args.container,
        volume_id=args.volume_id, size=args.size)
    stored = operations.stored_sizes(session, record)
    doc = backup_json(record)
    doc['seconds'] = round(seconds, 3)
    doc['repository'] = session.repository_text()
    doc.update(stored)
    size = record.volume_size_bytes or 0
    kind = ('incremental backup (parent %s)' % record.parent_id
            if record.parent_id else 'full backup')
    lines = ['Backup %s created in the %s repository, container %s: '
             '%s of %s.' % (record.id, session.repository_text(),
                            record.container, kind, record.source_path),
             '  %s read in %.1f s (%s/s); %s written, %s stored.'
             % (progress.human_bytes(size), seconds,
                progress.human_bytes(size / seconds if seconds else 0),
                progress.plural(record.object_count, 'object'),
                progress.human_bytes(stored['stored_bytes']))]
    if stored['compression_ratio']:
        lines[-1] = lines[-1][:-1] + ' (%scompression %.2f:1).' % (
            '%s of changed data, ' % progress.human_bytes(
                stored['changed_bytes']) if record.parent_id else '',
            stored['compression_ratio'])
    session.out.result(doc, lines)
    return exit_status.OK


def known_volume(session, volume_id):
    """Refuse (status 3) a ``--volume-id`` the catalog does not know."""
    if volume_id is not None and \
            not session.catalog().list(volume_id=volume_id):
        raise exit_status.NotFoundError(
            'no backup of volume %s in catalog %s (backup list --json '
            'shows the volume IDs)' % (volume_id, session.catalog_path()))


def cmd_backup_list(session, args):
    known_volume(session, args.volume_id)
    cat = session.catalog()
    records = cat.list(volume_id=args.volume_id, status=args.status)
    lines = []
    if records:
        rows = [('ID', 'STATUS', 'KIND', 'SIZE', 'OBJECTS', 'CREATED',
                 'NAME', 'SOURCE')]
        for r in records:
            rows.append((r.id, r.status,
                         'incr' if r.parent_id else 'full',
                         progress.human_bytes(r.volume_size_bytes),
                         str(r.object_count),
                         progress.human_time(r.created_at),
                         r.display_name or '-', r.source_path or '-'))
        widths = [max(len(row[i]) for row in rows) for i in range(7)]
        for row in rows:
            lines.append('  '.join(cell.ljust(widths[i]) if i < 7 else cell
                                   for i, cell in enumerate(row)).rstrip())
    else:
        lines.append('No %sbackups in catalog %s.'
                     % ('%s ' % args.status if args.status else '',
                        cat.path))
    session.out.result({'backups': [backup_json(r) for r in records]},
                       lines)
    return exit_status.OK


def cmd_backup_show(session, args):
    record = session.resolve(args.id)
    children = session.catalog().children(record.id)
    doc = backup_json(record, children)
    shown = dict(doc, created_at=progress.human_time(record.created_at))
    lines = ['%-20s %s' % (key + ':', '-' if value is None else
                           (', '.join(value) or '-')
                           if isinstance(value, list) else value)
             for key, value in shown.items()]
    session.out.result(doc, lines)
    return exit_status.OK


def cmd_backup_delete(session, args):
    """Delete one or more backups: checked first, deleted newest first.

    Every ID is resolved and checked before anything is deleted; a
    backup whose dependents are all in the list goes after them.
    """
    from cinder_chunked_ext.tool import catalog
    records = []
    for backup_id in args.ids:
        record = session.resolve(backup_id)
        if record.id not in {r.id for r in records}:
            records.append(record)
    chosen = {r.id for r in records}
    for record in records:
        session.check_record_driver(record)
        dependents = [c for c in session.catalog().children(record.id)
                      if c.status != catalog.DELETED and c.id not in chosen]
        if dependents:
            raise exit_status.UsageError(
                'backup %s has dependent incremental backups (%s); delete '
                'them first (or with it, in one command); nothing was '
                'deleted' % (record.id, ', '.join(c.id for c in dependents)))
        if record.status not in (catalog.AVAILABLE, catalog.ERROR) and \
                not args.force:
            raise exit_status.UsageError(
                'backup %s is %s; only available or error backups can be '
                'deleted (or use --force); nothing was deleted'
                % (record.id, record.status))
    driver = session.driver(session.environment())
    deleted = []
    failure = None
    for record in _children_first(records):
        try:
            operations.delete_backup(session, driver, record)
        except Exception as e:  # noqa - reported after what was done
            if len(records) == 1:
                raise
            failure = 'deleting backup %s failed: %s' % (
                record.id, progress.one_line(e))
            break
        deleted.append(record.id)
    if len(records) == 1 and failure is None:
        doc = {'id': deleted[0], 'deleted': True}
    else:
        doc = {'deleted': deleted,
               'not_deleted': [r.id for r in records
                               if r.id not in deleted]}
    return exit_status.reported(session.out, doc, [
        'Backup %s deleted.' % backup_id for backup_id in deleted], failure)


def _children_first(records):
    """``records`` ordered so that no backup goes before its child."""
    ordered = []
    left = list(records)
    while left:
        parents = {r.parent_id for r in left}
        ready = [r for r in left if r.id not in parents] or left[:1]
        for record in ready:
            ordered.append(record)
            left.remove(record)
    return ordered


# -- restore ---------------------------------------------------------------

def _restore_mode(args):
    if args.new:
        return 'new'
    if args.existing:
        return 'existing'
    return 'auto'


def _from_repository(session, words, command):
    """``(driver, record)`` of ``ID`` or ``CONTAINER PREFIX``."""
    if len(words) not in (1, 2):
        raise exit_status.UsageError(
            '%s --from-repository takes a backup ID or CONTAINER PREFIX '
            '(as repository scan prints them)%s' % (
                command, ', then TARGET' if command == 'restore' else ''))
    return session.repository_backup(*words)


def cmd_restore(session, args):
    from cinder_chunked_ext.tool import catalog
    mode = _restore_mode(args)
    if args.resize and mode != 'existing':
        raise exit_status.UsageError('--resize goes with --existing')
    if args.from_repository:
        if len(args.args) not in (2, 3):
            raise exit_status.UsageError(
                'restore --from-repository needs a backup ID (or CONTAINER '
                'PREFIX) and a TARGET')
        target = args.args[-1]
        driver, record = _from_repository(session, args.args[:-1],
                                          'restore')
        source = 'repository'
        size_bytes = None
    else:
        if len(args.args) != 2:
            raise exit_status.UsageError(
                'restore needs a backup ID and a TARGET (or '
                '--from-repository ID TARGET)')
        backup_id, target = args.args
        record = session.resolve(backup_id)
        session.check_record_driver(record)
        if record.status != catalog.AVAILABLE:
            raise exit_status.UsageError(
                'backup %s is %s; only available backups can be restored'
                % (record.id, record.status))
        driver = session.driver(session.environment())
        source = 'catalog'
        size_bytes = record.volume_size_bytes
    done = operations.restore_backup(session, driver, record, target, mode,
                                     size_bytes, resize=args.resize)
    done['source'] = source
    lines = ['Restored backup %s (%s) to %s (%s, %s target) in %.1f s.'
             % (record.id, 'full' if len(done['chain']) == 1 else
                'incremental, chain of %d' % len(done['chain']), target,
                progress.human_bytes(done['size_bytes']), done['mode'],
                done['seconds'])]
    if done.get('target_note'):
        lines.append('  ' + done['target_note'])
    session.out.result(done, lines)
    return exit_status.OK


# -- verify ----------------------------------------------------------------

def cmd_verify(session, args):
    from cinder_chunked_ext.tool import catalog
    if args.from_repository:
        if args.all:
            raise exit_status.UsageError('verify takes IDs, --all or '
                                         '--from-repository ID')
        driver, record = _from_repository(session, args.ids, 'verify')
        records = [record]
    else:
        if bool(args.ids) == bool(args.all):
            raise exit_status.UsageError(
                'verify takes a backup ID or --all (several IDs may be '
                'given)')
        if args.all:
            records = session.catalog().list(status=catalog.AVAILABLE)
        else:
            records = [session.resolve(i) for i in args.ids]
        for record in records:
            session.check_record_driver(record)
        driver = session.driver(session.environment())
    reports = operations.verify_backups(session, driver, records)
    ok = all(r.ok for r in reports)
    lines = []
    for report in reports:
        if report.ok:
            lines.append('Backup %s: OK (%s, %s, chain of %d).'
                         % (report.backup_id,
                            progress.plural(report.objects_checked, 'object'),
                            progress.human_bytes(report.bytes_checked),
                            len(report.chain)))
        else:
            lines.append('Backup %s: %d problem(s):'
                         % (report.backup_id, len(report.problems)))
            # Object names include their backup's id.
            lines.extend('  %s: %s' % (p.object_name or
                                       'backup %s' % p.backup_id, p.reason)
                         for p in report.problems)
    if not reports:
        lines.append('No available backups to verify in catalog %s.'
                     % session.catalog_path())
    session.out.result({'ok': ok, 'backups': [r.to_json() for r in reports]},
                       lines)
    if not ok:
        bad = [r.backup_id for r in reports if not r.ok]
        session.out.problem('error', 'verification failed for %s'
                            % ', '.join(bad))
        return exit_status.FAILED
    return exit_status.OK


# -- repository scan ---------------------------------------------------------

def cmd_repository_scan(session, args):
    from cinder_chunked_ext import exception
    env, _driver = session.repository_driver()
    try:
        entries = env.scan(args.container or None)
    except exception.ObjectNotFound as e:
        raise exit_status.NotFoundError(exit_status.reason_of(e))
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
            item['id'], progress.human_time(item['created_at']),
            'incremental of %s' % item['parent_id'] if item['parent_id']
            else 'full', '' if item['in_catalog'] else '  (not in catalog)'))
        lines.append('      restore --from-repository %s TARGET'
                     % item['id'])
    session.out.result({'repository': session.repository_text(),
                        'backups': found}, lines)
    return exit_status.OK


# -- parser and main ---------------------------------------------------------
