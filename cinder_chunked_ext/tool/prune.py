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

"""``backup prune``: apply a retention policy to the catalog's backups.

The policy (:mod:`cinder_chunked_ext.tool.retention`) is applied to each
volume's ``available`` backups.  Backups in other statuses are left
alone (``leave`` in the output), and an ``error`` or ``creating``
incremental keeps its parent: an ``error`` backup holds what a failed
backup or delete could not remove, and is kept until someone looks.
``--delete-errors`` deletes the ``error`` backups too (those no backup
left in the catalog depends on), so that they no longer keep their
parents.
The run is refused, before anything is deleted, when a backup of a
volume it would delete backups of is being created or restored (a
volume whose backups are all kept is not in the way).  A record left
``deleting`` by a delete that was stopped (killed) is deleted again: the
objects it still has and its record go.

Backups are deleted newest first, so an incremental backup always goes
before its parent, each one as ``backup delete`` does (its ``_metadata``
first).
"""

import argparse
import collections

from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import operations
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import retention

#: Statuses of a backup some process is working on right now.
BUSY = ('creating', 'restoring')


def add_parser(backup_cmds):
    prune = backup_cmds.add_parser(
        'prune', help='delete the backups a retention policy does not keep',
        description='Keep, for each volume, the backups the --keep-* '
                    'options select (restic\'s rules: newest first, one '
                    'backup per hour, day, ISO week, month or year, in '
                    'UTC) and delete the other available backups. A '
                    'backup a kept incremental backup depends on is '
                    'always kept. Backups in other statuses are left '
                    'alone: an error backup (a failed backup or delete) '
                    'is kept until someone looks, and keeps its parent; '
                    '--delete-errors deletes those too.')
    prune.add_argument('--keep-last', type=_count, default=0, metavar='N',
                       help='keep the N newest backups')
    for bucket, period in (('hourly', 'hour'), ('daily', 'day'),
                           ('weekly', 'ISO week'), ('monthly', 'month'),
                           ('yearly', 'year')):
        prune.add_argument('--keep-%s' % bucket, type=_count, default=0,
                           metavar='N',
                           help='keep the newest backup of each of the N '
                                'most recent %ss that have one' % period)
    prune.add_argument('--volume-id',
                       help='only this volume (default: every volume)')
    prune.add_argument('--delete-errors', action='store_true',
                       help='also delete the backups in status error (a '
                            'failed backup or delete); without it they '
                            'are left, and an error incremental keeps '
                            'its parent')
    prune.add_argument('--dry-run', action='store_true',
                       help='say what would be deleted; delete nothing')
    prune.set_defaults(func=cmd_backup_prune)
    return prune


def _count(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError('%r is not a count (0 or more)'
                                         % text)
    return value


def policy_from(args):
    return retention.Policy(last=args.keep_last, hourly=args.keep_hourly,
                            daily=args.keep_daily, weekly=args.keep_weekly,
                            monthly=args.keep_monthly,
                            yearly=args.keep_yearly)


def _entry(record, reasons=None):
    doc = {'id': record.id, 'created_at': record.created_at.isoformat(),
           'parent_id': record.parent_id, 'status': record.status}
    if reasons is not None:
        doc['reasons'] = reasons
    return doc


def plan_volumes(records, policy, delete_errors=False):
    """``{volume_id: {'keep', 'delete', 'resume', 'other'}}`` of records.

    ``keep`` holds ``(record, reasons)``; ``delete`` and ``resume``
    (records left ``deleting``, and with ``delete_errors`` those in
    ``error``) records to delete, newest first; ``other`` records prune
    leaves alone.
    """
    volumes = collections.OrderedDict()
    for record in records:
        volumes.setdefault(record.volume_id, []).append(record)
    plans = collections.OrderedDict()
    for volume_id, items in volumes.items():
        available = [r for r in items if r.status == 'available']
        gone = ('deleting', 'error') if delete_errors else ('deleting',)
        resume = [r for r in items if r.status in gone]
        other = [r for r in items if r.status != 'available' and
                 r.status not in gone]
        # An error backup something else still depends on stays.
        parents = {r.parent_id for r in items if r not in resume}
        other += [r for r in resume
                  if r.status == 'error' and r.id in parents]
        resume = [r for r in resume if r not in other]
        pinned = [(r.parent_id, 'parent of %s (%s)' % (r.id, r.status))
                  for r in other if r.parent_id]
        decisions = retention.plan(available, policy, pinned)
        plans[volume_id] = {
            'keep': [(d.backup, d.reasons) for d in decisions if d.keep],
            'delete': [d.backup for d in decisions if not d.keep],
            'resume': retention.newest_first(resume),
            'other': other,
        }
    return plans


def _refuse_busy(records, volume_ids):
    busy = [r for r in records
            if r.status in BUSY and r.volume_id in volume_ids]
    if busy:
        raise exit_status.UsageError(
            'a backup of a volume to prune is in progress (%s); nothing was '
            'deleted: prune again when it is done.  A backup whose process '
            'was killed stays creating: "repository check --delete" marks '
            'it error once its objects are older than the grace period, or '
            '"backup delete --force ID" removes it'
            % ', '.join('%s %s of volume %s' % (r.id, r.status, r.volume_id)
                        for r in busy))


def cmd_backup_prune(session, args):
    policy = policy_from(args)
    if policy.empty:
        raise exit_status.UsageError(
            'backup prune needs at least one --keep-* option with a count '
            'above 0 (it never deletes every backup of a volume)')
    from cinder_chunked_ext.tool import commands
    commands.known_volume(session, args.volume_id)
    cat = session.catalog()
    records = cat.list(volume_id=args.volume_id)
    plans = plan_volumes(records, policy, args.delete_errors)
    touched = {volume_id for volume_id, p in plans.items()
               if p['delete'] or p['resume']}
    _refuse_busy(records, touched)
    for volume_plan in plans.values():
        for record in volume_plan['delete'] + volume_plan['resume']:
            session.check_record_driver(record)

    deleted = []
    failure = None
    if not args.dry_run and touched:
        driver = session.driver(session.environment())
        failure = _delete_all(session, cat, driver, plans, deleted)

    doc = {'dry_run': args.dry_run, 'policy': policy.to_json(),
           'volumes': [], 'deleted': deleted}
    lines = ['Dry run: nothing is deleted.'] if args.dry_run else []
    for volume_id, p in plans.items():
        doc['volumes'].append({
            'volume_id': volume_id,
            'keep': [_entry(r, reasons) for r, reasons in p['keep']],
            'delete': [_entry(r) for r in p['delete']],
            'resume': [_entry(r) for r in p['resume']],
            'other': [_entry(r) for r in p['other']],
        })
        lines.append('Volume %s:' % volume_id)
        for record, reasons in p['keep']:
            lines.append('  keep    %s  %s  %s' % (
                record.id, progress.human_time(record.created_at),
                ', '.join(reasons)))
        for record in p['delete']:
            lines.append('  delete  %s  %s%s' % (
                record.id, progress.human_time(record.created_at),
                '' if args.dry_run or record.id in deleted
                else '  (not deleted)'))
        for record in p['resume']:
            lines.append('  delete  %s  %s  (%s)' % (
                record.id, progress.human_time(record.created_at),
                'left deleting by an interrupted delete'
                if record.status == 'deleting' else record.status))
        for record in p['other']:
            lines.append('  leave   %s  %s  (%s%s)' % (
                record.id, progress.human_time(record.created_at),
                record.status, '; --delete-errors deletes it'
                if record.status == 'error' and not args.delete_errors
                else ''))
    if not plans:
        lines.append('No backups in catalog %s.' % cat.path)
    planned = sum(len(p['delete']) + len(p['resume']) for p in plans.values())
    lines.append('%s %s.' % ('Would delete' if args.dry_run else 'Deleted',
                             progress.plural(planned if args.dry_run
                                             else len(deleted), 'backup')))
    return exit_status.reported(session.out, doc, lines, failure)


def _delete_all(session, cat, driver, plans, deleted):
    """Delete the planned backups; returns an error message or None."""
    for volume_plan in plans.values():
        keep_ids = {r.id for r, _reasons in volume_plan['keep']}
        for record in volume_plan['resume'] + volume_plan['delete']:
            record.refresh()
            if record.status not in ('available', 'deleting', 'error'):
                continue    # another process took it meanwhile
            # A backup created since the plan may depend on this one.
            late = [c.id for c in cat.children(record.id)
                    if c.id not in deleted and c.status != 'deleted']
            if late:
                volume_plan['keep'].append(
                    (record, ['parent of %s' % ', '.join(late)]))
                keep_ids.add(record.id)
                continue
            try:
                operations.delete_backup(session, driver, record)
            except Exception as e:  # noqa - reported, then the run stops
                return 'deleting backup %s failed: %s' % (
                    record.id, progress.one_line(e))
            deleted.append(record.id)
        volume_plan['delete'] = [r for r in volume_plan['delete']
                                 if r.id not in keep_ids]
    return None
