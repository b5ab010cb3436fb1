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

"""The exit statuses of ``cinder-chunked-backup`` and what gives them.

A command raises a :class:`CliError` for a failure it expects (a usage
error, something not found); :func:`classify` gives the status and the
one-line message of the errors of the engine, oslo.config, the system
and the catalog.  Anything else is an unexpected error (status 1).
"""

import sqlite3

from oslo_config import cfg

OK = 0
FAILED = 1
USAGE = 2
NOT_FOUND = 3
INTERRUPTED = 130


class CliError(Exception):
    """An expected failure, reported as one line with an exit status."""

    exit_code = FAILED


class UsageError(CliError):
    exit_code = USAGE


class ArgumentError(UsageError):
    """The command line does not parse (raised by the parser)."""

    def __init__(self, parser, message):
        super().__init__(message)
        self.parser = parser

    def report(self, out):
        """Usage and the error on stderr; in JSON mode the error object."""
        import json
        self.parser.print_usage(out.stderr)
        out.stderr.write('%s: error: %s\n' % (self.parser.prog, self))
        out.stderr.flush()
        if out.json_mode:
            out.stdout.write(json.dumps({'error': str(self),
                                         'exit_code': self.exit_code}) + '\n')
            out.stdout.flush()


class NotFoundError(CliError):
    exit_code = NOT_FOUND


def classify(error):
    """``(exit status, message)`` of an expected error, else ``None``.

    It imports the engine's exceptions: an ``ImportError`` means that the
    engine itself cannot be imported.
    """
    from cinder_chunked_ext import cinder_compat
    from cinder_chunked_ext import exception
    if isinstance(error, exception.StoreConfigurationError):
        return USAGE, 'configuration: %s' % reason_of(error)
    if isinstance(error, exception.ObjectNotFound):
        return FAILED, 'not found in the repository: %s' % reason_of(error)
    if isinstance(error, exception.StoreError):
        return FAILED, 'repository: %s' % reason_of(error)
    if isinstance(error, exception.InvalidBackup):
        text = _damaged_text(error)
        if text:
            return FAILED, text
    if isinstance(error, cfg.ConfigFilesNotFoundError):
        return NOT_FOUND, str(error)
    if isinstance(error, cfg.Error):
        return USAGE, 'configuration: %s' % error
    if isinstance(error, (exception.ConfigNotFound,
                          exception.InvalidConfigurationValue,
                          exception.UnsafePath)):
        return USAGE, str(error)
    if isinstance(error, exception.BackupNotFound):
        return NOT_FOUND, str(error)
    if isinstance(error, cinder_compat.CinderException):
        return FAILED, str(error)
    if isinstance(error, OSError):
        text = error.strerror or str(error)
        if error.filename:
            text = '%s: %s' % (error.filename, text)
        return FAILED, text
    if isinstance(error, sqlite3.Error):
        return FAILED, 'catalog: %s' % error
    return None


def reason_of(error):
    """The engine's reason, without its exception class's wording."""
    kwargs = getattr(error, 'kwargs', None) or {}
    return str(kwargs.get('reason') or error)


#: The engine's words when a layer's objects differ from its metadata.
_OBJECT_LIST = 'restore_backup aborted, actual object list does not match'


def _damaged_text(error):
    """Operator wording for the engine's object-list refusal, or None."""
    reason = reason_of(error)
    if not reason.startswith(_OBJECT_LIST):
        return None
    detail = reason[reason.find('(') + 1:reason.rfind(')')] \
        if '(' in reason else ''
    backup_id = reason.split('metadata of backup ', 1)[-1].split(' ', 1)[0]
    return ('backup %s is damaged: the objects in the repository differ '
            'from those its metadata lists (%s), so it cannot be '
            'restored; verify %s tells more' % (backup_id, detail, backup_id))


def reported(out, document, lines, failure=None):
    """Print a command's result; a failure met on the way fails the run.

    ``failure`` (a message) is added to the JSON document and said on
    stderr after the result, which still lists what was done.
    """
    if failure is not None:
        document['error'] = failure
    out.result(document, lines)
    if failure is None:
        return OK
    out.problem('error', failure)
    return FAILED
