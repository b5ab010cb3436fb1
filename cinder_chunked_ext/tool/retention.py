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

"""Which backups of a volume a retention policy keeps: restic's rules.

The backups of one volume are taken newest first.  ``keep_last`` keeps
the N newest.  Each bucket (``hourly``, ``daily``, ``weekly``,
``monthly``, ``yearly``) has a count and a period: walking newest first,
a backup whose period (its hour, day, ISO week, month or year, in UTC)
differs from the last period that bucket kept is kept by the bucket,
until the bucket has kept its count.  So each bucket keeps the newest
backup of each of its N most recent periods that hold a backup, and a
backup may be kept by several buckets at once (all are reported).

A backup nobody keeps is deleted, except when a kept backup depends on
it: the parents of every kept incremental backup, up to its full
backup, are kept too, and so is any backup that another backup outside
the policy's reach (one being created, a failed one) names as parent.
Nothing here touches a repository or a catalog: :func:`plan` takes
records and returns decisions.
"""

import dataclasses
import typing

#: The buckets, in the order their reasons are reported.
BUCKETS = ('hourly', 'daily', 'weekly', 'monthly', 'yearly')


def period(bucket, when):
    """The period of ``when`` (a UTC datetime) for ``bucket``."""
    if bucket == 'hourly':
        return (when.year, when.month, when.day, when.hour)
    if bucket == 'daily':
        return (when.year, when.month, when.day)
    if bucket == 'weekly':
        year, week, _day = when.isocalendar()
        return (year, week)
    if bucket == 'monthly':
        return (when.year, when.month)
    if bucket == 'yearly':
        return (when.year,)
    raise ValueError('unknown retention bucket %r' % bucket)


@dataclasses.dataclass(frozen=True)
class Policy:
    """How many backups to keep, per volume; 0 means not used."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self):
        for name in ('last',) + BUCKETS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError('keep-%s must be a whole number, 0 or '
                                 'more; got %r' % (name, value))

    @property
    def empty(self):
        """True when the policy would keep nothing at all."""
        return not any(getattr(self, name) for name in ('last',) + BUCKETS)

    def to_json(self):
        return {name: getattr(self, name) for name in ('last',) + BUCKETS}


@dataclasses.dataclass
class Decision:
    """What happens to one backup, and why."""

    backup: typing.Any
    keep: bool = False
    #: Why it is kept: ``last``, a bucket name, ``parent of <id>``, ...
    reasons: typing.List[str] = dataclasses.field(default_factory=list)

    @property
    def id(self):
        return self.backup.id


def newest_first(backups):
    """``backups`` (given oldest first) sorted newest first.

    Backups made in the same second keep their given order, the later
    one counting as the newer.
    """
    ordered = sorted(enumerate(backups),
                     key=lambda item: (item[1].created_at, item[0]))
    return [backup for _index, backup in reversed(ordered)]


def apply_policy(backups, policy):
    """``{id: [reasons]}`` of the backups the policy's rules keep.

    ``backups`` are one volume's, oldest first.  Dependencies are not
    considered here (see :func:`plan`).
    """
    kept = {}
    counts = {name: getattr(policy, name) for name in BUCKETS}
    last_period = {name: None for name in BUCKETS}
    for number, backup in enumerate(newest_first(backups)):
        reasons = []
        if number < policy.last:
            reasons.append('last')
        for name in BUCKETS:
            if counts[name] <= 0:
                continue
            current = period(name, backup.created_at)
            if current != last_period[name]:
                last_period[name] = current
                counts[name] -= 1
                reasons.append(name)
        if reasons:
            kept[backup.id] = reasons
    return kept


def plan(backups, policy, pinned=()):
    """The :class:`Decision` of each backup of one volume, newest first.

    :param backups: the volume's backups the policy applies to (records
        with ``id``, ``parent_id`` and ``created_at``), oldest first.
    :param policy: a :class:`Policy`.
    :param pinned: ``(parent_id, reason)`` pairs: backups outside the
        policy that depend on a backup (an incremental being created, a
        failed one); that parent is kept with the reason given.
    """
    by_id = {b.id: b for b in backups}
    decisions = {b.id: Decision(backup=b) for b in backups}
    for backup_id, reasons in apply_policy(backups, policy).items():
        decisions[backup_id].keep = True
        decisions[backup_id].reasons.extend(reasons)
    for parent_id, reason in pinned:
        if parent_id in decisions:
            decisions[parent_id].keep = True
            decisions[parent_id].reasons.append(reason)
    # Walk every kept backup's chain up to its full backup.
    for decision in [d for d in decisions.values() if d.keep]:
        child = decision.backup
        seen = {child.id}
        while child.parent_id in by_id and child.parent_id not in seen:
            seen.add(child.parent_id)
            parent = decisions[child.parent_id]
            parent.keep = True
            reason = 'parent of %s' % child.id
            if reason not in parent.reasons:
                parent.reasons.append(reason)
            child = parent.backup
    return [decisions[b.id] for b in newest_first(backups)]
