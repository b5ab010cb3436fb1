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

"""``repository check``: what in a repository belongs to no complete backup.

Every object named like a backup's (``<prefix>-NNNNN``,
``<prefix>_sha256file``, ``<prefix>_metadata``, where the prefix ends in
``_backup_<id>``) is sorted into one of:

``incomplete``
    a prefix with objects but no ``_metadata``: a backup that stopped
    before it finished (killed, crashed), or one running right now;
``unlisted``
    a data object of a complete backup that its ``_metadata`` does not
    list;
``temporary``
    what an unfinished write left (a POSIX ``.tmp-*`` file, an S3
    multipart upload never completed);
``empty``
    a directory of a POSIX repository that holds no file: what a backup
    deleted by an earlier version left (``xx/yy/<id>``);
``missing``, ``unreadable``
    a complete backup with a listed object missing, or whose
    ``_metadata`` cannot be read: damaged backups, reported only
    (``verify`` tells more; ``backup delete`` removes them).

Objects named otherwise are not ours and are never touched.

The check fails (status 1) when it finds a damaged backup: ``missing``,
``unreadable``, or ``incomplete`` while the catalog says ``available``.
Leftovers alone (the other kinds) are listed and the status is 0.

``--delete`` removes incomplete backups, unlisted objects, temporary
files and empty directories older than the grace period, never the
reported-only kinds.  An
incomplete backup's age is that of its newest object or temporary file,
so a backup still writing is never harmed, however long ago it started;
and its ``_metadata`` is looked for once more just before it goes.  An
incomplete backup that the catalog records as ``available`` is damaged,
not unfinished: it is reported, not deleted.  When a deleted incomplete
backup's record says ``creating``, the record is marked ``error``.
"""

import argparse
import collections
import dataclasses
import re
import time
import typing

from cinder_chunked_ext import exception
from cinder_chunked_ext.store import base as store_base
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import repository

OBJECT_NAME = re.compile(
    r'^(?P<prefix>.*_backup_(?P<id>[^/]+?))'
    r'(?P<kind>_metadata|_sha256file|-\d{5,})$')
METADATA = '_metadata'
DELETABLE = ('incomplete', 'unlisted', 'temporary', 'empty')
DEFAULT_GRACE = '1h'


def parse_duration(text):
    """Seconds from ``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1w``."""
    units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}
    value = text.strip().lower()
    factor = 1
    if value and value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        seconds = float(value) * factor
    except ValueError:
        seconds = -1
    if seconds < 0 or seconds != seconds:
        raise argparse.ArgumentTypeError(
            '%r is not a duration (for example 90s, 30m, 1h, 2d)' % text)
    return seconds


@dataclasses.dataclass
class Finding:
    """One thing that does not belong to a complete backup."""

    kind: str
    container: str
    prefix: typing.Optional[str]
    backup_id: typing.Optional[str]
    objects: typing.List[typing.Any]        # store ObjectInfo
    temporary: typing.List[typing.Any] = dataclasses.field(
        default_factory=list)
    detail: str = ''
    catalog_status: typing.Optional[str] = None
    action: str = 'listed'
    #: Of an empty directory: its last change (seconds since the epoch).
    modified: typing.Optional[float] = None

    @property
    def damaged(self):
        """A backup that cannot be restored, not a leftover."""
        return self.kind in ('missing', 'unreadable') or (
            self.kind == 'incomplete' and self.catalog_status == 'available')

    def age(self, now):
        """Seconds since the newest write, or None when unknown."""
        if self.kind == 'empty':
            return None if self.modified is None else max(
                0.0, now - self.modified)
        times = [i.modified for i in self.objects + self.temporary]
        if not times or any(t is None for t in times):
            return None
        return max(0.0, now - max(times))

    def size(self):
        return sum(i.size or 0 for i in self.objects + self.temporary)

    def to_json(self, now):
        age = self.age(now)
        return {
            'kind': self.kind, 'container': self.container,
            'prefix': self.prefix, 'backup_id': self.backup_id,
            'objects': [i.name for i in self.objects],
            'temporary': [i.handle or i.name for i in self.temporary],
            'bytes': self.size(),
            'age_seconds': None if age is None else round(age, 1),
            'catalog_status': self.catalog_status,
            'detail': self.detail, 'action': self.action,
        }


def containers_of(store, driver, requested):
    if requested:
        return list(requested)
    listed = store.list_containers()
    if listed is not None:
        return listed
    default = getattr(driver, 'backup_default_container', None)
    return [default] if default else []


def examine(store, container, load_metadata):
    """The :class:`Finding` list of one container."""
    objects = store.list_object_info(container, '')
    unfinished = store.list_unfinished(container)
    groups = collections.OrderedDict()
    for info in objects:
        match = OBJECT_NAME.match(info.name)
        if match:
            groups.setdefault(match.group('prefix'), []).append(info)
    temps = collections.defaultdict(list)
    loose_temps = []
    for info in unfinished:
        match = OBJECT_NAME.match(info.name)
        if match:
            temps[match.group('prefix')].append(info)
        else:
            loose_temps.append(info)
    findings = []
    for prefix in sorted(set(groups) | set(temps)):
        members = groups.get(prefix, [])
        backup_id = OBJECT_NAME.match(prefix + METADATA).group('id')
        names = {i.name for i in members}
        if prefix + METADATA not in names:
            findings.append(Finding(
                kind='incomplete', container=container, prefix=prefix,
                backup_id=backup_id, objects=members,
                temporary=temps.get(prefix, []),
                detail='no %s: the backup did not finish' % METADATA))
            continue
        try:
            listed = {o.name for o in load_metadata(container, prefix)}
        except exception.CinderException as e:
            findings.append(Finding(
                kind='unreadable', container=container, prefix=prefix,
                backup_id=backup_id, objects=[],
                detail='%s cannot be read: %s'
                       % (METADATA, progress.one_line(e))))
            continue
        extra = [i for i in members
                 if i.name not in listed and
                 not i.name.endswith(('_metadata', '_sha256file'))]
        if extra:
            findings.append(Finding(
                kind='unlisted', container=container, prefix=prefix,
                backup_id=backup_id, objects=extra,
                detail='objects its %s does not list' % METADATA))
        if temps.get(prefix):
            findings.append(Finding(
                kind='temporary', container=container, prefix=prefix,
                backup_id=backup_id, objects=[], temporary=temps[prefix],
                detail='unfinished writes of a complete backup'))
        missing = sorted(listed - names)
        if missing:
            findings.append(Finding(
                kind='missing', container=container, prefix=prefix,
                backup_id=backup_id,
                objects=[store_base.ObjectInfo(name=n) for n in missing],
                detail='%s listed but missing (%s)' % (
                    progress.plural(len(missing), 'object'),
                    ', '.join(n[len(prefix):] if n.startswith(prefix)
                              else n for n in missing))))
    for info in loose_temps:
        findings.append(Finding(
            kind='temporary', container=container, prefix=None,
            backup_id=None, objects=[], temporary=[info],
            detail='an unfinished write'))
    return findings


def examine_directories(store):
    """``empty`` findings of a POSIX store; none for another store."""
    from cinder_chunked_ext.store import posix
    if not isinstance(store, posix.PosixStore):
        return []
    return [Finding(kind='empty', container=container, prefix=None,
                    backup_id=None, objects=[], modified=mtime,
                    detail='an empty directory a deleted backup left')
            for container, mtime in repository.empty_directories(store)]


def _delete(store, catalog, finding):
    if finding.kind == 'empty':
        repository.remove_empty_tree(store, finding.container)
        return 'deleted'
    if finding.kind == 'incomplete':
        # Finished meanwhile?  Then it is a backup, not a leftover.
        try:
            store.object_size(finding.container, finding.prefix + METADATA)
        except exception.ObjectNotFound:
            pass
        else:
            return 'kept: it finished meanwhile'
    if finding.catalog_status == 'creating':
        # Recorded first: a check stopped half-way leaves an error record
        # beside the objects the next check removes, never a creating one.
        record = catalog.get(finding.backup_id)
        record.status = 'error'
        record.fail_reason = ('it never finished; its objects were removed '
                              'by repository check')
        record.save()
    for info in finding.temporary:
        store.delete_unfinished(finding.container, info)
    for info in finding.objects:
        store.delete_object(finding.container, info.name)
    if repository.posix_store(store=store) is not None:
        repository.remove_empty_dirs(store, finding.container)
    return 'deleted'


def _catalog_status(catalog, backup_id):
    if not backup_id or not catalog.exists:
        return None
    try:
        return catalog.get(backup_id).status
    except exception.BackupNotFound:
        return None


def _age_text(seconds):
    for unit, size in (('d', 86400), ('h', 3600), ('min', 60)):
        if seconds >= size:
            return '%d %s' % (seconds // size, unit)
    return '%d s' % seconds


def _finding_lines(finding, now):
    """Two lines: what was found and done, then where."""
    facts = [finding.detail]
    count = len(finding.objects) + len(finding.temporary)
    if count and finding.kind != 'missing':
        facts.append(progress.plural(count, 'object'))
    age = finding.age(now)
    if count and age is not None:
        facts.append('newest written %s ago' % _age_text(age))
    if finding.catalog_status:
        facts.append('catalog: %s' % finding.catalog_status)
    head = ('backup %s' % finding.backup_id if finding.backup_id
            else 'a directory' if finding.kind == 'empty'
            else 'a temporary file')
    return ['  %-10s %s: %s; %s' % (finding.kind.upper(), head,
                                    ', '.join(facts), finding.action),
            '             in %s: %s' % (
                finding.container,
                finding.prefix or ', '.join(i.handle or i.name
                                            for i in finding.temporary) or
                '(the directory itself)')]


def add_parser(repo_cmds):
    check = repo_cmds.add_parser(
        'check', help='find what belongs to no complete backup',
        description='List objects of backups that did not finish, '
                    'temporary files of unfinished writes, objects no '
                    'metadata lists, and damaged backups. With --delete, '
                    'remove the first three when older than --grace.')
    check.add_argument('--container', action='append',
                       help='check this container (default: the whole '
                            'POSIX repository, or the configured bucket)')
    check.add_argument('--delete', action='store_true',
                       help='remove what is listed and older than the '
                            'grace period (damaged backups are only '
                            'reported)')
    check.add_argument('--grace', type=parse_duration,
                       default=parse_duration(DEFAULT_GRACE),
                       metavar='DURATION',
                       help='leave alone anything written more recently '
                            'than this, so a running backup is never '
                            'harmed (default: %s; units s, m, h, d, w)'
                            % DEFAULT_GRACE)
    check.set_defaults(func=cmd_repository_check)
    return check


def cmd_repository_check(session, args):
    env, driver = session.repository_driver()
    store = getattr(driver, 'store', None)
    if store is None:
        raise exit_status.UsageError('driver %s has no object store to '
                                     'check' % session.driver_name)
    catalog = session.catalog()

    def load_metadata(container, prefix):
        return env.load(container, prefix).metadata.objects

    try:
        containers = containers_of(store, driver, args.container)
        findings = []
        for container in containers:
            findings.extend(examine(store, container, load_metadata))
        if not args.container:
            findings.extend(examine_directories(store))
    except exception.ObjectNotFound as e:
        raise exit_status.NotFoundError(exit_status.reason_of(e))
    now = time.time()
    failure = None
    for finding in findings:
        finding.catalog_status = _catalog_status(catalog, finding.backup_id)
        age = finding.age(now)
        if finding.kind not in DELETABLE:
            finding.action = 'reported only: a damaged backup'
        elif finding.damaged:
            finding.action = ('reported only: the catalog says available; '
                              'a damaged backup')
        elif not args.delete:
            finding.action = 'listed'
        elif age is None:
            finding.action = 'kept: the store does not tell its age'
        elif age < args.grace:
            finding.action = 'kept: younger than the grace period'
        elif failure is None:
            try:
                finding.action = _delete(store, catalog, finding)
            except Exception as e:  # noqa - reported, then the rest kept
                failure = 'deleting %s in %s failed: %s' % (
                    finding.prefix or 'a temporary file', finding.container,
                    progress.one_line(e))
                finding.action = 'failed'
        else:
            finding.action = 'kept: an earlier delete failed'

    doc = {'repository': session.repository_text(),
           'containers': len(containers), 'delete': args.delete,
           'grace_seconds': args.grace,
           'findings': [f.to_json(now) for f in findings]}
    lines = ['%s in %s of the %s repository.' % (
        progress.plural(len(findings), 'finding'),
        progress.plural(len(containers), 'container'),
        session.repository_text())]
    for finding in findings:
        lines.extend(_finding_lines(finding, now))
    damaged = sorted({f.backup_id for f in findings if f.damaged})
    if damaged and failure is None:
        failure = ('the repository holds damaged backups (%s): verify '
                   'tells more' % ', '.join(damaged))
    return exit_status.reported(session.out, doc, lines, failure)
