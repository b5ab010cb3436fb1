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

"""``repository import``: the catalog rebuilt from what a repository holds.

Each complete backup found by ``repository scan`` (its ``_metadata`` is
readable) gives the fields the repository holds: id, volume id,
container, object prefix, parent id, creation time, name, description
and object count; the volume's size comes from the backup's chain (its
full backup's objects tile the volume).  A backup the catalog does not
know is recorded ``available``, parents before children.  A backup whose
object prefix is not its own (empty, or not ending with
``_backup_<its id>``: deleting it would delete other backups' objects) is
reported as refused and never recorded.

A backup the catalog knows is compared field by field with the
repository (and its status with ``available``).  A record that agrees is
left alone, so running the import twice changes nothing; one that
disagrees is reported with each differing field, and changed to what the
repository says only with ``--overwrite``.  Available records whose
backup the repository does not hold are reported, never removed.
"""

import datetime

from cinder_chunked_ext import cinder_compat
from cinder_chunked_ext.engine import prefixes
from cinder_chunked_ext import exception
from cinder_chunked_ext.tool import catalog as catalog_lib
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import recovery

#: Fields compared between a record and its backup in the repository.
COMPARED = ('volume_id', 'container', 'service_metadata', 'parent_id',
            'created_at', 'display_name', 'display_description',
            'object_count', 'status')


def parse_created_at(text):
    """The ``created_at`` of a ``_metadata`` document, as a UTC datetime.

    Upstream writes ``str()`` of the backup's datetime
    (``2026-11-29 02:03:04+00:00``); a time without a zone is UTC.
    """
    if not text:
        return None
    value = datetime.datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


def _volume_size(record, by_id):
    """Bytes of the volume ``record`` restores, or None if unknown."""
    chain = [record]
    while chain[-1].parent_id:
        parent = by_id.get(chain[-1].parent_id)
        if parent is None or parent in chain:
            return None
        chain.append(parent)
    try:
        return recovery.volume_size_bytes(chain)
    except cinder_compat.CinderException:
        return None


def repository_fields(record, by_id, driver_name):
    """The catalog fields of a backup found in the repository."""
    size_bytes = _volume_size(record, by_id)
    return {
        'id': record.id,
        'volume_id': record.volume_id,
        'container': record.container,
        'service_metadata': record.service_metadata,
        'parent_id': record.parent_id,
        'created_at': parse_created_at(record.created_at),
        'display_name': record.display_name,
        'display_description': record.display_description,
        'object_count': record.object_count,
        'status': catalog_lib.AVAILABLE,
        'size': (catalog_lib.size_gib(size_bytes) if size_bytes
                 else record.size or 1),
        'volume_size_bytes': size_bytes,
        'driver': driver_name,
    }


def differences(existing, fields):
    """``{field: {'catalog': x, 'repository': y}}`` where they differ."""
    found = {}
    for name in COMPARED:
        ours = getattr(existing, name)
        theirs = fields[name]
        if name == 'created_at' and ours is not None and \
                ours.tzinfo is None:
            ours = ours.replace(tzinfo=datetime.timezone.utc)
        if ours != theirs:
            found[name] = {'catalog': _plain(ours),
                           'repository': _plain(theirs)}
    return found


def _plain(value):
    return value.isoformat() if hasattr(value, 'isoformat') else value


def import_entries(cat, entries, driver_name, overwrite=False,
                   covered=lambda container: True):
    """Record the scanned backups; returns the report document.

    ``covered(container)`` tells whether the scan looked at a container:
    only available records there are reported missing from it.
    """
    report = {'added': [], 'unchanged': [], 'disagreements': [],
              'unreadable': [], 'refused': [], 'not_in_repository': []}
    readable = []
    for entry in entries:
        if entry.record is None:
            report['unreadable'].append({
                'container': entry.container, 'prefix': entry.prefix,
                'error': entry.error})
            continue
        problem = prefixes.problem(entry.record.id,
                                   entry.record.service_metadata)
        if problem is None:
            readable.append(entry)
        else:
            report['refused'].append({
                'container': entry.container, 'prefix': entry.prefix,
                'id': entry.record.id,
                'error': 'object prefix %r of backup %s: %s' % (
                    entry.prefix, entry.record.id, problem)})
    by_id = {e.record.id: e.record for e in readable}
    for record in _parents_first(list(by_id.values())):
        fields = repository_fields(record, by_id, driver_name)
        try:
            existing = cat.get(record.id)
        except exception.BackupNotFound:
            cat.add_record(**fields)
            report['added'].append(record.id)
            continue
        diff = differences(existing, fields)
        if not diff:
            report['unchanged'].append(record.id)
            continue
        if overwrite:
            for name in COMPARED:
                setattr(existing, name, fields[name])
            if existing.volume_size_bytes is None:
                existing.volume_size_bytes = fields['volume_size_bytes']
            existing.fail_reason = None
            existing.save()
        report['disagreements'].append({'id': record.id, 'fields': diff,
                                        'overwritten': overwrite})
    scanned = {(r.container, r.service_metadata) for r in by_id.values()}
    for existing in cat.list(status=catalog_lib.AVAILABLE):
        if existing.id not in by_id and covered(existing.container) and \
                (existing.container, existing.service_metadata) \
                not in scanned:
            report['not_in_repository'].append(existing.id)
    return report


def _parents_first(records):
    """Records ordered so that a parent always comes before its children."""
    by_id = {r.id: r for r in records}
    done = set()
    ordered = []

    def visit(record, path=()):
        if record.id in done or record.id in path:
            return
        parent = by_id.get(record.parent_id)
        if parent is not None:
            visit(parent, path + (record.id,))
        done.add(record.id)
        ordered.append(record)

    for record in sorted(records, key=lambda r: (
            parse_created_at(r.created_at) or datetime.datetime.min.replace(
                tzinfo=datetime.timezone.utc), r.id)):
        visit(record)
    return ordered


def add_parser(repo_cmds):
    imp = repo_cmds.add_parser(
        'import', help='record the repository\'s backups in the catalog',
        description='Rebuild or complete the catalog from the backups '
                    'repository scan finds (after the catalog was lost or '
                    'the repository copied). Records that agree are left '
                    'alone; records that disagree are reported.')
    imp.add_argument('--container', action='append',
                     help='import this container (default: the whole '
                          'POSIX repository, or the configured bucket)')
    imp.add_argument('--overwrite', action='store_true',
                     help='change records that disagree with the '
                          'repository to what the repository says')
    imp.set_defaults(func=cmd_repository_import)
    return imp


def cmd_repository_import(session, args):
    env, driver = session.repository_driver()
    try:
        entries = env.scan(args.container or None)
    except exception.ObjectNotFound as e:
        raise exit_status.NotFoundError(exit_status.reason_of(e))
    store = getattr(driver, 'store', None)
    walks_all = (not args.container and store is not None and
                 store.list_containers() is not None)
    scanned = set(args.container or
                  [getattr(driver, 'backup_default_container', None)])

    def covered(container):
        return walks_all or container in scanned

    cat = session.catalog(create=True)
    report = import_entries(cat, entries, session.driver_name,
                            overwrite=args.overwrite, covered=covered)
    report['repository'] = session.repository_text()
    report['catalog'] = cat.path
    lines = ['%s found in the %s repository: %d added to catalog %s, %d '
             'already recorded, %d disagreeing, %d unreadable%s.' % (
                 progress.plural(len(entries), 'backup'),
                 session.repository_text(), len(report['added']), cat.path,
                 len(report['unchanged']), len(report['disagreements']),
                 len(report['unreadable']),
                 ', %d refused' % len(report['refused'])
                 if report['refused'] else '')]
    lines.extend('  added      %s' % backup_id
                 for backup_id in report['added'])
    for item in report['disagreements']:
        lines.append('  %s %s: %s' % (
            'OVERWRITTEN' if item['overwritten'] else 'DISAGREES ',
            item['id'], '; '.join(
                '%s is %r in the catalog, %r in the repository'
                % (name, values['catalog'], values['repository'])
                for name, values in sorted(item['fields'].items()))))
    for item in report['unreadable']:
        lines.append('  UNREADABLE %s/%s: %s' % (
            item['container'], item['prefix'], item['error']))
    for item in report['refused']:
        lines.append('  REFUSED    %s/%s: %s' % (
            item['container'], item['prefix'], item['error']))
    for backup_id in report['not_in_repository']:
        lines.append('  MISSING    %s: available in the catalog, not found '
                     'in the repository' % backup_id)
    if report['disagreements'] and not args.overwrite:
        lines.append('Records that disagree were left as they are; '
                     '--overwrite changes them to what the repository '
                     'says.')
    session.out.result(report, lines)
    return exit_status.OK
