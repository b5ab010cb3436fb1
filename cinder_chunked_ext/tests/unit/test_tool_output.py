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

"""What ``cinder-chunked-backup`` says: parser, messages, times, progress."""

import argparse
import contextlib
import datetime
import io
import logging

import testtools

from cinder_chunked_ext import exception
from cinder_chunked_ext.tool import cli
from cinder_chunked_ext.tool import exit_status
from cinder_chunked_ext.tool import progress
from cinder_chunked_ext.tool import session


def _subparsers(parser):
    """``(name, parser)`` of ``parser`` and every parser below it."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _subparsers(child)


class TestParser(testtools.TestCase):

    def test_parser_every_argument_has_help(self):
        for prog, parser in _subparsers(cli.build_parser()):
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction) or \
                        action.help == argparse.SUPPRESS:
                    continue
                self.assertTrue(action.help, '%s %s has no help'
                                % (prog, action.option_strings or
                                   action.dest))

    def test_parser_command_help_backup_prune_repository_catalog(self):
        helps = {}
        for action in cli.build_parser()._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
        self.assertIn('prune', helps['backup'])
        self.assertNotIn('no catalog', helps['repository'])

    def test_parser_version_prints_version_exits_0(self):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            error = self.assertRaises(SystemExit, cli.build_parser()
                                      .parse_args, ['--version'])
        self.assertEqual(0, error.code)
        self.assertTrue(stdout.getvalue().startswith(session.PROG + ' '))

    def test_parser_repository_help_gives_default_and_variable(self):
        text = cli.build_parser().format_help()
        self.assertIn(session.REPOSITORY_ENV, text)
        self.assertIn(session.CATALOG_ENV, text)
        self.assertIn('repository for posix', ' '.join(text.split()))


class TestMessages(testtools.TestCase):

    def test_classify_store_configuration_error_operator_wording(self):
        code, text = exit_status.classify(exception.StoreConfigurationError(
            reason='backup_posix_path /x is not a directory'))
        self.assertEqual(exit_status.USAGE, code)
        self.assertEqual('configuration: backup_posix_path /x is not a '
                         'directory', text)

    def test_classify_object_list_refusal_operator_wording(self):
        error = exception.InvalidBackup(
            reason='restore_backup aborted, actual object list does not '
                   'match object list stored in metadata of backup abc '
                   '(missing: p-00002; unexpected: none).')
        code, text = exit_status.classify(error)
        self.assertEqual(exit_status.FAILED, code)
        self.assertIn('backup abc is damaged', text)
        self.assertIn('missing: p-00002', text)
        self.assertNotIn('restore_backup', text)

    def test_classify_object_not_found_no_class_wording(self):
        _code, text = exit_status.classify(exception.ObjectNotFound(
            reason='bucket b does not exist'))
        self.assertNotIn('Backup object not found', text)
        self.assertIn('bucket b does not exist', text)


class TestTimes(testtools.TestCase):

    def test_human_time_aware_naive_text_utc(self):
        aware = datetime.datetime(2026, 1, 2, 4, 4, 5, tzinfo=(
            datetime.timezone(datetime.timedelta(hours=1))))
        self.assertEqual('2026-01-02 03:04:05 UTC',
                         progress.human_time(aware))
        self.assertEqual('2026-01-02 03:04:05 UTC', progress.human_time(
            datetime.datetime(2026, 1, 2, 3, 4, 5)))
        self.assertEqual('2026-01-02 03:04:05 UTC', progress.human_time(
            '2026-01-02T03:04:05+00:00'))
        self.assertEqual('-', progress.human_time(None))


class TestCatalogPath(testtools.TestCase):

    def test_default_catalog_two_buckets_two_files(self):
        first = session.default_catalog('s3', 'bucket-a', 'http://s3')
        second = session.default_catalog('s3', 'bucket-b', 'http://s3')
        self.assertNotEqual(first, second)
        self.assertIn('bucket-a', first)

    def test_default_catalog_same_bucket_two_endpoints_two_files(self):
        self.assertNotEqual(
            session.default_catalog('s3', 'b', 'http://one'),
            session.default_catalog('s3', 'b', 'http://two'))

    def test_default_catalog_unsafe_name_stays_in_directory(self):
        path = session.default_catalog('nfs', 'host:/../../etc', '')
        self.assertEqual(session.CATALOGS_DIR,
                         path.split('/')[-2])


class FakeClock(object):

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class TestProgressLog(testtools.TestCase):

    def test_progress_not_a_terminal_logs_at_interval(self):
        clock = FakeClock()
        bar = progress.ProgressBar('backup 0123abcd', 1000, enabled=False,
                                   clock=clock)
        with self.assertLogs('cinder_chunked_ext.tool.progress',
                             logging.INFO) as logs:
            for step in range(1, 31):
                clock.now += 1
                bar.update(step * 10)
            clock.now += 5
            bar.close()
        self.assertEqual(4, len(logs.output), logs.output)
        self.assertIn('backup 0123abcd', logs.output[0])
        self.assertIn('10%', logs.output[0])
        self.assertIn('30%', logs.output[2])

    def test_progress_short_job_not_a_terminal_logs_nothing(self):
        clock = FakeClock()
        bar = progress.ProgressBar('verify 0123abcd', 10, enabled=False,
                                   clock=clock)
        logger = logging.getLogger('cinder_chunked_ext.tool.progress')
        with self.assertRaises(AssertionError):
            with self.assertLogs(logger, logging.INFO):
                bar.update(5)
                clock.now += 1
                bar.close()
