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

"""The retention policy against an independent reading of restic's rules.

:func:`oracle` states the rules the other way round from the code: each
bucket groups the backups by period, takes the newest backup of each
period, and keeps those of its N most recent periods.  Hypothesis draws
backup histories (times from seconds to months apart, full and
incremental backups) and policies; the tests compare the two and check
the properties a prune must have.
"""

import collections
import dataclasses
import datetime
import typing

import ddt
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import testtools

from cinder_chunked_ext.tool import retention

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass
class Backup:
    id: str
    parent_id: typing.Optional[str]
    created_at: datetime.datetime


def history_from(steps):
    """Backups, oldest first, from ``(seconds after previous, incr)``."""
    backups = []
    when = START
    for number, (gap, incremental) in enumerate(steps):
        when = when + datetime.timedelta(seconds=gap)
        parent = backups[-1].id if incremental and backups else None
        backups.append(Backup('b%03d' % number, parent, when))
    return backups


def oracle(backups, policy):
    """``{id: set(reasons)}`` kept by the rules, chains not included."""
    order = list(enumerate(backups))
    kept = collections.defaultdict(set)
    newest = sorted(order, key=lambda item: (item[1].created_at, item[0]),
                    reverse=True)
    for _index, backup in newest[:policy.last]:
        kept[backup.id].add('last')
    for bucket in retention.BUCKETS:
        count = getattr(policy, bucket)
        if not count:
            continue
        best = {}
        for index, backup in order:
            key = retention.period(bucket, backup.created_at)
            if key not in best or (backup.created_at, index) > \
                    (best[key][1].created_at, best[key][0]):
                best[key] = (index, backup)
        for key in sorted(best, reverse=True)[:count]:
            kept[best[key][1].id].add(bucket)
    return kept


def ancestors(backup, by_id):
    found = []
    while backup.parent_id in by_id:
        backup = by_id[backup.parent_id]
        found.append(backup.id)
    return found


GAPS = st.one_of(
    st.sampled_from([0, 1, 59, 60, 3599, 3600, 86399, 86400, 7 * 86400,
                     31 * 86400]),
    st.integers(min_value=0, max_value=40 * 86400))
HISTORIES = st.lists(st.tuples(GAPS, st.booleans()), min_size=1,
                     max_size=40).map(history_from)
COUNTS = st.integers(min_value=0, max_value=5)
POLICIES = st.builds(retention.Policy, last=COUNTS, hourly=COUNTS,
                     daily=COUNTS, weekly=COUNTS, monthly=COUNTS,
                     yearly=st.integers(min_value=0, max_value=2)).filter(
    lambda p: not p.empty)
SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[
                        HealthCheck.too_slow])


@ddt.ddt
class RetentionTestCase(testtools.TestCase):

    @SETTINGS
    @given(HISTORIES, POLICIES)
    def test_apply_policy_any_history_matches_oracle(self, backups, policy):
        kept = retention.apply_policy(backups, policy)
        expected = oracle(backups, policy)
        self.assertEqual({k: set(v) for k, v in expected.items()},
                         {k: set(v) for k, v in kept.items()})

    @SETTINGS
    @given(HISTORIES, POLICIES)
    def test_plan_any_history_chains_whole_counts_respected(self, backups,
                                                            policy):
        decisions = retention.plan(backups, policy)
        by_id = {b.id: b for b in backups}
        keep = {d.id for d in decisions if d.keep}
        # Every backup decided once, newest first.
        self.assertEqual(sorted(by_id), sorted(d.id for d in decisions))
        self.assertEqual(
            retention.newest_first(backups)[0].id, decisions[0].id)
        # The newest backup is always kept.
        self.assertIn(decisions[0].id, keep)
        for decision in decisions:
            self.assertEqual(decision.keep, bool(decision.reasons))
        # No kept backup loses a parent.
        for backup_id in keep:
            self.assertLessEqual(set(ancestors(by_id[backup_id], by_id)),
                                 keep)
        # Each bucket keeps at most its count, exactly when periods allow.
        for bucket in retention.BUCKETS:
            count = getattr(policy, bucket)
            by_bucket = [d for d in decisions if bucket in d.reasons]
            periods = {retention.period(bucket, b.created_at)
                       for b in backups}
            self.assertEqual(min(count, len(periods)), len(by_bucket))
            self.assertEqual(
                len(by_bucket),
                len({retention.period(bucket, d.backup.created_at)
                     for d in by_bucket}))
        self.assertEqual(min(policy.last, len(backups)),
                         sum('last' in d.reasons for d in decisions))
        # Only chains add to what the rules keep.
        ruled = set(oracle(backups, policy))
        for decision in decisions:
            if decision.keep and decision.id not in ruled:
                self.assertTrue(all(r.startswith('parent of ')
                                    for r in decision.reasons))

    def test_plan_pinned_parent_kept_with_reason(self):
        backups = history_from([(0, False), (3600, True), (3600, False)])
        decisions = {d.id: d for d in retention.plan(
            backups, retention.Policy(last=1),
            pinned=[('b001', 'parent of x (error)')])}
        self.assertEqual(['last'], decisions['b002'].reasons)
        self.assertEqual(['parent of x (error)'], decisions['b001'].reasons)
        self.assertEqual(['parent of b001'], decisions['b000'].reasons)
        self.assertTrue(all(d.keep for d in decisions.values()))

    def test_plan_daily_keeps_newest_of_each_day(self):
        backups = history_from([(0, False), (3600, True), (86400, False),
                                (60, True), (60, False)])
        decisions = {d.id: d for d in retention.plan(
            backups, retention.Policy(daily=2))}
        self.assertEqual(['daily'], decisions['b004'].reasons)
        self.assertEqual(['daily'], decisions['b001'].reasons)
        self.assertEqual(['parent of b001'], decisions['b000'].reasons)
        self.assertFalse(decisions['b002'].keep)
        self.assertFalse(decisions['b003'].keep)

    def test_plan_same_second_later_record_counts_newer(self):
        backups = history_from([(0, False), (0, False)])
        decisions = retention.plan(backups, retention.Policy(last=1))
        self.assertEqual(['b001', 'b000'], [d.id for d in decisions])
        self.assertEqual([True, False], [d.keep for d in decisions])

    def test_plan_parent_cycle_terminates(self):
        backups = [Backup('a', 'b', START),
                   Backup('b', 'a', START + datetime.timedelta(seconds=1))]
        decisions = retention.plan(backups, retention.Policy(last=1))
        self.assertTrue(all(d.keep for d in decisions))

    @ddt.data(-1, 1.5, '2')
    def test_policy_bad_count_refused(self, value):
        self.assertRaises(ValueError, retention.Policy, last=value)

    def test_policy_empty_when_all_zero(self):
        self.assertTrue(retention.Policy().empty)
        self.assertFalse(retention.Policy(weekly=1).empty)

    @ddt.unpack
    @ddt.data(('weekly', datetime.datetime(2026, 1, 1, tzinfo=UTC),
               (2026, 1)),
              ('weekly', datetime.datetime(2027, 1, 1, tzinfo=UTC),
               (2026, 53)),
              ('hourly', datetime.datetime(2026, 5, 6, 7, 59, tzinfo=UTC),
               (2026, 5, 6, 7)))
    def test_period_known_dates_iso_weeks(self, bucket, when, expected):
        self.assertEqual(expected, retention.period(bucket, when))
